"""`Traces`: one batch of spans moving through a pipeline, as bytes until someone needs objects.

Serialized `ExportTraceServiceRequest` messages concatenate into one valid message (repeated
field 1, `resource_spans`), so receivers hand encoded bytes on, batching appends bytes, and
exporters forward bytes; only a processor that reads spans pays for decoding.
"""

from __future__ import annotations

from collections.abc import Iterable

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


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
            self._span_count = sum(
                len(ss.spans) for rs in self.message().resource_spans for ss in rs.scope_spans
            )
        return self._span_count

    def __len__(self) -> int:
        return self.span_count()

    def __repr__(self) -> str:
        return f"Traces(spans={self.span_count()})"
