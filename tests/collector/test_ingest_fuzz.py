"""Issue 10: the whole receiver -> store path, fuzzed with hypothesis through a real collector
process. Generated OTLP batches with extreme values (times 0, 2^63, 2^64-1, end before start;
empty, all-zero, short and long ids; huge attribute values; odd unicode) go over gRPC, OTLP/HTTP
protobuf and OTLP/HTTP JSON; every span must be stored or counted as refused, never both, never
neither: counted by the answer (`partial_success`, or a 400 for a malformed request), by the
collector's own metrics, and by the store (the query API and the database file)."""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import requests
from fuzzing import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from meshtrace.model import otlp_json

MAX_TIME = 2**63 - 1
NOW = 1_700_000_000_000_000_000
_unique = itertools.count(1)

# An id: what kind it is; valid ones are made unique per example when the batch is built. Ids of
# the wrong length make the whole request malformed, so a batch has at most one (`Batch.corrupt`).
ids = st.sampled_from(["valid", "valid", "valid", "empty", "zero"])
times = st.one_of(
    st.sampled_from([0, 1, NOW, MAX_TIME, 2**63, 2**64 - 1]),
    st.integers(0, 2**64 - 1),
)
odd_text = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cs"])
    | st.sampled_from(["\x00", "\u202e", "\U0001f600"]),
    max_size=20,
)
values = st.one_of(
    odd_text.map(lambda s: AnyValue(string_value=s)),
    st.integers(0, 50_000).map(lambda n: AnyValue(string_value="\u00e9" * n)),  # up to 100 kB
    st.sampled_from([-(2**63), 2**63 - 1, 0]).map(lambda i: AnyValue(int_value=i)),
    st.sampled_from([float("nan"), float("inf"), -0.0, 1e308]).map(lambda d: AnyValue(double_value=d)),
    st.binary(max_size=50).map(lambda b: AnyValue(bytes_value=b)),
)


@dataclass
class SpanPlan:
    trace: str
    span: str
    parent: str
    start: int
    end: int
    name: str
    attributes: list[tuple[str, AnyValue]]


spans = st.builds(
    SpanPlan,
    trace=ids,
    span=ids,
    parent=st.sampled_from(["empty", "zero", "valid"]),
    start=times,
    end=times,
    name=odd_text,
    attributes=st.lists(st.tuples(odd_text, values), max_size=2),
)


@dataclass
class Batch:
    resources: list[list[list[SpanPlan]]]  # resource_spans -> scope_spans -> spans
    corrupt: tuple[str, str] | None  # (id field, "short" or "long") of the first span, if any


batches = st.builds(
    Batch,
    resources=st.lists(st.lists(st.lists(spans, max_size=4), min_size=1, max_size=2), min_size=1, max_size=2),
    corrupt=st.none()
    | st.none()
    | st.none()
    | st.tuples(st.sampled_from(["trace", "span", "parent"]), st.sampled_from(["short", "long"])),
)


