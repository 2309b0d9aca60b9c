"""The embedded trace store: one SQLite database (WAL), written by one writer thread, read by any
thread through its own connection.

Layout (why: compact and fast for the three questions a trace UI asks):
- `spans`: one row per span: the indexed columns (trace, span, parent, service, operation, start,
  duration, status) and the span itself as encoded OTLP `Span` bytes, with the ids (kept in their
  columns) cleared so they are not stored twice. Indexes: (trace_id, span_id, service_id) for
  trace-by-id and the dependency join (covering the parent's side), (service_id, start_ns) for
  search (newest first, stopping at `limit`).
- `resources`: each distinct (Resource, InstrumentationScope) once; spans point at it.
- `services`, `operations`: the names the search form lists, with span counts so that eviction
  removes names whose spans are gone.
- `batches`: the last span rowid and wall time of every committed write. Rowids grow with each
  write, so eviction (size bound) and retention delete whole traces in the order their first span
  was written, with no per-trace bookkeeping on the ingest path.

- `tag_buckets`: per (service, minute of span start) a Bloom filter of the encoded `KeyValue`s of
  its spans (span, event and link attributes), written in the same transaction as the spans.

Attribute search: an attribute `k=v` is the encoded `KeyValue` bytes inside the span bytes, so
`instr(data, <encoded KeyValue>)` finds it in C, for every encoding of v (string, int, double,
bool). `tag_buckets` first rules out the minutes that cannot hold a match, so a search whose tag
matches nothing reads a few Bloom filters instead of testing every span in its window. Ingest stays
one row per span (plus one filter per touched minute per commit).
"""

from __future__ import annotations

import collections
import hashlib
import logging
import math
import os
import queue
import sqlite3
import threading
import time
import zlib
from collections.abc import Collection, Iterable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from meshtrace.model import Traces
from meshtrace.model.attributes import search_values
from meshtrace.model.jaeger import SPAN_KIND_BY_NAME, STATUS_BY_NAME
from meshtrace.model.otlp_wire import encoded_attributes
from meshtrace.model.traces import split_traces
from meshtrace.store import archive, batched, spm, summaries

log = logging.getLogger(__name__)

SCHEMA_VERSION = 4  # 2: tag_buckets, 3: archive, 4: unique spans (older files are migrated on open)
# PRAGMA application_id marks a database as a meshtrace trace store ("MSHT").
APPLICATION_ID = 0x4D534854
UNKNOWN_SERVICE = "unknown_service"
STATUS_ERROR = Status.STATUS_CODE_ERROR
MAX_SEARCH_LIMIT = 1000
_ZERO_TRACE_ID = bytes(16)
_ZERO_SPAN_ID = bytes(8)
# What a span the store cannot hold raises while it is written (a time or count over SQLite's
# signed 64 bits, an invalid id, a value over SQLite's limits). Anything else (disk full, I/O)
# fails the whole batch, retryably.
_UNSTORABLE = (ValueError, OverflowError, TypeError, sqlite3.DataError, sqlite3.IntegrityError)

# Bloom filters of the attributes in each (service, minute): 2 bits of 2**16 per encoded KeyValue
# (the halves of its CRC-32), zlib-compressed (a sparse minute stores a few dozen bytes).
TAG_BUCKET_NS = 60 * 10**9
_BLOOM_BYTES = 1 << 13
_TAG_BUCKETS_SCHEMA = """
CREATE TABLE tag_buckets (
    service_id INTEGER NOT NULL, bucket INTEGER NOT NULL, bits BLOB NOT NULL,
    PRIMARY KEY (service_id, bucket)) WITHOUT ROWID;
"""

