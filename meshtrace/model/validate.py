"""Which spans can be stored: the one check every receiver and `/api/import` apply (sans-IO).

A span is refused (removed from the request and counted) when
- its trace id is empty or all zeros, or its span id is empty or all zeros: OTLP calls such ids
  invalid, and a span without a valid id can never be found, nor joined to its trace;
- its start or end time is 2^63 ns or later (after 2262-04-11T23:47:16Z): past what a signed
  64-bit count of nanoseconds holds (SQLite's INTEGER, Go's `time.Time`). Refused rather than
  clamped: a clamped time would be invented, and a span dated 2262 is never found by a
  time-window search; the sender learns about it instead.

Kept as sent: an end before its start (stored with duration 0), a time of 0, an all-zero parent
span id (a root span). An id of the wrong length makes the whole request malformed (`ValueError`
naming the field), as every OTLP decoder, the Collector's included, refuses it.
"""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

MAX_TIME_NS = 2**63 - 1
_ZERO_TRACE_ID = bytes(16)
_ZERO_SPAN_ID = bytes(8)


@dataclass(frozen=True)
class Refused:
    """How many spans of a request were refused, and why the first one was (naming its field)."""

    spans: int = 0
    message: str = ""


def _check_length(value: bytes, size: int, path: str) -> None:
    if value and len(value) != size:
        raise ValueError(f"{path}: expected {size} bytes, got {len(value)}")


def span_problem(span: Span, path: str) -> str | None:
    """Why `span` cannot be stored (message naming the field), or None when it can.
    ValueError when an id has the wrong length (the request is malformed)."""
    _check_length(span.trace_id, 16, f"{path}.trace_id")
    _check_length(span.span_id, 8, f"{path}.span_id")
    _check_length(span.parent_span_id, 8, f"{path}.parent_span_id")
    if not span.trace_id or span.trace_id == _ZERO_TRACE_ID:
        return f"{path}.trace_id: must be 16 bytes with at least one non-zero byte"
    if not span.span_id or span.span_id == _ZERO_SPAN_ID:
        return f"{path}.span_id: must be 8 bytes with at least one non-zero byte"
    for name in ("start_time_unix_nano", "end_time_unix_nano"):
        value = getattr(span, name)
        if value > MAX_TIME_NS:
            return f"{path}.{name}: {value} is after 2262-04-11 (the largest time is {MAX_TIME_NS} ns)"
    return None


def refuse_invalid(request: ExportTraceServiceRequest) -> Refused:
    """Remove from `request` (in place) the spans that cannot be stored; how many and why.
    ValueError naming the field when an id has the wrong length: the request is malformed and
    must be refused whole."""
    refused = 0
    message = ""
    for r, rs in enumerate(request.resource_spans):
        for s, ss in enumerate(rs.scope_spans):
            spans = ss.spans
            bad: list[int] = []
            for i, span in enumerate(spans):
                tid, sid, pid = span.trace_id, span.span_id, span.parent_span_id
                # The common case in one expression: valid ids, times in range.
                if (
                    len(tid) == 16
                    and tid != _ZERO_TRACE_ID
                    and len(sid) == 8
                    and sid != _ZERO_SPAN_ID
                    and (not pid or len(pid) == 8)
                    and span.start_time_unix_nano <= MAX_TIME_NS
                    and span.end_time_unix_nano <= MAX_TIME_NS
                ):
                    continue
                problem = span_problem(span, f"resource_spans[{r}].scope_spans[{s}].spans[{i}]")
                if problem is not None:
                    bad.append(i)
                    message = message or problem
            if bad:
                for i in reversed(bad):
                    del spans[i]
                refused += len(bad)
    if refused > 1:
        message = f"{refused} spans refused; the first: {message}"
    return Refused(refused, message)
