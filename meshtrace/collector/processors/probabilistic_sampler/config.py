"""The probabilistic_sampler's config, with the Collector's defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from meshtrace.collector.processors.probabilistic_sampler.sampling import NUM_HEX_DIGITS


@dataclass
class ProbabilisticSamplerConfig:
    sampling_percentage: float = 0.0
    hash_seed: int = 0
    # "" = the Collector's default: proportional, or hash_seed when a non-zero hash_seed is set.
    mode: Literal["", "proportional", "equalizing", "hash_seed"] = ""
    sampling_precision: int = 4
    fail_closed: bool = True
    attribute_source: Literal["traceID", "record"] = "traceID"
    from_attribute: str = ""
    sampling_priority: str = ""

    def __post_init__(self) -> None:
        if self.sampling_percentage < 0:
            raise ValueError(f"sampling_percentage must not be negative, got {self.sampling_percentage}")
        if not 0 <= self.hash_seed <= 0xFFFFFFFF:
            raise ValueError("hash_seed must be a uint32")
        if not 1 <= self.sampling_precision <= NUM_HEX_DIGITS:
            raise ValueError(f"sampling_precision must be 1-{NUM_HEX_DIGITS}, got {self.sampling_precision}")

    @property
    def effective_mode(self) -> str:
        if self.mode:
            return self.mode
        return "hash_seed" if self.hash_seed else "proportional"
