"""The store's reads, from any thread, each through a read-only connection of its own (WAL lets
them read while the writer writes): names, traces by id, search (`search.py`), dependencies,
summaries, RED data and the archive."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from meshtrace.store import archive, batched, search, spm, summaries
from meshtrace.store.protocol import DependencyLink, Operation, StoreError, TraceQuery
from meshtrace.store.schema import connect, service_name, used_bytes

_Resource = tuple[bytes, str, bytes, str]  # resource, its schema url, scope, its schema url


@dataclass(frozen=True)
class StoreStats:
    spans: int
    traces: int
    used_bytes: int
    file_bytes: int


class Reader:
    """Reads the store file at `path`; a thread's first read opens its connection, `close()`
    closes them all."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._resources: dict[int, _Resource] = {}

    def close(self) -> None:
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        self._local = threading.local()

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            if not self.path.exists():
                raise StoreError(f"{self.path}: the trace store is not open")
            conn = connect(self.path)
            conn.execute("PRAGMA query_only=1")
            # Searches read many span rows: mapped pages skip a read() per page.
            conn.execute("PRAGMA mmap_size=268435456")
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def services(self) -> list[str]:
        return [r[0] for r in self._reader().execute("SELECT name FROM services ORDER BY name")]

    def operations(self, service: str, kind: int | None = None) -> list[Operation]:
        sql = (
            "SELECT o.name, o.kind FROM operations o JOIN services s ON s.id = o.service_id"
            " WHERE s.name = ? AND o.spans > 0"
        )
        args: list[object] = [service]
        if kind is not None:
            sql += " AND o.kind = ?"
            args.append(kind)
        return [Operation(n, k) for n, k in self._reader().execute(sql + " ORDER BY o.name, o.kind", args)]

    def find_trace_ids(self, query: TraceQuery) -> list[bytes]:
        """Ids of the newest traces with a span matching `query` (at most `query.limit`)."""
        return search.find_trace_ids(self._reader(), query)

    def _resource(self, conn: sqlite3.Connection, rid: int) -> _Resource:
        res = self._resources.get(rid)
        if res is None:
            row = conn.execute(
                "SELECT resource, resource_schema_url, scope, scope_schema_url FROM resources WHERE id = ?",
                (rid,),
            ).fetchone()
            res = (row[0], row[1], row[2], row[3]) if row else (b"", "", b"", "")
            if len(self._resources) > 100_000:
                self._resources.clear()
            self._resources[rid] = res
        return res

    def new_span_count(self, request: ExportTraceServiceRequest) -> int:
        """How many spans of `request` writing it would add: those not stored yet, each counted
        once (the store's span key is trace id, span id and service)."""
        keys = {
            (span.trace_id, span.span_id, service_name(rs))
            for rs in request.resource_spans
            for ss in rs.scope_spans
            for span in ss.spans
        }
        trace_ids = list({tid for tid, _, _ in keys})
        keys.difference_update(
            batched.rows_in(
                self._reader(),
                "SELECT s.trace_id, s.span_id, v.name FROM spans s JOIN services v ON v.id = s.service_id"
                " WHERE s.trace_id IN ({marks})",
                trace_ids,
            )
        )
        return len(keys)

    def get_traces(self, trace_ids: Iterable[bytes]) -> dict[bytes, ExportTraceServiceRequest]:
        """The stored spans of each known trace id, as one ExportTraceServiceRequest per trace."""
        conn = self._reader()
        ids = list(dict.fromkeys(trace_ids))
        out: dict[bytes, ExportTraceServiceRequest] = {}
        groups: dict[bytes, dict[bytes, tuple[ResourceSpans, dict[bytes, ScopeSpans]]]] = {}
        for tid, sid, pid, rid, data in batched.rows_in(
            conn,
            "SELECT trace_id, span_id, parent_id, resource_id, data FROM spans"
            " WHERE trace_id IN ({marks}) ORDER BY start_ns",
            ids,
        ):
            request = out.get(tid)
            if request is None:
                request = out[tid] = ExportTraceServiceRequest()
                groups[tid] = {}
            resource, resource_schema, scope, scope_schema = self._resource(conn, rid)
            rkey = resource + b"\0" + resource_schema.encode()
            entry = groups[tid].get(rkey)
            if entry is None:
                rs = request.resource_spans.add()
                rs.resource.MergeFromString(resource)
                rs.schema_url = resource_schema
                entry = groups[tid][rkey] = (rs, {})
            skey = scope + b"\0" + scope_schema.encode()
            ss = entry[1].get(skey)
            if ss is None:
                ss = entry[0].scope_spans.add()
                ss.scope.MergeFromString(scope)
                ss.schema_url = scope_schema
                entry[1][skey] = ss
            span: Span = ss.spans.add()
            span.MergeFromString(data)
            span.trace_id = tid
            span.span_id = sid
            if pid:
                span.parent_span_id = pid
        return out

    def get_trace(self, trace_id: bytes) -> ExportTraceServiceRequest | None:
        return self.get_traces([trace_id]).get(trace_id)

    def dependencies(self, end_ns: int, lookback_ns: int) -> list[DependencyLink]:
        """Calls between services: spans whose parent span belongs to another service."""
        rows = self._reader().execute(
            "SELECT ps.name, cs.name, count(*), sum(c.status = ?) FROM spans c"
            " JOIN spans p ON p.trace_id = c.trace_id AND p.span_id = c.parent_id"
            " JOIN services ps ON ps.id = p.service_id JOIN services cs ON cs.id = c.service_id"
            " WHERE c.service_id IN (SELECT id FROM services) AND c.start_ns >= ? AND c.start_ns <= ?"
            " AND c.parent_id IS NOT NULL AND p.service_id != c.service_id"
            " GROUP BY ps.name, cs.name ORDER BY ps.name, cs.name",
            (Status.STATUS_CODE_ERROR, end_ns - lookback_ns, end_ns),
        )
        return [DependencyLink(p, c, n, e or 0) for p, c, n, e in rows]

    def trace_count(self) -> int:
        """How many traces the store holds (a read of the whole trace index)."""
        return int(self._reader().execute("SELECT count(DISTINCT trace_id) FROM spans").fetchone()[0])

    def stats(self) -> StoreStats:
        conn = self._reader()
        return StoreStats(
            spans=conn.execute("SELECT count(*) FROM spans").fetchone()[0],
            traces=self.trace_count(),
            used_bytes=used_bytes(conn),
            file_bytes=self.path.stat().st_size if self.path.exists() else 0,
        )

    # --- archive, summaries and RED data (archive.py, summaries.py, spm.py) ---
    def get_archived_trace(self, trace_id: bytes) -> ExportTraceServiceRequest | None:
        return archive.read(self._reader(), trace_id)

    def trace_summaries(self, trace_ids: Sequence[bytes]) -> dict[bytes, summaries.TraceSummary]:
        return summaries.trace_summaries(self._reader(), trace_ids)

    def span_counts(
        self, service: str, kinds: Collection[int], origin_ns: int, end_ns: int, bucket_ns: int
    ) -> list[spm.SpanCounts]:
        return spm.span_counts(self._reader(), service, kinds, origin_ns, end_ns, bucket_ns)
