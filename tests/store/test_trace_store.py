"""Units for the embedded trace store: write/read, search, bounds, retention, restart, schema."""

from __future__ import annotations

import random
import sqlite3
import time
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from meshtrace.store import (
    SchemaVersionError,
    StoreError,
    StoreFullError,
    TraceQuery,
    TraceStore,
    batched,
    default_path,
)
from meshtrace.store.synthetic import BACKEND, FRONTEND, mesh_trace, mesh_traces
from tests.store.conftest import FakeClock

NOW = time.time_ns()
HOUR = 3600 * 10**9


def put(store: TraceStore, request: ExportTraceServiceRequest) -> None:
    store.write(request.SerializeToString())
    assert store.flush(10)


def trace_ids(request: ExportTraceServiceRequest) -> list[bytes]:
    return list(dict.fromkeys(s.trace_id for s in spans_of(request).values()))


def query(**kw: object) -> TraceQuery:
    args: dict[str, object] = {"service": BACKEND, "start_min_ns": NOW - HOUR, "start_max_ns": NOW + HOUR}
    args.update(kw)
    return TraceQuery(**args)  # type: ignore[arg-type]


def spans_of(request: ExportTraceServiceRequest) -> dict[bytes, Span]:
    return {s.span_id: s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans}


def test_default_path_prefers_meshtrace_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MESHTRACE_DATA_DIR", str(tmp_path / "d"))
    assert default_path() == tmp_path / "d" / "traces.db"
    monkeypatch.delenv("MESHTRACE_DATA_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "x"))
    assert default_path() == tmp_path / "x" / "meshtrace" / "traces.db"


def test_trace_round_trips_byte_for_byte(store: TraceStore) -> None:
    sent = mesh_trace(NOW, random.Random(1), error=True)
    put(store, sent)
    (tid,) = trace_ids(sent)
    got = store.get_trace(tid)
    assert got is not None
    assert spans_of(got) == spans_of(sent)
    resources = sorted(rs.resource.SerializeToString() for rs in got.resource_spans)
    assert resources == sorted(rs.resource.SerializeToString() for rs in sent.resource_spans)
    assert {ss.scope.name for rs in got.resource_spans for ss in rs.scope_spans} == {"meshtrace.sidecar"}
    assert store.get_trace(bytes(16)) is None


def test_services_and_operations(store: TraceStore) -> None:
    put(store, mesh_trace(NOW, random.Random(2)))
    assert store.services() == [BACKEND, FRONTEND]
    ops = store.operations(BACKEND)
    assert {(o.name, o.kind) for o in ops} == {
        ("backend.default.svc.cluster.local:8080/*", Span.SPAN_KIND_SERVER),
        ("SELECT items", Span.SPAN_KIND_INTERNAL),
    }
    assert [o.name for o in store.operations(BACKEND, Span.SPAN_KIND_INTERNAL)] == ["SELECT items"]
    assert store.operations("nope") == []


def test_search_newest_first_with_limit(store: TraceStore) -> None:
    batch = mesh_traces(30, NOW - 30 * 10**9, 10**9, error_every=0)
    put(store, batch)
    ids = trace_ids(batch)
    found = store.find_trace_ids(query(limit=5))
    assert found == list(reversed(ids))[:5]
    assert store.find_trace_ids(query(service="unknown")) == []
    window = store.find_trace_ids(query(start_min_ns=NOW - 30 * 10**9, start_max_ns=NOW - 25 * 10**9))
    assert set(window) <= set(ids[:6])
    assert len(window) >= 5


def test_search_by_attribute_of_every_type_and_resource(store: TraceStore) -> None:
    rng = random.Random(3)
    ok, failed = mesh_trace(NOW, rng), mesh_trace(NOW, rng, error=True)
    put(store, ok)
    put(store, failed)
    (ok_id,), (failed_id,) = trace_ids(ok), trace_ids(failed)
    assert store.find_trace_ids(query(tags={"http.response.status_code": "500"})) == [failed_id]
    both = {ok_id, failed_id}
    assert set(store.find_trace_ids(query(tags={"component": "proxy", "istio.namespace": "default"}))) == both
    assert store.find_trace_ids(query(tags={"error": "true"})) == [failed_id]
    assert store.find_trace_ids(query(tags={"otel.status_code": "ERROR"})) == [failed_id]
    assert store.find_trace_ids(query(tags={"exception.message": "database is locked"})) == [failed_id]
    assert set(store.find_trace_ids(query(tags={"k8s.namespace.name": "default"}))) == {ok_id, failed_id}
    assert set(store.find_trace_ids(query(tags={"span.kind": "internal"}))) == {ok_id, failed_id}
    assert store.find_trace_ids(query(tags={"http.response.status_code": "404"})) == []
    assert store.find_trace_ids(query(tags={"no.such": "x"})) == []


def test_typed_attributes_match_their_text(store: TraceStore) -> None:
    request = mesh_trace(NOW, random.Random(4))
    span = request.resource_spans[1].scope_spans[0].spans[0]
    span.attributes.add(key="retry", value=AnyValue(bool_value=False))
    span.attributes.add(key="ratio", value=AnyValue(double_value=0.25))
    put(store, request)
    (tid,) = trace_ids(request)
    assert store.find_trace_ids(query(tags={"retry": "false"})) == [tid]
    assert store.find_trace_ids(query(tags={"ratio": "0.25"})) == [tid]
    assert store.find_trace_ids(query(tags={"retry": "true"})) == []


def test_search_by_operation_and_duration(store: TraceStore) -> None:
    rng = random.Random(5)
    request = mesh_trace(NOW, rng)
    put(store, request)
    (tid,) = trace_ids(request)
    db = next(s for s in spans_of(request).values() if s.name == "SELECT items")
    dur = db.end_time_unix_nano - db.start_time_unix_nano
    exact = query(operation="SELECT items", duration_min_ns=dur, duration_max_ns=dur)
    assert store.find_trace_ids(exact) == [tid]
    assert store.find_trace_ids(query(operation="SELECT items", duration_min_ns=dur + 1)) == []
    assert store.find_trace_ids(query(operation="nope")) == []


def test_dependencies_count_calls_and_errors(store: TraceStore) -> None:
    put(store, mesh_traces(10, NOW - 10**9, 10**6, error_every=5))
    (link,) = store.dependencies(NOW + HOUR, 2 * HOUR)
    assert (link.parent, link.child, link.call_count, link.error_count) == (FRONTEND, BACKEND, 10, 2)
    assert store.dependencies(NOW - 2 * HOUR, HOUR) == []


def test_data_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "traces.db"
    first = TraceStore(path)
    first.open()
    sent = mesh_traces(5, NOW, 10**6)
    first.write(sent.SerializeToString())
    first.close()  # close flushes what is pending
    again = TraceStore(path)
    again.open()
    try:
        assert set(again.get_traces(trace_ids(sent))) == set(trace_ids(sent))
        assert again.services() == [BACKEND, FRONTEND]
        put(again, mesh_trace(NOW, random.Random(9)))
        assert again.stats().traces == 6
    finally:
        again.close()


def test_newer_schema_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "traces.db"
    s = TraceStore(path)
    s.open()
    s.close()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version=99")
    with pytest.raises(SchemaVersionError, match=r"newer meshtrace.*schema 99"):
        TraceStore(path).open()


def test_foreign_files_are_refused(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database at all" * 200)
    with pytest.raises(StoreError, match="not a meshtrace trace store"):
        TraceStore(garbage).open()
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE t (x)")
    with pytest.raises(StoreError, match="not a meshtrace trace store"):
        TraceStore(other).open()


def test_size_bound_evicts_the_first_written_traces(tmp_path: Path) -> None:
    store = TraceStore(tmp_path / "traces.db", max_bytes=2 << 20, maintenance_interval_s=0)
    store.open()
    try:
        batches = [mesh_traces(200, NOW + i * 10**9, 10**6, seed=i) for i in range(40)]
        for batch in batches:
            put(store, batch)
        stats = store.stats()
        assert stats.used_bytes <= 2 << 20
        assert 0 < stats.traces < 40 * 200
        assert store.get_traces(trace_ids(batches[0])) == {}  # the oldest went first
        assert set(store.get_traces(trace_ids(batches[-1]))) == set(trace_ids(batches[-1]))
        assert store.spans_evicted > 0
        assert store.services() == [BACKEND, FRONTEND]
    finally:
        store.close()


def test_reads_by_trace_id_cover_more_ids_than_one_statement_holds(store: TraceStore) -> None:
    # More trace ids than SQLite takes as parameters of one statement: read a chunk at a time.
    sent = mesh_traces(2 * batched.CHUNK + 7, NOW, 10**6, seed=3)
    ids = trace_ids(sent)
    assert store.new_span_count(sent) == len(spans_of(sent))
    put(store, sent)
    assert set(store.get_traces(ids)) == set(ids)
    assert set(store.trace_summaries(ids)) == set(ids)
    assert store.new_span_count(sent) == 0


def test_retention_drops_traces_written_before_the_cutoff(tmp_path: Path, clock: FakeClock) -> None:
    store = TraceStore(tmp_path / "traces.db", retention_s=0.3, maintenance_interval_s=0, clock=clock)
    store.open()
    try:
        old = mesh_traces(3, NOW, 10**6, seed=1)
        put(store, old)
        clock.advance(0.2)
        put(store, mesh_trace(NOW, random.Random(2)))  # each flush runs maintenance
        assert set(store.get_traces(trace_ids(old))) == set(trace_ids(old))  # 0.2 s old: kept
        clock.advance(0.2)
        put(store, mesh_trace(NOW, random.Random(3)))
        assert store.get_traces(trace_ids(old)) == {}  # 0.4 s old: gone, whole traces
        assert store.stats().traces == 2
    finally:
        store.close()


def test_operations_of_evicted_traces_disappear(tmp_path: Path, clock: FakeClock) -> None:
    store = TraceStore(tmp_path / "traces.db", retention_s=0.2, maintenance_interval_s=0, clock=clock)
    store.open()
    try:
        request = mesh_trace(NOW, random.Random(1))
        request.resource_spans[0].scope_spans[0].spans[0].name = "rare-operation"
        put(store, request)
        assert "rare-operation" in {o.name for o in store.operations(FRONTEND)}
        clock.advance(0.3)
        put(store, mesh_trace(NOW, random.Random(2)))
        assert "rare-operation" not in {o.name for o in store.operations(FRONTEND)}
    finally:
        store.close()


def test_backpressure_refuses_instead_of_buffering_without_bound(tmp_path: Path) -> None:
    path = tmp_path / "traces.db"
    store = TraceStore(path, max_pending_bytes=64 << 10)
    store.open()
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # the writer thread now waits for the lock
        payload = mesh_trace(NOW, random.Random(1)).SerializeToString()
        with pytest.raises(StoreFullError):
            for _ in range(10_000):
                store.write(payload)
        assert store.pending_bytes <= (64 << 10) + len(payload)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
        assert store.flush(30)
        store.close()


def test_undecodable_payload_is_dropped_and_the_rest_kept(store: TraceStore) -> None:
    good = mesh_trace(NOW, random.Random(1))
    bad = store.write(b"\xff\xff\xff garbage")
    committed = store.write(good.SerializeToString())
    assert committed.result(10) == 0
    with pytest.raises(StoreError, match="not an encoded ExportTraceServiceRequest"):
        bad.result(10)
    assert store.get_trace(trace_ids(good)[0]) is not None
    assert store.write_errors >= 1


def test_write_completes_when_committed(store: TraceStore) -> None:
    sent = mesh_trace(NOW, random.Random(1))
    store.write(sent.SerializeToString()).result(10)
    reader = sqlite3.connect(store.path)  # another connection sees it: it is committed
    try:
        assert reader.execute("SELECT count(*) FROM spans").fetchone()[0] == 4
    finally:
        reader.close()


def test_spans_with_invalid_ids_are_dropped_and_counted(store: TraceStore) -> None:
    request = mesh_trace(NOW, random.Random(1))
    spans = request.resource_spans[0].scope_spans[0].spans
    spans[0].trace_id = b"\x01\x02"
    spans[1].span_id = bytes(8)
    assert store.write(request.SerializeToString()).result(10) == 2  # dropped, and said so
    assert store.stats().spans == 2


def test_a_span_the_store_cannot_hold_costs_no_other_span(store: TraceStore) -> None:
    """Issue 10, finding 1: one span at 2^63 ns (a valid OTLP fixed64, over SQLite's INTEGER)
    rolled back the whole write, losing every span batched with it."""
    good = [mesh_trace(NOW, random.Random(i)) for i in range(3)]
    poisoned = mesh_trace(NOW, random.Random(9))
    poisoned.resource_spans[0].scope_spans[0].spans[1].start_time_unix_nano = 2**63
    blocker = sqlite3.connect(store.path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # hold the writer so that all four land in one batch
    try:
        futures = [store.write(r.SerializeToString()) for r in (good[0], poisoned, good[1], good[2])]
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert [f.result(10) for f in futures] == [0, 1, 0, 0]
    assert store.stats().spans == 4 * 4 - 1 and store.spans_dropped == 1
    for request in (*good, poisoned):
        assert store.get_trace(trace_ids(request)[0]) is not None
    # The writer's caches survived the rollbacks: later writes reuse names and resources.
    put(store, mesh_trace(NOW, random.Random(10)))
    assert store.stats().spans == 4 * 5 - 1 and set(store.services()) == {BACKEND, FRONTEND}


def test_a_failing_batch_fails_its_callers_and_the_writer_lives_on(
    store: TraceStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from meshtrace.store import ingest

    def boom(self: object, request: object, now_ns: int) -> int:
        raise RuntimeError("bug")

    with monkeypatch.context() as patch:
        patch.setattr(ingest.Ingest, "write", boom)
        failed = store.write(mesh_trace(NOW, random.Random(1)).SerializeToString())
        with pytest.raises(StoreError, match="bug"):
            failed.result(10)
    store.write(mesh_trace(NOW, random.Random(2)).SerializeToString()).result(10)
    assert store.stats().spans == 4
