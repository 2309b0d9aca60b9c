"""The per-(service, minute) attribute Bloom filters (`tag_buckets`): searches stay exact (every
attribute place and type is still found, across minutes, newest first), evicted minutes are
cleaned up, and a schema-1 file is migrated without losing matches."""

from __future__ import annotations

import random
import sqlite3
import time
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from meshtrace.store import TraceQuery, TraceStore
from meshtrace.store.schema import TAG_BUCKET_NS
from meshtrace.store.synthetic import BACKEND, mesh_trace
from tests.store.conftest import FakeClock, OlderFile

MINUTE = TAG_BUCKET_NS
# The start of a whole minute, a while ago, so traces can be placed in chosen minutes.
BASE = (time.time_ns() // MINUTE - 30) * MINUTE


def put(store: TraceStore, request: ExportTraceServiceRequest) -> None:
    store.write(request.SerializeToString())
    assert store.flush(10)


def backend_server(request: ExportTraceServiceRequest) -> Span:
    return request.resource_spans[1].scope_spans[0].spans[0]


def search(store: TraceStore, tags: dict[str, str], limit: int = 100) -> list[bytes]:
    return store.find_trace_ids(
        TraceQuery(
            service=BACKEND,
            start_min_ns=BASE - MINUTE,
            start_max_ns=BASE + 60 * MINUTE,
            tags=tags,
            limit=limit,
        )
    )


def bucket_rows(path: Path) -> list[tuple[int, int]]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT service_id, bucket FROM tag_buckets ORDER BY 1, 2").fetchall()


def test_every_attribute_place_and_type_is_found(store: TraceStore) -> None:
    request = mesh_trace(BASE + 5 * MINUTE, random.Random(1))
    span = backend_server(request)
    span.attributes.add(key="s", value=AnyValue(string_value="text"))
    span.attributes.add(key="i", value=AnyValue(int_value=-42))
    span.attributes.add(key="d", value=AnyValue(double_value=2.5))
    span.attributes.add(key="b", value=AnyValue(bool_value=True))
    span.events.add(name="e").attributes.add(key="in.event", value=AnyValue(string_value="x"))
    span.links.add(trace_id=bytes(range(16)), span_id=bytes(8)).attributes.add(
        key="in.link", value=AnyValue(int_value=7)
    )
    put(store, request)
    tid = span.trace_id
    for key, value in [
        ("s", "text"),
        ("i", "-42"),
        ("d", "2.5"),
        ("b", "true"),
        ("in.event", "x"),
        ("in.link", "7"),
        ("k8s.namespace.name", "default"),
        ("url.path", span.attributes[1].value.string_value),
    ]:
        assert search(store, {key: value}) == [tid], (key, value)
    for key, value in [("s", "other"), ("i", "41"), ("d", "2.6"), ("b", "false"), ("nope", "x")]:
        assert search(store, {key: value}) == [], (key, value)


def test_matches_in_several_minutes_come_newest_first(store: TraceStore) -> None:
    found = []
    for minute in range(10):
        request = mesh_trace(BASE + minute * MINUTE + 7 * 10**9, random.Random(minute))
        if minute in (1, 4, 5, 8):
            backend_server(request).attributes.add(key="tenant", value=AnyValue(string_value="blue"))
            found.append(backend_server(request).trace_id)
        put(store, request)
    assert search(store, {"tenant": "blue"}) == found[::-1]
    assert search(store, {"tenant": "blue"}, limit=3) == found[::-1][:3]
    assert search(store, {"tenant": "blue", "component": "proxy"}) == found[::-1]
    assert search(store, {"tenant": "green"}) == []


def test_evicted_minutes_leave_the_filters(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "traces.db"
    store = TraceStore(path, retention_s=0.3, maintenance_interval_s=0, clock=clock)
    store.open()
    try:
        old = mesh_trace(BASE, random.Random(1))
        backend_server(old).attributes.add(key="tenant", value=AnyValue(string_value="old"))
        put(store, old)
        assert len(bucket_rows(path)) == 2  # frontend and backend, one minute each
        clock.advance(0.4)
        new = mesh_trace(BASE + 3 * MINUTE, random.Random(2))
        put(store, new)  # the flush runs retention
        assert store.get_trace(backend_server(old).trace_id) is None
        assert {bucket for _, bucket in bucket_rows(path)} == {BASE // MINUTE + 3}
        assert search(store, {"tenant": "old"}) == []
        assert search(store, {"component": "proxy"}) == [backend_server(new).trace_id]
    finally:
        store.close()


def test_schema_1_file_is_migrated_and_old_spans_still_match(older_file: OlderFile) -> None:
    old = mesh_trace(BASE + MINUTE, random.Random(3))
    older_file.write(old)
    # what schema 1 wrote: no filters
    again = older_file.reopen_as(1, "DROP TABLE tag_buckets", "DROP TABLE archive")
    assert len(bucket_rows(older_file.path)) == 2
    assert search(again, {"component": "proxy"}) == [backend_server(old).trace_id]
    assert search(again, {"http.response.status_code": "200"}) == [backend_server(old).trace_id]
    newer = mesh_trace(BASE + MINUTE + 10**9, random.Random(4))
    put(again, newer)  # adds its bits to the migrated (all-ones) minute
    assert search(again, {"component": "proxy"}) == [
        backend_server(newer).trace_id,
        backend_server(old).trace_id,
    ]
