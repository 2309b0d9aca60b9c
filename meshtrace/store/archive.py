"""Jaeger's trace archive: traces a user chose to keep past retention (`POST /api/archive/{id}`).

The `archive` table holds each archived trace whole, as one zlib-compressed encoded
`ExportTraceServiceRequest`. The store's eviction (retention and the size bound) deletes from
`spans` only, so an archived trace stays until the file is removed; its pages still count towards
the store's `max_bytes`. Archiving is rare and user-driven, so it writes through its own short
connection (SQLite's busy timeout waits for the writer thread's transaction) instead of the
writer thread's queue.
"""

from __future__ import annotations

import sqlite3
import zlib

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

ARCHIVE_SCHEMA = """
CREATE TABLE archive (
    id INTEGER PRIMARY KEY, trace_id BLOB NOT NULL UNIQUE, archived_ns INTEGER NOT NULL,
    data BLOB NOT NULL);
"""


def migrate_v2(conn: sqlite3.Connection, version: int) -> None:
    """Schema 2 -> 3: add the (empty) archive table."""
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(ARCHIVE_SCHEMA)
    conn.execute(f"PRAGMA user_version={version}")
    conn.execute("COMMIT")


def write(conn: sqlite3.Connection, trace_id: bytes, trace: ExportTraceServiceRequest, now_ns: int) -> None:
    """Keep `trace`, archived at `now_ns` (replacing an earlier archived copy, as archiving again
    in Jaeger does)."""
    data = zlib.compress(trace.SerializeToString(), 6)
    conn.execute(
        "INSERT INTO archive (trace_id, archived_ns, data) VALUES (?, ?, ?) ON CONFLICT (trace_id)"
        " DO UPDATE SET archived_ns = excluded.archived_ns, data = excluded.data",
        (trace_id, now_ns, data),
    )


def read(conn: sqlite3.Connection, trace_id: bytes) -> ExportTraceServiceRequest | None:
    row = conn.execute("SELECT data FROM archive WHERE trace_id = ?", (trace_id,)).fetchone()
    if row is None:
        return None
    return ExportTraceServiceRequest.FromString(zlib.decompress(row[0]))
