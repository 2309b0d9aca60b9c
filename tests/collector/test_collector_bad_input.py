"""Bad input over HTTP and gRPC gets the documented status; the collector keeps serving."""

from __future__ import annotations

import gzip
import json
import os
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest
import requests
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def request(
    spans: int = 1, trace_id: bytes = b"\x01" * 16, span_id: bytes = b"\x02" * 8
) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    ss = req.resource_spans.add().scope_spans.add()
    for i in range(spans):
        span = ss.spans.add(name=f"s{i}", trace_id=trace_id, span_id=span_id)
        span.start_time_unix_nano = 1
    return req


@pytest.fixture
def collector(file_collector: Callable[..., Any]) -> Any:
    return file_collector(args=("--set", "receivers.otlp.protocols.http.max_request_body_size=65536"))


def post(
    collector: Any, body: bytes, content_type: str = "application/x-protobuf", **headers: str
) -> requests.Response:
    return requests.post(
        f"http://{collector.http}/v1/traces",
        data=body,
        headers={"Content-Type": content_type, **headers},
        timeout=10,
    )


def test_http_good_protobuf_json_and_gzip(collector: Any) -> None:
    ok = post(collector, request().SerializeToString())
    assert (
        ok.status_code == 200 and ok.headers["Content-Type"] == "application/x-protobuf" and ok.content == b""
    )
    body = {
        "resourceSpans": [
            {"scopeSpans": [{"spans": [{"traceId": "01" * 16, "spanId": "03" * 8, "name": "j"}]}]}
        ]
    }
    ok = post(collector, json.dumps(body).encode(), "application/json")
    assert ok.status_code == 200 and ok.json() == {}
    zipped = gzip.compress(request().SerializeToString())
    assert post(collector, zipped, **{"Content-Encoding": "gzip"}).status_code == 200
    assert len(collector.spans(3)) == 3


def test_http_empty_protobuf_body_is_an_empty_request(collector: Any) -> None:
    assert post(collector, b"").status_code == 200


BAD_BODIES = {
    "random": (os.urandom(64) + b"\xff\xff\xff", "application/x-protobuf"),
    "truncated": (request(3).SerializeToString()[:-5], "application/x-protobuf"),
    "short-trace-id": (request(trace_id=b"\x01" * 5).SerializeToString(), "application/x-protobuf"),
    "long-span-id": (request(span_id=b"\x01" * 9).SerializeToString(), "application/x-protobuf"),
    "invalid-json": (b"{not json", "application/json"),
    "empty-json": (b"", "application/json"),
    "bad-hex-id": (
        b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "abc"}]}]}]}',
        "application/json",
    ),
    "wrong-shape": (b'{"resourceSpans": 5}', "application/json"),
}


def test_http_undecodable_is_400_with_a_status(collector: Any) -> None:
    for name, (body, content_type) in BAD_BODIES.items():
        response = post(collector, body, content_type)
        assert response.status_code == 400, name
        if content_type == "application/json":
            assert response.json()["code"] == 3 and response.json()["message"], name
        else:
            status = status_pb2.Status.FromString(response.content)
            assert status.code == 3 and status.message, name
    assert post(collector, request().SerializeToString()).status_code == 200


def test_http_other_statuses(collector: Any) -> None:
    assert post(collector, b"x", "text/plain").status_code == 415
    got = requests.get(f"http://{collector.http}/v1/traces", timeout=10)
    assert got.status_code == 405 and got.headers["Allow"] == "POST"
    assert requests.post(f"http://{collector.http}/v1/other", data=b"", timeout=10).status_code == 404
    assert post(collector, b"\x00" * 70000).status_code == 413
    bomb = gzip.compress(b"\x00" * 200_000)
    assert post(collector, bomb, **{"Content-Encoding": "gzip"}).status_code == 413
    assert post(collector, b"not gzip", **{"Content-Encoding": "gzip"}).status_code == 400
    # still serving
    assert post(collector, request().SerializeToString()).status_code == 200


def test_slow_client_does_not_block_others(collector: Any) -> None:
    host, port = collector.http.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as slow:
        slow.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n")
        slow.sendall(b"Content-Length: 1000\r\n\r\n" + b"\x0a")  # then stalls mid-body
        started = time.monotonic()
        assert post(collector, request().SerializeToString()).status_code == 200
        assert time.monotonic() - started < 5
        # ... nor shutdown: SIGTERM still ends the process promptly.
        started = time.monotonic()
        assert collector.proc.stop(signal.SIGTERM, timeout=15) == 0
        assert time.monotonic() - started < 10


def test_grpc_statuses(collector: Any) -> None:
    with grpc.insecure_channel(collector.grpc) as channel:
        export = channel.unary_unary(EXPORT)
        assert export(request().SerializeToString(), timeout=10) == b""
        for bad in (os.urandom(40) + b"\xff", request(trace_id=b"\x01" * 3).SerializeToString()):
            with pytest.raises(grpc.RpcError) as info:
                export(bad, timeout=10)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as info:
            export(b"\x00" * (5 * 1024 * 1024), timeout=10)  # over max_recv_msg_size_mib (4)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert export(request().SerializeToString(), timeout=10) == b""
