"""A span is stored once: a resent OTLP batch, a batch holding the same span twice or a file
imported twice adds nothing (schema 4's unique span key), and a schema-3 file that already holds
copies is cleaned when it is opened."""

from __future__ import annotations

import random
import sqlite3
import time
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from meshtrace.store import TraceStore
from meshtrace.store.schema import SCHEMA_VERSION
from meshtrace.store.synthetic import mesh_trace
from tests.store.conftest import OlderFile

NOW = time.time_ns()


def _operation_counts(path: Path) -> list[tuple[str, int]]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT name, spans FROM operations ORDER BY name").fetchall()


def _span_count(request: ExportTraceServiceRequest) -> int:
    return sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)


def test_a_resent_batch_is_stored_once(store: TraceStore) -> None:
    request = mesh_trace(NOW, random.Random(1))
    trace_id = request.resource_spans[0].scope_spans[0].spans[0].trace_id
    payload = request.SerializeToString()
    assert store.write(payload).result(10) == 0
    counts = _operation_counts(store.path)
    assert store.new_span_count(request) == 0
    # again alone, then twice in one writer batch (the writer joins queued payloads)
    store.write(payload).result(10)
    store.write(payload)
    store.write(payload).result(10)
    assert store.get_trace(trace_id) == request
    assert store.stats().spans == _span_count(request)
    assert store.spans_written == _span_count(request)
    assert _operation_counts(store.path) == counts  # every operation counted once


def test_a_batch_mixing_new_and_stored_spans_stores_the_new_ones(store: TraceStore) -> None:
    rng = random.Random(2)
    first, second = mesh_trace(NOW, rng), mesh_trace(NOW, rng)
    store.write(first.SerializeToString()).result(10)
    both = ExportTraceServiceRequest()
    both.MergeFrom(first)
    both.MergeFrom(second)
    assert store.new_span_count(both) == _span_count(second)
    store.write(both.SerializeToString()).result(10)
    assert store.stats().spans == _span_count(first) + _span_count(second)
    assert sum(n for _, n in _operation_counts(store.path)) == store.stats().spans


def test_one_span_id_in_two_services_is_two_spans(store: TraceStore) -> None:
    # Zipkin's shared spans: the client and the server report the same span id
    request = mesh_trace(NOW, random.Random(3))
    client_rs, server_rs = request.resource_spans[0], request.resource_spans[1]
    server_rs.scope_spans[0].spans[0].span_id = client_rs.scope_spans[0].spans[0].span_id
    store.write(request.SerializeToString()).result(10)
    assert store.stats().spans == _span_count(request)


def test_schema_3_file_with_copies_is_migrated(older_file: OlderFile) -> None:
    request = mesh_trace(NOW, random.Random(4))
    trace_id = request.resource_spans[0].scope_spans[0].spans[0].trace_id
    older_file.write(request)
    counts = _operation_counts(older_file.path)
    again = older_file.reopen_as(
        3,  # what schema 3 did with a resent batch: a second copy
        "DROP INDEX spans_trace",
        "CREATE INDEX spans_trace ON spans (trace_id, span_id, service_id)",
        "INSERT INTO spans SELECT * FROM spans",
        "UPDATE operations SET spans = spans * 2",
    )
    assert SCHEMA_VERSION == 4
    assert again.get_trace(trace_id) == request
    assert again.stats().spans == _span_count(request)
    assert _operation_counts(older_file.path) == counts
    again.write(request.SerializeToString()).result(10)
    assert again.stats().spans == _span_count(request)
