"""The contract between the trace store and its readers: `SpanStore`, the methods the query API
calls, with the values they take and return and the errors they raise. `meshtrace/query/` depends
on this module only; `TraceStore` (`sqlite.py`) is the implementation."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from meshtrace.store.spm import SpanCounts
from meshtrace.store.summaries import TraceSummary

MAX_SEARCH_LIMIT = 1000


class StoreError(Exception):
    """The store cannot be opened or used (the message says why)."""


class StoreFullError(StoreError):
    """Too many spans are waiting to be written; retry later."""


@dataclass(frozen=True)
class TraceQuery:
    """A search: the traces with at least one span matching every criterion, newest first."""

    service: str
    start_min_ns: int
    start_max_ns: int
    operation: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    duration_min_ns: int | None = None
    duration_max_ns: int | None = None
    limit: int = 100


@dataclass(frozen=True)
class Operation:
    name: str
    kind: int  # Span.SpanKind value


@dataclass(frozen=True)
class DependencyLink:
    parent: str
    child: str
    call_count: int
    error_count: int


@runtime_checkable
class SpanStore(Protocol):
    """What the query API reads and writes. Reads may run on any thread; every method raises
    StoreError when the store cannot answer (not open, unreadable)."""

    def services(self) -> list[str]:
        """Service names with stored spans, sorted."""
        ...

    def operations(self, service: str, kind: int | None = None) -> list[Operation]:
        """The service's operations with stored spans (of one Span.SpanKind when `kind` is given),
        sorted by name, then kind."""
        ...

    def find_trace_ids(self, query: TraceQuery) -> list[bytes]:
        """Ids of the newest traces with a span matching `query` (at most
        min(query.limit, MAX_SEARCH_LIMIT)), newest first."""
        ...

    def get_traces(self, trace_ids: Iterable[bytes]) -> dict[bytes, ExportTraceServiceRequest]:
        """The stored spans of each known trace id, one request per trace (unknown ids left out)."""
        ...

    def trace_summaries(self, trace_ids: Sequence[bytes]) -> dict[bytes, TraceSummary]:
        """The summary of each stored trace among `trace_ids` (unknown ids left out)."""
        ...

    def dependencies(self, end_ns: int, lookback_ns: int) -> list[DependencyLink]:
        """Calls between services (a span whose parent is in another service) that started in
        [end_ns - lookback_ns, end_ns]."""
        ...

    def span_counts(
        self, service: str, kinds: Collection[int], origin_ns: int, end_ns: int, bucket_ns: int
    ) -> list[SpanCounts]:
        """RED data: `service`'s spans of `kinds` in [origin_ns, end_ns], counted per operation,
        time bucket and latency bin."""
        ...

    def archive_trace(self, trace_id: bytes) -> bool:
        """Keep the stored trace past retention; False when no span of it is stored."""
        ...

    def get_archived_trace(self, trace_id: bytes) -> ExportTraceServiceRequest | None: ...

    def new_span_count(self, request: ExportTraceServiceRequest) -> int:
        """How many spans of `request` writing it would add (a span is stored once, by trace id,
        span id and service)."""
        ...

    def write(self, encoded: bytes) -> Future[int]:
        """Queue encoded ExportTraceServiceRequest bytes for writing; the future completes once
        they are committed, with how many of their spans could not be stored and were dropped.
        Raises StoreFullError at once when too much is waiting."""
        ...