_SCHEMA = (
    """
CREATE TABLE services (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE operations (
    id INTEGER PRIMARY KEY, service_id INTEGER NOT NULL, name TEXT NOT NULL, kind INTEGER NOT NULL,
    spans INTEGER NOT NULL DEFAULT 0, UNIQUE (service_id, name, kind));
CREATE TABLE resources (
    id INTEGER PRIMARY KEY, digest BLOB NOT NULL UNIQUE, resource BLOB NOT NULL,
    resource_schema_url TEXT NOT NULL, scope BLOB NOT NULL, scope_schema_url TEXT NOT NULL);
CREATE TABLE batches (last_rowid INTEGER PRIMARY KEY, written_ns INTEGER NOT NULL);
CREATE TABLE spans (
    trace_id BLOB NOT NULL, span_id BLOB NOT NULL, parent_id BLOB, service_id INTEGER NOT NULL,
    op_id INTEGER NOT NULL, start_ns INTEGER NOT NULL, duration_ns INTEGER NOT NULL,
    status INTEGER NOT NULL, resource_id INTEGER NOT NULL, data BLOB NOT NULL);
-- A span is stored once: a resend (the OTLP queues are at-least-once) or a re-imported file is
-- skipped. The service is part of the key because a Zipkin span shared by client and server has
-- one id in two services. The index also covers the dependency join.
CREATE UNIQUE INDEX spans_trace ON spans (trace_id, span_id, service_id);
CREATE INDEX spans_service_start ON spans (service_id, start_ns);
"""
    + _TAG_BUCKETS_SCHEMA
    + archive.ARCHIVE_SCHEMA
)


class StoreError(Exception):
    """The store cannot be opened or used (the message says why)."""


class SchemaVersionError(StoreError):
    """The database was written by a newer meshtrace."""


class StoreFullError(StoreError):
    """Too many spans are waiting to be written; retry later."""


def default_path() -> Path:
    """`$MESHTRACE_DATA_DIR/traces.db`, else the user's data directory (XDG)."""
    data_dir = os.environ.get("MESHTRACE_DATA_DIR")
    if data_dir:
        return Path(data_dir).expanduser() / "traces.db"
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "meshtrace" / "traces.db"


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


@dataclass(frozen=True)
class StoreStats:
    spans: int
    traces: int
    used_bytes: int
    file_bytes: int


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def _open_schema(conn: sqlite3.Connection, path: Path) -> None:
    """Create the schema in a new database, or check that an existing one is ours and readable."""
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path}: not a meshtrace trace store ({exc})") from None
    if tables == 0:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(
            f"BEGIN; {_SCHEMA} PRAGMA application_id={APPLICATION_ID};"
            f" PRAGMA user_version={SCHEMA_VERSION}; COMMIT;"
        )
        return
    if app_id != APPLICATION_ID:
        raise StoreError(f"{path}: an SQLite database that is not a meshtrace trace store")
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{path}: written by a newer meshtrace (store schema {version}; this version reads "
            f"schema {SCHEMA_VERSION}). Upgrade meshtrace or point the store exporter's `path` "
            "at another file."
        )
    conn.execute("PRAGMA journal_mode=WAL")
    if version < 1:
        raise StoreError(f"{path}: store schema {version} is too old to migrate")
    if version == 1:
        _migrate_v1(conn)
    if version <= 2:
        archive.migrate_v2(conn, 3)
    if version <= 3:
        _migrate_v3(conn)


def _migrate_v1(conn: sqlite3.Connection) -> None:
    """Schema 1 -> 2: add `tag_buckets`; every minute that already holds spans gets an all-ones
    filter ("may match anything"), so their searches scan as before, never miss."""
    full = zlib.compress(b"\xff" * _BLOOM_BYTES)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(_TAG_BUCKETS_SCHEMA)
    conn.execute(
        "INSERT INTO tag_buckets SELECT DISTINCT service_id, start_ns / ?, ? FROM spans",
        (TAG_BUCKET_NS, full),
    )
    conn.execute("PRAGMA user_version=2")
    conn.execute("COMMIT")


def _migrate_v3(conn: sqlite3.Connection) -> None:
    """Schema 3 -> 4: spans become unique by (trace id, span id, service). Copies stored before
    (a resent batch, a file imported twice) are deleted, the first written kept, and the
    operations' span counts recounted."""
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(
        "DELETE FROM spans WHERE rowid NOT IN"
        " (SELECT min(rowid) FROM spans GROUP BY trace_id, span_id, service_id)"
    )
    conn.execute("DROP INDEX spans_trace")
    conn.execute("CREATE UNIQUE INDEX spans_trace ON spans (trace_id, span_id, service_id)")
    conn.execute("UPDATE operations SET spans = (SELECT count(*) FROM spans WHERE op_id = operations.id)")
    conn.execute("PRAGMA user_version=4")
    conn.execute("COMMIT")


def bloom_bits(encoded: bytes) -> tuple[int, int]:
    """The two bit positions of an encoded KeyValue in a tag_buckets filter."""
    crc = zlib.crc32(encoded)
    return crc & 0xFFFF, crc >> 16


