"""W3C Trace Context for apps, read by the same rules as the sidecar (`meshtrace.propagation.w3c`).

opentelemetry-python's propagator checks tracestate keys by the Level 1 grammar (`tenant@system`
with per-part limits) and drops the whole header for a repeated key, so an app on it loses
tracestate the sidecars forward (`foo@`, `t@` + 15 characters, `foo=1,foo=1`: the W3C validation
suite's Level 2 cases). This propagator parses both headers with meshtrace's W3C parsers and
carries the members in a `TraceState` that keeps them; writing is opentelemetry-python's.
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators import textmap
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.trace.span import TraceState

from meshtrace.propagation.w3c import (
    MAX_TRACESTATE_MEMBERS,
    parse_traceparent,
    parse_tracestate,
    tracestate_member_ok,
)


class W3CTraceState(TraceState):
    """A TraceState whose members follow meshtrace's tracestate grammar; changes return the same
    type, so a sampler's `add`/`update` does not drop members opentelemetry-python would reject."""

    def __init__(self, entries: Sequence[tuple[str, str]] | None = None) -> None:
        super().__init__()
        members = list(entries or ())
        if len(members) <= MAX_TRACESTATE_MEMBERS and all(tracestate_member_ok(k, v) for k, v in members):
            for key, value in members:
                self._dict.setdefault(key, value)

    @classmethod
    def from_header(cls, header_list: list[str]) -> W3CTraceState:
        # several tracestate fields are one list joined with "," (RFC 9110 field order)
        return cls(parse_tracestate(",".join(header_list)) or [])

    def add(self, key: str, value: str) -> W3CTraceState:
        if key in self._dict or len(self._dict) >= MAX_TRACESTATE_MEMBERS:
            return self
        return self._with([(key, value)], key)

    def update(self, key: str, value: str) -> W3CTraceState:
        if key not in self._dict:
            return self
        return self._with([(key, value)], key)

    def delete(self, key: str) -> W3CTraceState:
        if key not in self._dict:
            return self
        return self._with([], key)

    def _with(self, first: list[tuple[str, str]], key: str) -> W3CTraceState:
        """`first` (unchanged when invalid) then the other members: the spec puts a changed key
        on the left."""
        if first and not tracestate_member_ok(*first[0]):
            return self
        return W3CTraceState(first + [(k, v) for k, v in self._dict.items() if k != key])


class W3CTraceContextPropagator(TraceContextTextMapPropagator):
    """`traceparent`/`tracestate` by meshtrace's parsers; injection as opentelemetry-python's."""

    def extract(
        self,
        carrier: textmap.CarrierT,
        context: Context | None = None,
        getter: textmap.Getter[textmap.CarrierT] = textmap.default_getter,
    ) -> Context:
        if context is None:
            context = Context()
        header = getter.get(carrier, self._TRACEPARENT_HEADER_NAME)
        parent = parse_traceparent(header[0]) if header else None
        if parent is None:
            return context  # absent or invalid: ignored, and its tracestate with it
        state = W3CTraceState.from_header(list(getter.get(carrier, self._TRACESTATE_HEADER_NAME) or ()))
        span_context = trace.SpanContext(
            trace_id=int.from_bytes(parent.trace_id),
            span_id=int.from_bytes(parent.parent_id),
            is_remote=True,
            trace_flags=trace.TraceFlags(parent.flags),
            trace_state=state,
        )
        return trace.set_span_in_context(trace.NonRecordingSpan(span_context), context)
