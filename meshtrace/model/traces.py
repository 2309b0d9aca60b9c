"""`Traces`: one batch of spans moving through a pipeline, as bytes until someone needs objects.

Serialized `ExportTraceServiceRequest` messages concatenate into one valid message (repeated
field 1, `resource_spans`), so receivers hand encoded bytes on, batching appends bytes, and
exporters forward bytes; only a processor that reads spans pays for decoding.
"""

from __future__ import annotations

from collections.abc import Iterable

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans


def spans_in(resource_spans: Iterable[ResourceSpans]) -> int:
    """The number of spans under these ResourceSpans (of a request, or fragments of one)."""
    return sum(len(ss.spans) for rs in resource_spans for ss in rs.scope_spans)


class Traces:
    """An `ExportTraceServiceRequest`, held encoded, decoded, or both."""

    __slots__ = ("_encoded", "_message", "_span_count")

    def __init__(
        self,
        encoded: bytes | None = None,
        message: ExportTraceServiceRequest | None = None,
        span_count: int | None = None,
    ) -> None:
        if encoded is None and message is None:
            encoded = b""
        self._encoded = encoded
        self._message = message
        self._span_count = span_count

    @classmethod
    def from_message(cls, message: ExportTraceServiceRequest) -> Traces:
        return cls(message=message)

    @classmethod
    def from_bytes(cls, encoded: bytes, span_count: int | None = None) -> Traces:
        """Wrap encoded bytes. They are not parsed here; `message()` raises DecodeError if invalid."""
        return cls(encoded=encoded, span_count=span_count)

    @classmethod
    def concat(cls, parts: Iterable[Traces]) -> Traces:
        """One batch made of several, without decoding any of them."""
        items = list(parts)
        counts = [p._span_count for p in items]
        total = None if any(c is None for c in counts) else sum(c for c in counts if c is not None)
        return cls(encoded=b"".join(p.encoded() for p in items), span_count=total)

    def encoded(self) -> bytes:
        if self._encoded is None:
            assert self._message is not None
            self._encoded = self._message.SerializeToString()
        return self._encoded

    def message(self) -> ExportTraceServiceRequest:
        """The decoded request. Callers that change it must call `changed()` afterwards."""
        if self._message is None:
            message = ExportTraceServiceRequest()
            message.ParseFromString(self._encoded or b"")
            self._message = message
        return self._message

    def changed(self) -> None:
        """The decoded message was modified: drop the stale encoding and count."""
        self._encoded = None
        self._span_count = None

    def span_count(self) -> int:
        if self._span_count is None:
            self._span_count = spans_in(self.message().resource_spans)
        return self._span_count

    def __len__(self) -> int:
        return self.span_count()

    def __repr__(self) -> str:
        return f"Traces(spans={self.span_count()})"


def split_traces(traces: Traces, limit: int) -> tuple[Traces, Traces]:
    """(the first `limit` spans, the rest), keeping each span under its resource and scope."""
    head, rest = ExportTraceServiceRequest(), ExportTraceServiceRequest()
    room = limit
    for rs in traces.message().resource_spans:
        if room <= 0:
            rest.resource_spans.append(rs)
            continue
        head_rs: ResourceSpans | None = None
        rest_rs: ResourceSpans | None = None
        for ss in rs.scope_spans:
            take = min(room, len(ss.spans))
            room -= take
            if take:
                if head_rs is None:
                    head_rs = head.resource_spans.add(resource=rs.resource, schema_url=rs.schema_url)
                head_rs.scope_spans.add(scope=ss.scope, schema_url=ss.schema_url, spans=ss.spans[:take])
            if take < len(ss.spans):
                if rest_rs is None:
                    rest_rs = rest.resource_spans.add(resource=rs.resource, schema_url=rs.schema_url)
                rest_rs.scope_spans.add(scope=ss.scope, schema_url=ss.schema_url, spans=ss.spans[take:])
    return Traces(message=head, span_count=min(limit, len(traces))), Traces(
        message=rest, span_count=max(0, len(traces) - limit)
    )
