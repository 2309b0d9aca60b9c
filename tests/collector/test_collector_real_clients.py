"""The official opentelemetry-python OTLP exporters (gRPC and HTTP) against a running collector;
the file exporter's output is checked field by field."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode


def _send(exporter: SpanExporter, service: str) -> dict[str, Any]:
    """Two spans (a SERVER parent with attributes and an error child) through `exporter`."""
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("meshtrace-test", "1.2")
    with tracer.start_as_current_span("GET /orders", kind=SpanKind.SERVER) as parent:
        parent.set_attribute("http.request.method", "GET")
        parent.set_attribute("http.response.status_code", 200)
        with tracer.start_as_current_span("db.query", kind=SpanKind.CLIENT) as child:
            child.set_attribute("db.system", "postgresql")
            child.set_status(Status(StatusCode.ERROR, "timeout"))
    provider.shutdown()
    p, c = parent.get_span_context(), child.get_span_context()
    assert isinstance(parent, ReadableSpan) and isinstance(child, ReadableSpan)
    return {
        "trace_id": f"{p.trace_id:032x}",
        "parent_id": f"{p.span_id:016x}",
        "child_id": f"{c.span_id:016x}",
        "parent_times": (parent.start_time, parent.end_time),
        "child_times": (child.start_time, child.end_time),
    }


@pytest.mark.parametrize("transport", ["grpc", "http", "grpc-gzip", "http-gzip", "http-deflate"])
def test_official_exporter_spans_arrive_field_by_field(
    file_collector: Callable[..., Any], transport: str
) -> None:
    collector = file_collector()
    if transport.startswith("grpc"):
        compression = grpc.Compression.Gzip if transport.endswith("gzip") else grpc.Compression.NoCompression
        exporter: SpanExporter = GrpcExporter(
            endpoint=f"http://{collector.grpc}", insecure=True, compression=compression
        )
    else:
        _, _, encoding = transport.partition("-")
        exporter = HttpExporter(
            endpoint=f"http://{collector.http}/v1/traces", compression=Compression(encoding or "none")
        )
    sent = _send(exporter, f"svc-{transport}")

    found = collector.spans(2)
    assert len(found) == 2
    by_name = {span["name"]: (resource, span) for resource, span in found}
    resource, parent = by_name["GET /orders"]
    _, child = by_name["db.query"]
    assert collector.attributes(resource)["service.name"] == f"svc-{transport}"

    assert parent["traceId"] == child["traceId"] == sent["trace_id"]
    assert parent["spanId"] == sent["parent_id"]
    assert "parentSpanId" not in parent
    assert child["spanId"] == sent["child_id"]
    assert child["parentSpanId"] == sent["parent_id"]
    assert parent["kind"] == 2  # SERVER, as an integer enum
    assert child["kind"] == 3  # CLIENT
    assert (int(parent["startTimeUnixNano"]), int(parent["endTimeUnixNano"])) == sent["parent_times"]
    assert (int(child["startTimeUnixNano"]), int(child["endTimeUnixNano"])) == sent["child_times"]
    assert isinstance(parent["startTimeUnixNano"], str)  # 64-bit ints are strings in OTLP/JSON
    assert collector.attributes(parent) == {"http.request.method": "GET", "http.response.status_code": 200}
    assert collector.attributes(child) == {"db.system": "postgresql"}
    assert child["status"] == {"code": 2, "message": "timeout"}
    assert parent.get("status", {}) == {}


def test_self_metrics_count_accepted_and_sent_spans(file_collector: Callable[..., Any]) -> None:
    import requests

    collector = file_collector()
    _send(GrpcExporter(endpoint=f"http://{collector.grpc}", insecure=True), "svc")
    collector.spans(2)
    text = requests.get(f"http://{collector.metrics}/metrics", timeout=5).text
    assert "# TYPE otelcol_receiver_accepted_spans counter" in text
    assert 'otelcol_receiver_accepted_spans{receiver="otlp",transport="grpc"} 2.0' in text
    assert 'otelcol_exporter_sent_spans{exporter="file"} 2.0' in text
    assert "otelcol_process_memory_rss " in text
    assert "_total" not in text


def test_health_check_answers_when_running(file_collector: Callable[..., Any]) -> None:
    import requests

    collector = file_collector()
    response = requests.get(f"http://{collector.proc.address('health-check')}/", timeout=5)
    assert response.status_code == 200
    assert response.json()["status"] == "Server available"
