"""The store's file: its tables, the schema version and the migration of older files, and the
layout facts its writer and readers share (the service a span is filed under, the Bloom filter
buckets, how many bytes the live pages hold).

Layout (why: compact and fast for the three questions a trace UI asks):
- `spans`: one row per span: the indexed columns (trace, span, parent, service, operation, start,
  duration, status) and the span itself as encoded OTLP `Span` bytes, with the ids (kept in their
  columns) cleared so they are not stored twice. Indexes: (trace_id, span_id, service_id), unique,
  for trace-by-id and the dependency join (covering the parent's side), (service_id, start_ns) for
  search (newest first, stopping at `limit`).
- `resources`: each distinct (Resource, InstrumentationScope) once; spans point at it.
- `services`, `operations`: the names the search form lists, with span counts so that eviction
  removes names whose spans are gone.
- `batches`: the last span rowid and wall time of every committed write. Rowids grow with each
  write, so eviction (size bound) and retention delete whole traces in the order their first span
  was written, with no per-trace bookkeeping on the ingest path.
- `tag_buckets`: per (service, minute of span start) a Bloom filter of the encoded `KeyValue`s of
  its spans (span, event and link attributes), written in the same transaction as the spans.
- `archive`: traces kept past retention (`archive.py`).
"""

from __future__ import annotations

import sqlite3
import zlib
from pathlib import Path

from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans

from meshtrace.model.jaeger import UNKNOWN_SERVICE
from meshtrace.store import archive
from meshtrace.store.protocol import StoreError

SCHEMA_VERSION = 4  # 2: tag_buckets, 3: archive, 4: unique spans (older files are migrated on open)
# PRAGMA application_id marks a database as a meshtrace trace store ("MSHT").
APPLICATION_ID = 0x4D534854

# Bloom filters of the attributes in each (service, minute): 2 bits of 2**16 per encoded KeyValue
# (the halves of its CRC-32), zlib-compressed (a sparse minute stores a few dozen bytes).
TAG_BUCKET_NS = 60 * 10**9
BLOOM_BYTES = 1 << 13
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


class SchemaVersionError(StoreError):
    """The database was written by a newer meshtrace."""


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def open_schema(conn: sqlite3.Connection, path: Path) -> None:
    """Create the schema in a new database, or check that an existing one is ours and readable
    and migrate it to SCHEMA_VERSION."""
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
    full = zlib.compress(b"\xff" * BLOOM_BYTES)
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


def service_name(resource_spans: ResourceSpans) -> str:
    """The service the spans of `resource_spans` are filed under."""
    for kv in resource_spans.resource.attributes:
        if kv.key == "service.name" and kv.value.WhichOneof("value") == "string_value":
            return kv.value.string_value or UNKNOWN_SERVICE
    return UNKNOWN_SERVICE


def used_bytes(conn: sqlite3.Connection) -> int:
    """The bytes of the live pages (the file minus its free pages): what `max_bytes` bounds."""
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    return int((pages - free) * page_size)
