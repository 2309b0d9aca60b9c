"""Issue 10, findings 1 and 2, through real collector processes: spans that cannot be stored are
refused at the edge (OTLP `partial_success`, Zipkin 400), counted in
`otelcol_receiver_refused_spans`, and never cost other spans."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import requests
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from meshtrace.model import otlp_json

GOOD_TRACE = b"\x0a" * 16
NOW = 1_700_000_000_000_000_000


def request(*spans: tuple[bytes, bytes, int]) -> ExportTraceServiceRequest:
    """One resource and scope holding spans given as (trace id, span id, start time)."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.add(key="service.name").value.string_value = "refusals"
    ss = rs.scope_spans.add()
    for i, (trace_id, span_id, start) in enumerate(spans):
        ss.spans.add(
            name=f"s{i}",
            trace_id=trace_id,
            span_id=span_id,
            start_time_unix_nano=start,
            end_time_unix_nano=start,
        )
    return req


def with_invalid_ids(span_id: bytes) -> ExportTraceServiceRequest:
    """A valid span and three with ids OTLP calls invalid (empty / all-zero trace id, all-zero span id)."""
    return request(
        (GOOD_TRACE, span_id, NOW),
        (b"", b"\x01" * 8, NOW),
        (bytes(16), b"\x02" * 8, NOW),
        (GOOD_TRACE, bytes(8), NOW),
    )


def test_invalid_ids_are_refused_with_partial_success(
    file_collector: Callable[..., Any], collector_metric: Callable[..., float]
) -> None:
    """Finding 2: such spans got 200 and were skipped silently (stored and counted nowhere)."""
    collector = file_collector()
    with grpc.insecure_channel(collector.grpc) as channel:
        answer = TraceServiceStub(channel).Export(with_invalid_ids(b"\x0b" * 8), timeout=10)
    assert answer.partial_success.rejected_spans == 3
    assert "spans[1].trace_id" in answer.partial_success.error_message

    url = f"http://{collector.http}/v1/traces"
    body = with_invalid_ids(b"\x0c" * 8).SerializeToString()
    got = requests.post(url, data=body, headers={"Content-Type": "application/x-protobuf"}, timeout=10)
    assert got.status_code == 200 and got.headers["Content-Type"] == "application/x-protobuf"
    partial = ExportTraceServiceResponse.FromString(got.content).partial_success
    assert partial.rejected_spans == 3 and "trace_id" in partial.error_message

    got = requests.post(
        url,
        data=otlp_json.dumps(with_invalid_ids(b"\x0d" * 8)),
        timeout=10,
        headers={"Content-Type": "application/json"},
    )
    assert got.status_code == 200
    partial_json = got.json()["partialSuccess"]
    assert partial_json["rejectedSpans"] == "3" and "3 spans refused" in partial_json["errorMessage"]

    # Every refused span is counted, every accepted one exported: 3 + 3 + 3 refused, 3 stored.
    assert sorted(span["spanId"] for _, span in collector.spans(3)) == ["0b" * 8, "0c" * 8, "0d" * 8]
    proc = collector.proc
    assert collector_metric(proc, "otelcol_receiver_refused_spans", transport="grpc") == 3
    assert collector_metric(proc, "otelcol_receiver_refused_spans", transport="http") == 6
    assert collector_metric(proc, "otelcol_receiver_accepted_spans") == 3


def test_a_request_of_only_invalid_spans_is_refused_whole(
    file_collector: Callable[..., Any], collector_metric: Callable[..., float]
) -> None:
    collector = file_collector()
    with grpc.insecure_channel(collector.grpc) as channel:
        answer = TraceServiceStub(channel).Export(request((bytes(16), b"\x01" * 8, NOW)), timeout=10)
    assert answer.partial_success.rejected_spans == 1
    assert collector_metric(collector.proc, "otelcol_receiver_refused_spans") == 1
    assert collector_metric(collector.proc, "otelcol_receiver_accepted_spans") == 0


