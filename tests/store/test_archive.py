"""The trace archive: a copy eviction never deletes, and a schema-2 file gains it on open."""

from __future__ import annotations

import random
import sqlite3
import time
from contextlib import closing
from pathlib import Path

from meshtrace.store import TraceStore
from meshtrace.store.synthetic import mesh_trace, mesh_traces
from tests.store.conftest import FakeClock, OlderFile


def test_archive_survives_the_size_bound(tmp_path: Path) -> None:
    store = TraceStore(tmp_path / "traces.db", max_bytes=2 << 20, maintenance_interval_s=0)
    store.open()
    try:
        first = mesh_trace(time.time_ns(), random.Random(5))
        trace_id = first.resource_spans[0].scope_spans[0].spans[0].trace_id
        store.write(first.SerializeToString()).result(10)
        assert store.archive_trace(trace_id)
        assert not store.archive_trace(b"\x07" * 16)  # nothing stored under that id
        for i in range(8):  # well past 2 MiB: the first traces are evicted
            store.write(mesh_traces(500, time.time_ns(), 10**6, seed=i).SerializeToString()).result(30)
        assert store.flush(30)
        assert store.get_trace(trace_id) is None
        archived = store.get_archived_trace(trace_id)
        assert archived is not None and archived == first
    finally:
        store.close()


def test_schema_2_file_is_migrated(older_file: OlderFile) -> None:
    request = mesh_trace(time.time_ns(), random.Random(6))
    trace_id = request.resource_spans[0].scope_spans[0].spans[0].trace_id
    older_file.write(request)
    again = older_file.reopen_as(2, "DROP TABLE archive")  # what schema 2 wrote: no archive
    assert again.get_trace(trace_id) == request
    assert again.get_archived_trace(trace_id) is None
    assert again.archive_trace(trace_id)
    assert again.get_archived_trace(trace_id) == request


def test_archive_time_comes_from_the_store_clock(tmp_path: Path, clock: FakeClock) -> None:
    store = TraceStore(tmp_path / "traces.db", clock=clock)
    store.open()
    try:
        request = mesh_trace(time.time_ns(), random.Random(7))
        trace_id = request.resource_spans[0].scope_spans[0].spans[0].trace_id
        store.write(request.SerializeToString()).result(10)
        clock.advance(3600)
        assert store.archive_trace(trace_id)
        with closing(sqlite3.connect(store.path)) as conn:
            written = conn.execute("SELECT written_ns FROM batches").fetchone()[0]
            archived = conn.execute("SELECT archived_ns FROM archive").fetchone()[0]
        assert (written, archived) == (clock() - 3600 * 10**9, clock())
    finally:
        store.close()