def _service_name(resource_spans: ResourceSpans) -> str:
    for kv in resource_spans.resource.attributes:
        if kv.key == "service.name" and kv.value.WhichOneof("value") == "string_value":
            return kv.value.string_value or UNKNOWN_SERVICE
    return UNKNOWN_SERVICE


def attribute_patterns(key: str, value: str) -> list[bytes]:
    """Every encoded `KeyValue` that a search tag `key=value` can mean."""
    return [KeyValue(key=key, value=v).SerializeToString() for v in search_values(value)]


class _Ingest:
    """The writer thread's state: name caches and the batch -> rows conversion."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.services: dict[str, int] = {}
        self.operations: dict[tuple[int, str, int], int] = {}
        self.resources: dict[tuple[bytes, str, bytes, str], int] = {}
        self.resource_services: dict[bytes, int] = {}  # encoded Resource -> service id
        self.blooms: dict[tuple[int, int], bytearray] = {}  # (service id, bucket) -> filter
        self.reload_names()

    def forget(self) -> None:
        """Drop every cached id: a rollback may have removed the rows they name."""
        self.resources.clear()
        self.reload_names()

    def reload_names(self) -> None:
        self.resource_services.clear()
        self.blooms.clear()
        self.services = {name: sid for sid, name in self.conn.execute("SELECT id, name FROM services")}
        self.operations = {
            (sid, name, kind): oid
            for oid, sid, name, kind in self.conn.execute("SELECT id, service_id, name, kind FROM operations")
        }

    def _service_id(self, name: str) -> int:
        sid = self.services.get(name)
        if sid is None:
            self.conn.execute("INSERT OR IGNORE INTO services (name) VALUES (?)", (name,))
            sid = self.conn.execute("SELECT id FROM services WHERE name = ?", (name,)).fetchone()[0]
            self.services[name] = sid
        return sid

    def _operation_id(self, key: tuple[int, str, int]) -> int:
        self.conn.execute("INSERT OR IGNORE INTO operations (service_id, name, kind) VALUES (?, ?, ?)", key)
        oid: int = self.conn.execute(
            "SELECT id FROM operations WHERE service_id = ? AND name = ? AND kind = ?", key
        ).fetchone()[0]
        self.operations[key] = oid
        return oid

    def _resource_id(self, key: tuple[bytes, str, bytes, str]) -> int:
        rid = self.resources.get(key)
        if rid is None:
            digest = hashlib.blake2b(
                b"\0".join((key[0], key[1].encode(), key[2], key[3].encode())), digest_size=16
            ).digest()
            self.conn.execute(
                "INSERT OR IGNORE INTO resources (digest, resource, resource_schema_url, scope,"
                " scope_schema_url) VALUES (?, ?, ?, ?, ?)",
                (digest, *key),
            )
            rid = self.conn.execute("SELECT id FROM resources WHERE digest = ?", (digest,)).fetchone()[0]
            if len(self.resources) > 100_000:  # bounded: a cache miss only costs a lookup
                self.resources.clear()
            self.resources[key] = rid
        return rid

    def write(self, request: ExportTraceServiceRequest, now_ns: int) -> int:
        """Insert every span of `request` that is not stored yet (inside the caller's
        transaction); returns how many were new."""
        rows: list[tuple[object, ...]] = []
        append = rows.append
        op_counts: dict[int, int] = {}
        operations = self.operations
        # (service id, bucket) -> the encoded KeyValues of its spans in this request (a set, so
        # each distinct attribute is hashed once per request)
        tags: dict[tuple[int, int], set[bytes]] = {}
        encode = KeyValue.SerializeToString
        for rs in request.resource_spans:
            resource = rs.resource.SerializeToString()
            service_id = self.resource_services.get(resource)
            if service_id is None:
                service_id = self._service_id(_service_name(rs))
                if len(self.resource_services) > 10_000:  # bounded: a miss only costs a lookup
                    self.resource_services.clear()
                self.resource_services[resource] = service_id
            for ss in rs.scope_spans:
                rid = self._resource_id(
                    (resource, rs.schema_url, ss.scope.SerializeToString(), ss.schema_url)
                )
                for span in ss.spans:
                    tid, sid, pid = span.trace_id, span.span_id, span.parent_span_id
                    if len(tid) != 16 or len(sid) != 8 or tid == _ZERO_TRACE_ID or sid == _ZERO_SPAN_ID:
                        # Receivers refuse these (model/validate.py); one that gets here is
                        # dropped and counted by the writer's isolation, never silently skipped.
                        raise ValueError(f"span {span.name!r}: invalid trace or span id")
                    start, end = span.start_time_unix_nano, span.end_time_unix_nano
                    key = (service_id, span.name, span.kind)
                    oid = operations.get(key)
                    if oid is None:
                        oid = self._operation_id(key)
                    op_counts[oid] = op_counts.get(oid, 0) + 1
                    bucket_key = (service_id, start // TAG_BUCKET_NS)
                    seen = tags.get(bucket_key)
                    if seen is None:
                        seen = tags[bucket_key] = set()
                    if span.events:
                        for event in span.events:
                            seen.update(map(encode, event.attributes))
                    if span.links:
                        for link in span.links:
                            seen.update(map(encode, link.attributes))
                    span.ClearField("trace_id")
                    span.ClearField("span_id")
                    span.ClearField("parent_span_id")
                    parent = pid if len(pid) == 8 and any(pid) else None  # else a root span
                    duration = end - start if end > start else 0
                    data = span.SerializeToString()
                    # The span's KeyValues, as bytes, read back from its encoding: the same bytes
                    # as serializing each KeyValue, for half the cost (model/otlp_wire.py).
                    seen.update(encoded_attributes(data))
                    append((tid, sid, parent, service_id, oid, start, duration, span.status.code, rid, data))
        before = self.conn.execute("SELECT coalesce(max(rowid), 0) FROM spans").fetchone()[0]
        inserted = self.conn.executemany(
            "INSERT OR IGNORE INTO spans VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows
        ).rowcount
        if inserted < len(rows):
            # some were stored already: count the operations of the new rows only
            op_counts = dict(
                self.conn.execute(
                    "SELECT op_id, count(*) FROM spans WHERE rowid > ? GROUP BY op_id", (before,)
                ).fetchall()
            )
        if inserted:
            self.conn.execute(
                "INSERT OR REPLACE INTO batches VALUES ((SELECT max(rowid) FROM spans), ?)", (now_ns,)
            )
        self.conn.executemany(
            "UPDATE operations SET spans = spans + ? WHERE id = ?", [(n, oid) for oid, n in op_counts.items()]
        )
        self._add_tags(tags)
        return inserted

    def _add_tags(self, tags: dict[tuple[int, int], set[bytes]]) -> None:
        """Set the bits of each bucket's new KeyValues in its filter and write it back."""
        updates = []
        for key, encoded in tags.items():
            bits = self.blooms.get(key)
            if bits is None:
                row = self.conn.execute(
                    "SELECT bits FROM tag_buckets WHERE service_id = ? AND bucket = ?", key
                ).fetchone()
                bits = bytearray(zlib.decompress(row[0]) if row else _BLOOM_BYTES)
                if len(self.blooms) > 1024:  # bounded: a miss only costs a read
                    self.blooms.clear()
                self.blooms[key] = bits
            for kv in encoded:
                for bit in bloom_bits(kv):
                    bits[bit >> 3] |= 1 << (bit & 7)
            updates.append((*key, zlib.compress(bits, 1)))
        self.conn.executemany("INSERT OR REPLACE INTO tag_buckets VALUES (?, ?, ?)", updates)

    def evict(self, trace_ids: Sequence[bytes]) -> int:
        """Delete whole traces (inside the caller's transaction); returns spans deleted."""
        deleted = 0
        op_counts: collections.Counter[int] = collections.Counter()
        for (oid,) in batched.rows_in(
            self.conn, "DELETE FROM spans WHERE trace_id IN ({marks}) RETURNING op_id", trace_ids
        ):
            op_counts[oid] += 1
        deleted = sum(op_counts.values())
        self.conn.executemany(
            "UPDATE operations SET spans = spans - ? WHERE id = ?", [(n, oid) for oid, n in op_counts.items()]
        )
        gone = self.conn.execute("DELETE FROM operations WHERE spans <= 0 RETURNING id").fetchall()
        if gone:
            self.conn.execute(
                "DELETE FROM services WHERE id NOT IN (SELECT DISTINCT service_id FROM operations)"
            )
        # A bucket older than its service's oldest span is empty now (later ones keep the bits of
        # deleted spans: that only costs a scan of that minute, never a missed match).
        self.conn.execute(
            "DELETE FROM tag_buckets WHERE bucket < coalesce((SELECT min(start_ns) FROM spans"
            " WHERE service_id = tag_buckets.service_id), ?) / ?",
            (1 << 62, TAG_BUCKET_NS),
        )
        self.reload_names()
        return deleted