def test_a_span_at_2_pow_63_costs_no_other_clients_span(
    meshtrace_process: Any,
    default_collector_args: list[str],
    tmp_path: Path,
    collector_metric: Callable[..., float],
    wait_until: Callable[..., Any],
) -> None:
    """Finding 1: in the default pipeline (batch -> store) one span starting at 2^63 ns was
    answered 200, then failed the store's transaction, and batch dropped every span batched
    with it, other clients' acknowledged spans included."""
    proc = meshtrace_process(default_collector_args, env={"MESHTRACE_DATA_DIR": str(tmp_path)})
    proc.wait_for_listeners("query", "otlp-grpc", "otlp-http", "metrics", timeout=60)
    base = f"http://{proc.address('query')}"

    with grpc.insecure_channel(proc.address("otlp-grpc")) as channel:
        answer = TraceServiceStub(channel).Export(request((b"\x0e" * 16, b"\x01" * 8, 2**63)), timeout=10)
    assert answer.partial_success.rejected_spans == 1
    assert "start_time_unix_nano" in answer.partial_success.error_message
    poison_json = otlp_json.dumps(request((b"\x0f" * 16, b"\x01" * 8, NOW)))
    poison_json = poison_json.replace(
        f'"endTimeUnixNano":"{NOW}"'.encode(), f'"endTimeUnixNano":"{2**64 - 1}"'.encode()
    )
    got = requests.post(
        f"http://{proc.address('otlp-http')}/v1/traces",
        data=poison_json,
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert got.json()["partialSuccess"]["rejectedSpans"] == "1"

    # Another client, in the same batch window: the official SDK exporter.
    provider = TracerProvider(resource=Resource.create({"service.name": "bystander"}))
    provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"http://{proc.address('otlp-grpc')}", insecure=True))
    )
    tracer = provider.get_tracer("bystander")
    with tracer.start_as_current_span("root") as root:
        for i in range(20):
            with tracer.start_as_current_span(f"child-{i}"):
                pass
    trace_id = format(root.get_span_context().trace_id, "032x")
    provider.shutdown()

    def stored() -> int:
        got = requests.get(f"{base}/api/traces/{trace_id}", timeout=10)
        return len(got.json()["data"][0]["spans"]) if got.status_code == 200 else 0

    assert wait_until(lambda: stored() == 21, "the bystander's 21 spans")
    assert collector_metric(proc, "otelcol_receiver_refused_spans") == 2
    assert collector_metric(proc, "otelcol_receiver_accepted_spans") == 21
    assert collector_metric(proc, "otelcol_exporter_send_failed_spans") == 0


def test_zipkin_refuses_a_body_with_a_span_it_cannot_store_and_counts_it(
    meshtrace_process: Any,
    default_collector_args: list[str],
    tmp_path: Path,
    collector_metric: Callable[..., float],
) -> None:
    """Zipkin has no partial success: the body is refused whole (400 naming the field), and all
    its spans count as refused (before: not counted, or an end time over 2^63 answered 202)."""
    proc = meshtrace_process(default_collector_args, env={"MESHTRACE_DATA_DIR": str(tmp_path)})
    proc.wait_for_listeners("zipkin", "query", "metrics", timeout=60)
    url = f"http://{proc.address('zipkin')}/api/v2/spans"
    good = {"traceId": "1" * 32, "id": "2" * 16, "name": "ok", "timestamp": 1_700_000_000_000_000}
    zero = {**good, "traceId": "0" * 32}
    late = {**good, "timestamp": 2**63 // 1000 - 1, "duration": 10}
    for bad, field in ((zero, "spans[1].traceId"), (late, "spans[1].duration")):
        got = requests.post(
            url, data=json.dumps([good, bad]), headers={"Content-Type": "application/json"}, timeout=10
        )
        assert got.status_code == 400 and field in got.text, got.text
    assert collector_metric(proc, "otelcol_receiver_refused_spans", receiver="zipkin") == 4
    assert (
        requests.get(f"http://{proc.address('query')}/api/traces/{'1' * 32}", timeout=10).status_code == 404
    )
    assert requests.post(url, data=json.dumps([good]), timeout=10).status_code == 202
