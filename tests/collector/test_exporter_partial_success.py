"""A backend's `partial_success` answer reaches the logs (issue 10): the Collector's otlp and
otlphttp exporters log "Partial success response" with the message and the dropped span count,
and count the batch as sent (the backend counted what it rejected). Before, meshtrace's
exporters ignored the answer."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def answer() -> ExportTraceServiceResponse:
    response = ExportTraceServiceResponse()
    response.partial_success.rejected_spans = 1
    response.partial_success.error_message = "span 0: trace_id is all zeros"
    return response


@pytest.fixture
def http_backend() -> Iterator[int]:
    """An OTLP/HTTP backend answering every export with a partial success, in the request's
    encoding."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", "0")))
            json = self.headers.get("content-type") == "application/json"
            body = json_format.MessageToJson(answer()).encode() if json else answer().SerializeToString()
            self.send_response(200)
            self.send_header("content-type", self.headers.get("content-type", ""))
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


@pytest.fixture
def grpc_backend() -> Iterator[int]:
    def export(request: bytes, context: grpc.ServicerContext) -> bytes:
        return answer().SerializeToString()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    handler = grpc.unary_unary_rpc_method_handler(export)
    service = grpc.method_handlers_generic_handler(
        "opentelemetry.proto.collector.trace.v1.TraceService", {"Export": handler}
    )
    server.add_generic_rpc_handlers((service,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port
    server.stop(0)


def agent(exporter: str, settings: dict[str, Any]) -> dict[str, Any]:
    return {
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": "127.0.0.1:0"}}}},
        "exporters": {exporter: settings},
        "service": {
            "pipelines": {"traces": {"receivers": ["otlp"], "exporters": [exporter]}},
            "telemetry": {"metrics": {"address": "127.0.0.1:0"}},
        },
    }


def send(address: str, spans: int) -> None:
    req = ExportTraceServiceRequest()
    ss = req.resource_spans.add().scope_spans.add()
    for i in range(spans):
        ss.spans.add(name=f"s{i}", trace_id=bytes([7]) * 16, span_id=(i + 1).to_bytes(8, "big"))
    with grpc.insecure_channel(address) as channel:
        channel.unary_unary(EXPORT)(req.SerializeToString(), timeout=10)


@pytest.mark.parametrize(
    ("exporter", "encoding"), [("otlp_http", "proto"), ("otlp_http", "json"), ("otlp_grpc", "")]
)
def test_partial_success_is_logged_and_the_batch_counts_as_sent(
    run_collector: Callable[..., Any],
    collector_metric: Callable[..., float],
    wait_until: Callable[..., Any],
    http_backend: int,
    grpc_backend: int,
    exporter: str,
    encoding: str,
) -> None:
    if exporter == "otlp_http":
        settings: dict[str, Any] = {"endpoint": f"http://127.0.0.1:{http_backend}", "encoding": encoding}
    else:
        settings = {"endpoint": f"127.0.0.1:{grpc_backend}", "tls": {"insecure": True}}
    proc = run_collector(agent(exporter, settings), "otlp-grpc", "metrics")
    send(proc.address("otlp-grpc"), 3)
    line = proc.wait_for_line("partial success response")
    assert "span 0: trace_id is all zeros" in line and "dropped_spans=1" in line
    wait_until(lambda: collector_metric(proc, "otelcol_exporter_sent_spans") >= 3, "3 spans sent", timeout=10)
    assert collector_metric(proc, "otelcol_exporter_sent_spans") == 3
    assert collector_metric(proc, "otelcol_exporter_send_failed_spans") == 0
