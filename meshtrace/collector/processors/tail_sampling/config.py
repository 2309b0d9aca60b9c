"""The tail_sampling processor's config, with the Collector's defaults. The policies are checked
here (each problem with its key path) so `meshtrace collector validate` reports them."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from meshtrace.collector.processors.tail_sampling.policies import build_policy
from meshtrace.collector.schema import Duration

DECISION_WAIT = Duration(30)


@dataclass
class TailSamplingConfig:
    decision_wait: Duration = DECISION_WAIT
    num_traces: int = 50000
    expected_new_traces_per_sec: int = 0
    # Policy mappings `{name, type, <type>: {...}}`; `and` is a Python keyword, so policies are
    # checked by `build_policy` rather than declared as dataclass fields.
    policies: list[Any] = field(default_factory=list)
    decision_cache: dict[str, int] = field(default_factory=dict)
    # Stop at the first policy that answers SAMPLED (a `drop` policy is still evaluated first).
    sample_on_first_match: bool = False

    def __post_init__(self) -> None:
        if self.decision_wait <= 0:
            raise ValueError("decision_wait must be greater than zero")
        if self.num_traces <= 0:
            raise ValueError("num_traces must be greater than zero")
        if not self.policies:
            raise ValueError("policies: at least one policy is required")
        names: set[str] = set()
        for i, raw in enumerate(self.policies):
            policy = build_policy(raw, f"policies[{i}]", time.time)
            if policy.name in names:
                raise ValueError(f"policies[{i}].name: duplicate policy name {policy.name!r}")
            names.add(policy.name)
