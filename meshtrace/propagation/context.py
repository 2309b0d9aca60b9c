"""Extract and inject trace context across formats, and the sidecar's sampling decision, sans-IO.

`decide` is Envoy's order (conn_manager_utility.cc mutateTracingRequestHeader + the tracer's use
of an incoming context), as docs/upstream-behaviour.md §2 lays out. Header names are lowercase.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from meshtrace.propagation.b3 import B3Context, b3_multi_headers, parse_b3
from meshtrace.propagation.request_id import (
    TraceReason,
    new_request_id,
    request_id_integer,
    sampled_by_value,
    trace_reason,
    with_trace_reason,
)
from meshtrace.propagation.w3c import (
    format_traceparent,
    format_tracestate,
    parse_traceparent,
    parse_tracestate,
)

Format = Literal["w3c", "b3"]


@dataclass(frozen=True, slots=True)
class SpanContext:
    """The caller's context. Ids are None for a B3 sampling-only header: keep the decision, start
    a new trace."""

    trace_id: bytes | None
    span_id: bytes | None
    sampled: bool | None  # None: the caller deferred the decision to us
    tracestate: list[tuple[str, str]] = field(default_factory=list)
    source: Format = "w3c"


def _from_w3c(headers: Mapping[str, str]) -> SpanContext | None:
    value = headers.get("traceparent")
    parent = None if value is None else parse_traceparent(value)
    if parent is None:
        return None  # an invalid traceparent is ignored as if absent, and its tracestate with it
    # An invalid tracestate is dropped alone; the traceparent still holds.
    state = parse_tracestate(headers.get("tracestate", "")) or []
    return SpanContext(parent.trace_id, parent.parent_id, parent.sampled, state, "w3c")


def _from_b3(headers: Mapping[str, str]) -> SpanContext | None:
    ctx = parse_b3(headers)
    if ctx is None:
        return None
    return SpanContext(ctx.trace_id, ctx.span_id, ctx.sampled, [], "b3")


_READERS: dict[str, Callable[[Mapping[str, str]], SpanContext | None]] = {"w3c": _from_w3c, "b3": _from_b3}


def extract(headers: Mapping[str, str], read: Iterable[Format] = ("w3c", "b3")) -> SpanContext | None:
    """The first context found, trying formats in `read` order: ("w3c",) for the OpenTelemetry
    provider, ("b3",) for Zipkin, ("b3", "w3c") for USE_B3_WITH_W3C_PROPAGATION."""
    for fmt in read:
        ctx = _READERS[fmt](headers)
        if ctx is not None:
            return ctx
    return None


def inject(
    trace_id: bytes,
    span_id: bytes,
    parent_span_id: bytes | None,
    sampled: bool,
    tracestate: list[tuple[str, str]] | None = None,
    write: Iterable[Format] = ("w3c", "b3"),
) -> dict[str, str]:
    """The headers to send upstream for the span `span_id` in the formats of `write`."""
    out: dict[str, str] = {}
    for fmt in write:
        if fmt == "w3c":
            out["traceparent"] = format_traceparent(trace_id, span_id, sampled)
            if tracestate:  # a proxy starting a new span keeps the caller's tracestate
                out["tracestate"] = format_tracestate(tracestate)
        else:
            out.update(b3_multi_headers(B3Context(trace_id, span_id, parent_span_id, sampled)))
    return out


@dataclass(frozen=True, slots=True)
class Decision:
    sampled: bool
    # Why: "traceparent" / "b3" (incoming decision honoured), "request_id" (reason already in
    # x-request-id), "client_forced", "forced", "random", "not_sampled", "invalid_request_id"
    # (a request id that is not a UUID or whose head is not hex: never traced by it), or
    # "request_id_not_used" (useRequestIdForTraceSampling: false).
    reason: str
    request_id: str  # the x-request-id to forward, carrying the decision when it is a UUID
    context: SpanContext | None  # the incoming context, to parent the span on


_REASON_NAMES = {
    TraceReason.SAMPLED: "random",
    TraceReason.FORCED: "forced",
    TraceReason.CLIENT_FORCED: "client_forced",
    TraceReason.NOT_TRACEABLE: "not_sampled",
}


def _request_id_decision(
    headers: Mapping[str, str], rid: str, percentage: float, edge: bool
) -> tuple[TraceReason, str, bool]:
    """(reason, why, write it into the request id), conn_manager_utility.cc's order."""
    value, current = request_id_integer(rid), trace_reason(rid)
    # A corrupted id (head not hex) is skipped entirely, not even forced. One that is no UUID
    # cannot hold the decision, and docs/upstream-behaviour.md §2 treats it as never traced (Envoy
    # releases that read the decision back from the header; the request ids nginx or gateways
    # mint fall here).
    if value is None or current is None:
        return TraceReason.NOT_TRACEABLE, "invalid_request_id", False
    if current is not TraceReason.NOT_TRACEABLE:
        return current, "request_id", False  # the first proxy on the path decided; later hops follow
    if "x-client-trace-id" in headers:
        return TraceReason.CLIENT_FORCED, _REASON_NAMES[TraceReason.CLIENT_FORCED], True
    # x-envoy-* headers from outside the mesh are not trusted (Envoy strips them at the edge).
    if "x-envoy-force-trace" in headers and not edge:
        return TraceReason.FORCED, _REASON_NAMES[TraceReason.FORCED], True
    if sampled_by_value(value, percentage):
        return TraceReason.SAMPLED, _REASON_NAMES[TraceReason.SAMPLED], True
    # Not sampled: the id is left as it came (Envoy writes a reason only when it picks one).
    return TraceReason.NOT_TRACEABLE, _REASON_NAMES[TraceReason.NOT_TRACEABLE], False


def decide(
    headers: Mapping[str, str],
    percentage: float,
    use_request_id: bool = True,
    read: Iterable[Format] = ("w3c", "b3"),
    edge: bool = False,
) -> Decision:
    """Whether this request is traced, Envoy's way.

    - x-request-id is generated when absent or empty; an existing one is kept even when it is not
      a 36-character UUID (sidecars are not edge proxies), and such an id is then never traced
      through the request-id path (reason "invalid_request_id").
    - `edge` (a gateway taking outside traffic): the request id is regenerated, as Envoy does
      without preserve_external_request_id, so outside ids cannot force tracing.
    - The request-id reason is computed and, when one is picked, written back (Envoy does this
      before tracing starts, whatever the tracing headers say).
    - An incoming decision (traceparent flags, x-b3-sampled / b3 / debug) then overrides it for
      this span, because the caller's sampler already decided for the whole trace.
    - `use_request_id` false (useRequestIdForTraceSampling: false): Envoy leaves the decision to
      the tracer and returns "sampled" without looking at the id or the percentage, so every
      trace started here is sampled (reason "request_id_not_used"); incoming decisions still win.
    """
    rid = headers.get("x-request-id")
    if not rid or edge:
        rid = new_request_id()
    if use_request_id:
        reason, why, write = _request_id_decision(headers, rid, percentage, edge)
        if write:
            rid = with_trace_reason(rid, reason)
    else:
        reason, why = TraceReason.SAMPLED, "request_id_not_used"
    ctx = extract(headers, read)
    if ctx is not None and ctx.sampled is not None:
        return Decision(ctx.sampled, "traceparent" if ctx.source == "w3c" else "b3", rid, ctx)
    return Decision(reason is not TraceReason.NOT_TRACEABLE, why, rid, ctx)
