"""Trace search: the SQL for a `TraceQuery` and its plan over time.

An attribute `k=v` is the encoded `KeyValue` bytes inside the span bytes, so
`instr(data, <encoded KeyValue>)` finds it in C, for every encoding of v (string, int, double,
bool). The `tag_buckets` Bloom filters first rule out the minutes that cannot hold a match, so a
search whose tag matches nothing reads a few filters instead of testing every span in its window.
The spans are walked newest first through the (service_id, start_ns) index, stopping at `limit`
distinct traces.
"""

from __future__ import annotations

import sqlite3
import zlib
from contextlib import closing

from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from meshtrace.model.attributes import search_values
from meshtrace.model.jaeger import SPAN_KIND_BY_NAME, STATUS_BY_NAME
from meshtrace.store.protocol import MAX_SEARCH_LIMIT, TraceQuery
from meshtrace.store.schema import TAG_BUCKET_NS, bloom_bits


def find_trace_ids(conn: sqlite3.Connection, query: TraceQuery) -> list[bytes]:
    """Ids of the newest traces with a span matching `query` (at most `query.limit`)."""
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
        clause, clause_args, patterns = _tag_clause(conn, key, value)
        where.append(clause)
        args += clause_args
        if patterns:
            filtered.append(patterns)
    limit = max(1, min(query.limit, MAX_SEARCH_LIMIT))
    found: dict[bytes, None] = {}
    sql = f"SELECT s.trace_id FROM spans s WHERE {' AND '.join(where)} ORDER BY s.start_ns DESC"
    windows = (
        _candidate_windows(conn, row[0], query, filtered)
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


def attribute_patterns(key: str, value: str) -> list[bytes]:
    """Every encoded `KeyValue` that a search tag `key=value` can mean."""
    return [KeyValue(key=key, value=v).SerializeToString() for v in search_values(value)]


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
        args.append(Status.STATUS_CODE_ERROR)
        filterable = []
    return "(" + " OR ".join(parts) + ")", args, filterable