def make_id(kind: str, size: int, example: int, n: int) -> bytes:
    if kind == "empty":
        return b""
    if kind == "zero":
        return bytes(size)
    if kind == "short":
        return b"\x01" * (size - 3)
    if kind == "long":
        return b"\x01" * (size + 1)
    # Valid and unique across examples: 0xfe, the example number, the span's number.
    return b"\xfe" + example.to_bytes(size // 2 - 1, "big") + n.to_bytes(size // 2, "big")


def build(batch: Batch) -> ExportTraceServiceRequest:
    example = next(_unique)
    counter = itertools.count(1)
    request = ExportTraceServiceRequest()
    for scopes in batch.resources:
        rs = request.resource_spans.add()
        rs.resource.attributes.add(key="service.name").value.string_value = "fuzz"
        for planned in scopes:
            ss = rs.scope_spans.add()
            for p in planned:
                n = next(counter)
                span: Span = ss.spans.add(
                    # Traces are shared by a few spans: trace number n % 2.
                    trace_id=make_id(p.trace, 16, example, n % 2 + 1),
                    span_id=make_id(p.span, 8, example, n),
                    parent_span_id=make_id(p.parent, 8, example, n + 1000),
                    name=p.name,
                    start_time_unix_nano=p.start,
                    end_time_unix_nano=p.end,
                )
                for key, value in p.attributes:
                    span.attributes.add(key=key).value.CopyFrom(value)
    first = next(iter(all_spans(request)), None)
    if batch.corrupt and first is not None:
        field, kind = batch.corrupt
        size = 16 if field == "trace" else 8
        setattr(
            first,
            {"trace": "trace_id", "span": "span_id", "parent": "parent_span_id"}[field],
            make_id(kind, size, 0, 0),
        )
    return request


def all_spans(request: ExportTraceServiceRequest) -> list[Span]:
    return [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]


def malformed(span: Span) -> bool:
    """An id of the wrong length: the request is undecodable, as in the Collector."""
    return any(
        v and len(v) != n for v, n in ((span.trace_id, 16), (span.span_id, 8), (span.parent_span_id, 8))
    )


def storable(span: Span) -> bool:
    return (
        any(span.trace_id)
        and any(span.span_id)
        and span.start_time_unix_nano <= MAX_TIME
        and span.end_time_unix_nano <= MAX_TIME
    )


def test_every_span_is_stored_or_counted_as_refused(
    run_collector: Callable[..., Any], collector_metric: Callable[..., float], tmp_path: Path
) -> None:
    db = tmp_path / "traces.db"
    config = {
        "receivers": {
            "otlp": {"protocols": {"grpc": {"endpoint": "127.0.0.1:0"}, "http": {"endpoint": "127.0.0.1:0"}}}
        },
        # No batch processor: an answer comes after the store's commit, so reads need no polling.
        "exporters": {"store": {"path": str(db)}},
        "extensions": {"query": {"endpoint": "127.0.0.1:0"}},
        "service": {
            "extensions": ["query"],
            "pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["store"]}},
            "telemetry": {"metrics": {"address": "127.0.0.1:0"}},
        },
    }
    proc = run_collector(config, "otlp-grpc", "otlp-http", "query", "metrics")
    channel = grpc.insecure_channel(proc.address("otlp-grpc"))
    stub = TraceServiceStub(channel)
    http = requests.Session()
    query = f"http://{proc.address('query')}"
    traces_url = f"http://{proc.address('otlp-http')}/v1/traces"

    def counts() -> tuple[float, float, float, int]:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            rows = conn.execute("SELECT count(*) FROM spans").fetchone()[0]
        return (
            collector_metric(proc, "otelcol_receiver_accepted_spans"),
            collector_metric(proc, "otelcol_receiver_refused_spans"),
            collector_metric(proc, "otelcol_exporter_send_failed_spans"),
            rows,
        )

    def send(request: ExportTraceServiceRequest, transport: str) -> int | None:
        """The number of spans the answer says were refused; None for a malformed-request answer."""
        if transport == "grpc":
            try:
                answer = stub.Export(request, timeout=20)
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, exc
                return None
            return answer.partial_success.rejected_spans
        if transport == "http-json":
            body, content_type = otlp_json.dumps(request), "application/json"
        else:
            body, content_type = request.SerializeToString(), "application/x-protobuf"
        got = http.post(traces_url, data=body, headers={"Content-Type": content_type}, timeout=20)
        if got.status_code == 400:
            return None
        assert got.status_code == 200, got.text
        if transport == "http-json":
            return int(got.json().get("partialSuccess", {}).get("rejectedSpans", 0))
        return ExportTraceServiceResponse.FromString(got.content).partial_success.rejected_spans

    def check_one(batch: Batch, transport: str) -> None:
        request = build(batch)  # fresh ids for each transport
        sent = all_spans(request)
        before = counts()
        refused = send(request, transport)
        after = counts()
        accepted, refused_metric, failed, rows = (a - b for a, b in zip(after, before, strict=True))
        assert failed == 0  # the edge refused everything the store cannot hold
        if refused is None:  # malformed: refused whole by the status, nothing stored
            assert any(malformed(s) for s in sent)
            assert (accepted, rows, refused_metric) == (0, 0, 0)  # undecodable: spans not counted
            return
        expected = [s for s in sent if storable(s)]
        assert refused == len(sent) - len(expected) == refused_metric
        assert accepted == rows == len(expected)
        # ... and they are the right spans, found through the query API.
        by_trace: dict[bytes, set[str]] = {}
        for s in expected:
            by_trace.setdefault(s.trace_id, set()).add(s.span_id.hex())
        for trace_id, span_ids in by_trace.items():
            got = http.get(f"{query}/api/traces/{trace_id.hex()}", timeout=20)
            assert got.status_code == 200, got.text
            assert sorted(s["spanID"] for s in got.json()["data"][0]["spans"]) == sorted(span_ids)

    @settings(
        max_examples=examples(30),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(batches)
    def check(batch: Batch) -> None:
        for transport in ("grpc", "http-protobuf", "http-json"):
            check_one(batch, transport)

    try:
        check()
    finally:
        channel.close()
        http.close()
