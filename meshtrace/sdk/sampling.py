"""The seed's ErrorBasedSampler (最佳实践, 采样策略), on opentelemetry-python's Sampler interface.

Its limit: a sampler runs when a span STARTS, so it sees only the attributes given to
`start_span`. An error is rarely known then (the database has not failed yet), so this sampler
only catches spans whose caller already knows they describe an error (e.g. a span opened in an
exception handler with `attributes={"error": True}`). Keeping every trace that ended in an error
needs the decision after the trace is complete: the collector's `tail_sampling` processor with a
`status_code: {status_codes: [ERROR]}` policy.
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

ERROR_ATTRIBUTE = "error"


class ErrorBasedSampler(Sampler):
    """Sample with `error_sampler` (always, by default) when the span starts with the attribute
    `error` set to the boolean true; otherwise ask `default_sampler`."""

    def __init__(self, default_sampler: Sampler, error_sampler: Sampler = ALWAYS_ON) -> None:
        self.default_sampler = default_sampler
        self.error_sampler = error_sampler

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        # Only a real boolean, like Go's attr.Value.AsBool(): the string "true" is not an error flag.
        chosen = (
            self.error_sampler
            if attributes and attributes.get(ERROR_ATTRIBUTE) is True
            else self.default_sampler
        )
        return chosen.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return (
            f"ErrorBasedSampler{{default={self.default_sampler.get_description()},"
            f"error={self.error_sampler.get_description()}}}"
        )
