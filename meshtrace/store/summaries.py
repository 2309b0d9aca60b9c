"""Trace summaries for api_v3's `/api/v3/trace-summaries`: computed from the indexed span columns
only (no span is decoded), with the rules of Jaeger's `querysvc/summary.go`:

- the root is the earliest-starting span without a parent; its service and name are the
  trace's root service and operation;
- an orphan is a span whose parent is not in the trace;
- per service: spans and spans with status Error, services sorted by name.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from opentelemetry.proto.trace.v1.trace_pb2 import Status

from meshtrace.store import batched


@dataclass(frozen=True)
class ServiceSummary:
    name: str
    span_count: int
    error_span_count: int


@dataclass(frozen=True)
class TraceSummary:
    trace_id: bytes
    root_service: str
    root_operation: str
    min_start_ns: int
    max_end_ns: int
    span_count: int
    error_span_count: int
    orphan_span_count: int
    services: list[ServiceSummary]


# span id, parent id, service, operation, start, duration, status
_Row = tuple[bytes, bytes | None, str, str, int, int, int]


def summarize(trace_id: bytes, rows: Sequence[_Row]) -> TraceSummary:
    span_ids = {row[0] for row in rows}
    per_service: dict[str, list[int]] = {}
    root: tuple[int, str, str] | None = None
    min_start = max_end = None
    errors = orphans = 0
    for _span_id, parent, service, name, start, duration, status in rows:
        counts = per_service.setdefault(service, [0, 0])
        counts[0] += 1
        if status == Status.STATUS_CODE_ERROR:
            counts[1] += 1
            errors += 1
        end = start + duration
        min_start = start if min_start is None else min(min_start, start)
        max_end = end if max_end is None else max(max_end, end)
        if parent is None:
            if root is None or start < root[0]:
                root = (start, service, name)
        elif parent not in span_ids:
            orphans += 1
    return TraceSummary(
        trace_id=trace_id,
        root_service=root[1] if root else "",
        root_operation=root[2] if root else "",
        min_start_ns=min_start or 0,
        max_end_ns=max_end or 0,
        span_count=len(rows),
        error_span_count=errors,
        orphan_span_count=orphans,
        services=[ServiceSummary(n, c[0], c[1]) for n, c in sorted(per_service.items())],
    )


def trace_summaries(conn: sqlite3.Connection, trace_ids: Sequence[bytes]) -> dict[bytes, TraceSummary]:
    """The summary of each stored trace among `trace_ids` (unknown ids are left out)."""
    rows: dict[bytes, list[_Row]] = {}
    ids = list(dict.fromkeys(trace_ids))
    for tid, *row in batched.rows_in(
        conn,
        "SELECT s.trace_id, s.span_id, s.parent_id, sv.name, o.name, s.start_ns, s.duration_ns, s.status"
        " FROM spans s JOIN services sv ON sv.id = s.service_id JOIN operations o ON o.id = s.op_id"
        " WHERE s.trace_id IN ({marks})",
        ids,
    ):
        rows.setdefault(tid, []).append(tuple(row))
    return {tid: summarize(tid, spans) for tid, spans in rows.items()}