_FLUSH = object()
_STOP = object()


class TraceStore:
    """Owns the database: `write()` queues encoded `ExportTraceServiceRequest` bytes for the writer
    thread (never blocking the caller) and returns a future that completes when they are
    committed; readers query from any thread.

    Bounds: `max_bytes` of live pages in the database file (the first written traces are deleted
    down to 90% of it when it is exceeded), `retention_s` since a trace was first written, and
    `max_pending_bytes` of accepted-but-unwritten data (beyond it `write` raises StoreFullError).
    A crash loses only what is still pending, none of which has been acknowledged to a caller
    that waits for its future.
    """

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int = 1 << 30,
        retention_s: float = 72 * 3600.0,
        max_pending_bytes: int = 64 << 20,
        batch_bytes: int = 8 << 20,
        maintenance_interval_s: float = 1.0,
    ) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.retention_s = retention_s
        self.max_pending_bytes = max_pending_bytes
        self.batch_bytes = batch_bytes
        self.maintenance_interval_s = maintenance_interval_s
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._resources: dict[int, tuple[bytes, str, bytes, str]] = {}
        self.spans_written = 0
        self.spans_dropped = 0  # spans of written batches that the store could not hold
        self.spans_evicted = 0
        self.write_errors = 0

    # --- lifecycle -------------------------------------------------------------------------
    def open(self) -> None:
        """Create or open the database (raising StoreError with the reason) and start the writer."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = _connect(self.path)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"{self.path}: cannot open the trace store: {exc}") from None
        try:
            _open_schema(conn, self.path)
            conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable against process crashes
            conn.execute("PRAGMA journal_size_limit=134217728")
            # Random trace ids make index inserts touch random pages: a 64 MiB page cache keeps
            # ingest ~2.5x faster than SQLite's 2 MiB default at a million spans.
            conn.execute("PRAGMA cache_size=-65536")
            # Checkpoint every 128 MiB of WAL rather than SQLite's 4 MiB: random trace ids make each
            # commit dirty thousands of index pages, and a page dirtied by several commits is
            # copied into the database once per checkpoint (measured: ~15% more spans per
            # CPU-second at a million spans). The WAL file stays at most that size.
            conn.execute("PRAGMA wal_autocheckpoint=32768")
            ingest = _Ingest(conn)
        except Exception:
            conn.close()
            raise
        self._thread = threading.Thread(target=self._run, args=(ingest,), name="meshtrace-store", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 30.0) -> None:
        """Write what is pending, stop the writer and close every connection."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout)
            self._thread = None
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        self._local = threading.local()

    # --- writing ---------------------------------------------------------------------------
    @property
    def pending_bytes(self) -> int:
        return self._pending

    def write(self, encoded: bytes) -> Future[int]:
        """Queue encoded ExportTraceServiceRequest bytes; the future completes once they are
        committed, with the number of their spans the store could not hold and dropped (an
        invalid id, a time after 2262: receivers refuse these first); StoreError if the write
        failed or the bytes are not a request. Raises StoreFullError at once when too much is
        pending."""
        done: Future[int] = Future()
        if not encoded:
            done.set_result(0)
            return done
        if self._thread is None or not self._thread.is_alive():
            raise StoreError("the trace store is not open")
        with self._pending_lock:
            if self._pending + len(encoded) > self.max_pending_bytes and self._pending > 0:
                raise StoreFullError(f"{self._pending} bytes waiting to be written to the trace store")
            self._pending += len(encoded)
        self._queue.put((encoded, done))
        return done

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything queued before this call is committed; False on timeout."""
        if self._thread is None:
            return True
        done = threading.Event()
        self._queue.put((_FLUSH, done))
        return done.wait(timeout)

    def _run(self, ingest: _Ingest) -> None:
        conn = ingest.conn
        last_maintenance = 0.0
        try:
            while True:
                item = self._queue.get()
                payloads: list[tuple[bytes, Future[int]]] = []
                waiters: list[threading.Event] = []
                stop = False
                size = 0
                while True:
                    if item is _STOP:
                        stop = True
                    elif isinstance(item, tuple) and item[0] is _FLUSH:
                        waiters.append(item[1])
                    else:
                        assert isinstance(item, tuple)
                        payloads.append(item)
                        size += len(item[0])
                    if stop or size >= self.batch_bytes:
                        break
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                if payloads:
                    self._write_batch(ingest, payloads)
                    with self._pending_lock:
                        self._pending -= size
                now = time.monotonic()
                if now - last_maintenance >= self.maintenance_interval_s or waiters:
                    last_maintenance = now
                    self._maintain(ingest)
                for waiter in waiters:
                    waiter.set()
                if stop:
                    break
        finally:
            conn.close()

    def _decode(self, payloads: list[tuple[bytes, Future[int]]]) -> Iterator[ExportTraceServiceRequest]:
        try:
            yield ExportTraceServiceRequest.FromString(b"".join(p for p, _ in payloads))
            return
        except DecodeError:
            pass
        for payload, done in payloads:  # find the bad one and keep the rest
            try:
                yield ExportTraceServiceRequest.FromString(payload)
            except DecodeError:
                self._undecodable(payload, done)

    def _undecodable(self, payload: bytes, done: Future[int]) -> None:
        self.write_errors += 1
        log.warning("store: dropped %d bytes that are not an ExportTraceServiceRequest", len(payload))
        done.set_exception(StoreError("not an encoded ExportTraceServiceRequest"))

    def _write_batch(self, ingest: _Ingest, payloads: list[tuple[bytes, Future[int]]]) -> None:
        conn = ingest.conn
        now_ns = time.time_ns()
        error: StoreError | None = None
        dropped: dict[int, int] = {}  # payload index -> spans it lost to isolation
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("SAVEPOINT batch")
            try:
                written = sum(ingest.write(req, now_ns) for req in self._decode(payloads))
                conn.execute("RELEASE batch")
            except _UNSTORABLE as exc:
                # A span the store cannot hold must not cost the others: write each payload
                # on its own, isolating the bad spans.
                log.warning("store: a span cannot be written (%s); isolating it", exc)
                conn.execute("ROLLBACK TO batch")
                conn.execute("RELEASE batch")
                ingest.forget()
                written = 0
                for index, (payload, done) in enumerate(payloads):
                    if done.done():
                        continue
                    try:
                        request = ExportTraceServiceRequest.FromString(payload)
                    except DecodeError:
                        self._undecodable(payload, done)
                        continue
                    ok, lost = self._write_isolating(ingest, request, now_ns)
                    written += ok
                    dropped[index] = lost
            conn.execute("COMMIT")
            self.spans_written += written
        except Exception as exc:  # the writer must outlive any bad batch
            self.write_errors += 1
            log.error("store: write failed, %d bytes lost: %s", sum(len(p) for p, _ in payloads), exc)
            error = StoreError(f"the trace store could not write: {exc}")
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            ingest.forget()
        for index, (_, done) in enumerate(payloads):
            if done.done():
                continue
            if error is None:
                done.set_result(dropped.get(index, 0))
            else:
                done.set_exception(error)

    def _write_isolating(
        self, ingest: _Ingest, request: ExportTraceServiceRequest, now_ns: int
    ) -> tuple[int, int]:
        """(spans written, spans dropped): `request` in a savepoint; when a span in it cannot be
        stored, each half the same way, down to the single spans that are dropped (a few
        savepoints per bad span, so one bad span in thousands stays cheap)."""
        conn = ingest.conn
        attempt = ExportTraceServiceRequest()
        attempt.CopyFrom(request)  # write() clears the ids of the spans it has seen
        conn.execute("SAVEPOINT isolate")
        try:
            written = ingest.write(attempt, now_ns)
            conn.execute("RELEASE isolate")
            return written, 0
        except _UNSTORABLE as exc:
            conn.execute("ROLLBACK TO isolate")
            conn.execute("RELEASE isolate")
            ingest.forget()
            traces = Traces.from_message(request)
            count = traces.span_count()
            if count <= 1:
                self.spans_dropped += count
                log.warning("store: dropped a span it cannot hold: %s", exc)
                return 0, count
        head, rest = split_traces(traces, count // 2)
        first = self._write_isolating(ingest, head.message(), now_ns)
        second = self._write_isolating(ingest, rest.message(), now_ns)
        return first[0] + second[0], first[1] + second[1]

    def _maintain(self, ingest: _Ingest) -> None:
        """Apply retention, then the size bound, deleting whole traces, first written first."""
        conn = ingest.conn
        try:
            if self.retention_s > 0:
                cutoff = time.time_ns() - int(self.retention_s * 1e9)
                row = conn.execute(
                    "SELECT max(last_rowid) FROM batches WHERE written_ns < ?", (cutoff,)
                ).fetchone()
                if row[0] is not None:
                    self._evict_up_to(ingest, row[0])
            if self.max_bytes > 0 and self._used_bytes(conn) > self.max_bytes:
                self._shrink(ingest)
        except Exception as exc:  # the writer must outlive a failed clean-up
            log.error("store: maintenance failed: %s", exc)
            if conn.in_transaction:
                conn.execute("ROLLBACK")

    def _evict(self, ingest: _Ingest, ids: Sequence[bytes]) -> None:
        ingest.conn.execute("BEGIN IMMEDIATE")
        self.spans_evicted += ingest.evict(ids)
        ingest.conn.execute("COMMIT")

    def _shrink(self, ingest: _Ingest) -> None:
        conn = ingest.conn
        target = int(self.max_bytes * 0.9)
        for _ in range(100):  # bounded: each round deletes at least 1% of the spans
            used = self._used_bytes(conn)
            if used <= target:
                return
            first, last = conn.execute("SELECT min(rowid), max(rowid) FROM spans").fetchone()
            if first is None:
                return
            count = last - first + 1  # rowids only grow: the span count, give or take holes
            n = max(1, count // 100, math.ceil((used - target) / (used / count)))
            self._evict_up_to(ingest, first + n - 1)

    def _evict_up_to(self, ingest: _Ingest, last_rowid: int) -> None:
        """Delete every trace with a span at or before `last_rowid` (all of its spans)."""
        conn = ingest.conn
        while True:
            ids = [
                r[0]
                for r in conn.execute(
                    "SELECT DISTINCT trace_id FROM spans WHERE rowid <= ? LIMIT 2000", (last_rowid,)
                )
            ]
            if not ids:
                break
            self._evict(ingest, ids)
        conn.execute("DELETE FROM batches WHERE last_rowid <= ?", (last_rowid,))

    @staticmethod
    def _used_bytes(conn: sqlite3.Connection) -> int:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        return int((pages - free) * page_size)

    # --- reading (any thread) --------------------------------------------------------------
    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            if not self.path.exists():
                raise StoreError(f"{self.path}: the trace store is not open")
            conn = _connect(self.path)
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
        conn = self._reader()
        row = conn.execute("SELECT id FROM services WHERE name = ?", (query.service,)).fetchone()
        if row is None:
            return []
        where = ["s.service_id = ?", "s.start_ns >= ?", "s.start_ns <= ?"]
        args: list[object] = [row[0], query.start_min_ns, query.start_max_ns]
        if query.operation:
            where.append("s.op_id IN (SELECT id FROM operations WHERE service_id = ? AND name = ?)")
            args += [row[0], query.operation]
        if query.duration_min_ns is not None:
            where.append("s.duration_ns >= ?")
            args.append(query.duration_min_ns)
        if query.duration_max_ns is not None:
            where.append("s.duration_ns <= ?")
            args.append(query.duration_max_ns)
        # Each tag that only span bytes can match: its possible encodings, for the Bloom filters.
        filtered: list[list[bytes]] = []
        for key, value in query.tags.items():
            clause, clause_args, patterns = self._tag_clause(conn, key, value)
            where.append(clause)
            args += clause_args
            if patterns:
                filtered.append(patterns)
        limit = max(1, min(query.limit, MAX_SEARCH_LIMIT))
        found: dict[bytes, None] = {}
        sql = f"SELECT s.trace_id FROM spans s WHERE {' AND '.join(where)} ORDER BY s.start_ns DESC"
        windows = (
            self._candidate_windows(conn, row[0], query, filtered)
            if filtered
            else [(query.start_min_ns, query.start_max_ns)]
        )
        for low, high in windows:  # newest first
            args[1:3] = [low, high]
            with closing(conn.execute(sql, args)) as cursor:
                for (tid,) in cursor:
                    found[tid] = None
                    if len(found) >= limit:
                        return list(found)
        return list(found)

    @staticmethod
    def _candidate_windows(
        conn: sqlite3.Connection, service_id: int, query: TraceQuery, tags: list[list[bytes]]
    ) -> list[tuple[int, int]]:
        """The parts of the query's time window, newest first, whose minutes' Bloom filters may
        hold every tag (in one of its encodings); adjacent minutes are merged."""
        wanted = [[bloom_bits(p) for p in patterns] for patterns in tags]
        windows: list[tuple[int, int]] = []
        rows = conn.execute(
            "SELECT bucket, bits FROM tag_buckets WHERE service_id = ? AND bucket BETWEEN ? AND ?"
            " ORDER BY bucket DESC",
            (service_id, query.start_min_ns // TAG_BUCKET_NS, query.start_max_ns // TAG_BUCKET_NS),
        )
        for bucket, compressed in rows:
            bits = zlib.decompress(compressed)
            if all(any(all(bits[b >> 3] >> (b & 7) & 1 for b in pair) for pair in pairs) for pairs in wanted):
                low = max(query.start_min_ns, bucket * TAG_BUCKET_NS)
                high = min(query.start_max_ns, (bucket + 1) * TAG_BUCKET_NS - 1)
                if windows and windows[-1][0] == high + 1:
                    windows[-1] = (low, windows[-1][1])
                else:
                    windows.append((low, high))
        return windows

    @staticmethod
    def _tag_clause(conn: sqlite3.Connection, key: str, value: str) -> tuple[str, list[object], list[bytes]]:
        """(SQL condition, its arguments, the encodings the Bloom filters can rule out: empty when
        the tag can also match something they do not hold: a resource, the status, the kind)."""
        if key == "span.kind":
            kind = SPAN_KIND_BY_NAME.get(value.strip().lower(), -1)
            return "s.op_id IN (SELECT id FROM operations WHERE kind = ?)", [kind], []
        if key == "otel.status_code":
            return "s.status = ?", [STATUS_BY_NAME.get(value.strip().upper(), -1)], []
        patterns = attribute_patterns(key, value)
        marks = " OR ".join("instr(resource, ?) > 0" for _ in patterns)
        resource_ids = [r[0] for r in conn.execute(f"SELECT id FROM resources WHERE {marks}", patterns)]
        parts = ["instr(s.data, ?) > 0"] * len(patterns)
        args: list[object] = list(patterns)
        filterable = patterns
        if resource_ids:
            parts.append(f"s.resource_id IN ({','.join(map(str, resource_ids))})")
            filterable = []
        if key == "error" and value.strip().lower() == "true":
            parts.append("s.status = ?")
            args.append(STATUS_ERROR)
            filterable = []
        return "(" + " OR ".join(parts) + ")", args, filterable

    def _resource(self, conn: sqlite3.Connection, rid: int) -> tuple[bytes, str, bytes, str]:
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
            (span.trace_id, span.span_id, _service_name(rs))
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
            (STATUS_ERROR, end_ns - lookback_ns, end_ns),
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
            used_bytes=self._used_bytes(conn),
            file_bytes=self.path.stat().st_size if self.path.exists() else 0,
        )

    # --- archive, summaries and RED data (meshtrace/store/archive.py, summaries.py, spm.py) ---
    def archive_trace(self, trace_id: bytes) -> bool:
        """Copy the stored trace into the archive; False when no span of it is stored."""
        trace = self.get_trace(trace_id)
        if trace is None:
            return False
        with closing(_connect(self.path)) as conn:
            archive.write(conn, trace_id, trace)
        return True

    def get_archived_trace(self, trace_id: bytes) -> ExportTraceServiceRequest | None:
        return archive.read(self._reader(), trace_id)

    def trace_summaries(self, trace_ids: Sequence[bytes]) -> dict[bytes, summaries.TraceSummary]:
        return summaries.trace_summaries(self._reader(), trace_ids)

    def span_counts(
        self, service: str, kinds: Collection[int], origin_ns: int, end_ns: int, bucket_ns: int
    ) -> list[spm.SpanCounts]:
        return spm.span_counts(self._reader(), service, kinds, origin_ns, end_ns, bucket_ns)
