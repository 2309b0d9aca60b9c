"""Sampling decisions, failure answers and flags, bad input, streaming and live config, through
real sidecar processes (the frontend sidecar's outbound listener used as an app's HTTP_PROXY)."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from typing import Any

from fuzzing import examples
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from sidecar_helpers import raw, via_proxy, via_proxy_direct

BACKEND_FQDN = "backend.default.svc.cluster.local"
Mesh = Any


def rid(value: int, reason: str = "4") -> str:
    """A UUIDv4 x-request-id whose first 8 hex digits are `value` (Envoy's sampling integer)."""
    return f"{value:08x}-1111-{reason}222-8333-444444444444"


def server_spans(mesh: Mesh) -> list[Span]:
    return [s for svc, s in mesh.received.spans if s.kind == Span.SPAN_KIND_SERVER]


def test_sampling_by_request_id_and_forced(mesh_factory: Any) -> None:
    mesh = mesh_factory(10.0)
    url = "http://backend:8080/echo"
    # 10%: Envoy samples when int(first 8 hex) % 10000 < 1000
    status, body, _ = via_proxy(mesh, url, {"x-request-id": rid(10000 + 999)})
    assert status == 200
    assert json.loads(body)["x-request-id"][14] == "9"
    status, body, _ = via_proxy(mesh, url, {"x-request-id": rid(1000)})
    seen = json.loads(body)
    assert seen["x-request-id"][14] == "4"
    assert seen["traceparent"].endswith("-00")  # not sampled, context still propagated
    # forced and client-forced win over the percentage
    _, body, _ = via_proxy(mesh, url, {"x-request-id": rid(5000), "x-envoy-force-trace": "1"})
    assert json.loads(body)["x-request-id"][14] == "a"
    _, body, _ = via_proxy(mesh, url, {"x-request-id": rid(5000), "x-client-trace-id": "abc"})
    assert json.loads(body)["x-request-id"][14] == "b"
    # an incoming traceparent decides (the caller's sampler already did)
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    _, body, _ = via_proxy(mesh, url, {"x-request-id": rid(5000), "traceparent": tp})
    assert json.loads(body)["traceparent"].startswith("00-0af7651916cd43dd8448eb211c80319c-")
    spans = mesh.received.wait(8)  # 4 sampled requests x (client + server)
    mesh.settled()  # nothing else may arrive
    assert len(mesh.received.spans) == 8
    joined = [s for _, s in spans if s.trace_id.hex() == "0af7651916cd43dd8448eb211c80319c"]
    client = next(s for s in joined if s.kind == Span.SPAN_KIND_CLIENT)
    assert client.parent_span_id.hex() == "b7ad6b7169203331"


def test_a_request_id_that_is_no_uuid_is_never_traced(mesh_factory: Any) -> None:
    """Request ids minted by nginx or an API gateway cannot carry Envoy's trace reason."""
    mesh = mesh_factory(100.0)
    for request_id in ("deadbeef-from-nginx", "0123456789abcdef0123456789abcdef"):
        status, body, _ = via_proxy(mesh, "http://backend:8080/echo", {"x-request-id": request_id})
        assert status == 200
        seen = json.loads(body)
        assert seen["x-request-id"] == request_id  # forwarded as it came
        assert seen["traceparent"].endswith("-00")  # context propagated, not sampled
    # a caller's sampled traceparent still decides
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    _, body, _ = via_proxy(mesh, "http://backend:8080/echo", {"x-request-id": "nginx-1", "traceparent": tp})
    assert json.loads(body)["traceparent"].endswith("-01")
    mesh.received.wait(2)
    mesh.settled()
    assert {s.trace_id.hex() for _, s in mesh.received.spans} == {"0af7651916cd43dd8448eb211c80319c"}


def test_first_proxy_decides(mesh_factory: Any) -> None:
    """Backend at 100%, frontend at 0%: the backend follows the frontend's 'no'."""
    mesh = mesh_factory(0.0, backend_sampling=100.0)
    for _ in range(5):
        status, body, _ = via_proxy(mesh, "http://backend.default:8080/echo")
        assert status == 200
        assert json.loads(body)["traceparent"].endswith("-00")
    # and a request straight to the backend (no caller decision) is sampled there
    status, _, _ = via_proxy_direct(mesh, "/echo")
    assert status == 200
    spans = mesh.received.wait(1)
    mesh.settled()
    assert len(mesh.received.spans) == 1 and spans[0][0] == "backend.default"


def test_non_uuid_request_id_is_never_traced(mesh_factory: Any) -> None:
    mesh = mesh_factory(100.0)
    for _ in range(2):
        status, body, _ = via_proxy(mesh, "http://backend:8080/echo", {"x-request-id": "nginx-abc123"})
        assert status == 200
        assert json.loads(body)["x-request-id"] == "nginx-abc123"
    mesh.settled()
    assert mesh.received.spans == []
    warned = [line for line in mesh.frontend.output().splitlines() if "not a 36-character UUID" in line]
    assert len(warned) == 1


def test_dead_upstream_is_503_uf_urx(mesh_factory: Any) -> None:
    mesh = mesh_factory(100.0, dead_backend=True)
    status, body, _ = via_proxy(mesh, "http://backend:8080/echo")
    assert status == 503
    assert body.startswith(b"upstream connect error or disconnect/reset before headers")
    spans = mesh.received.wait(1)
    a = {kv.key: kv.value.string_value for kv in spans[0][1].attributes}
    assert a["response_flags"] == "UF,URX" and a["error"] == "true" and a["http.status_code"] == "503"
    assert " 503 UF,URX " in mesh.frontend.wait_for_line("UF,URX")
    fe = mesh.metrics(mesh.frontend)
    flags = {s.labels["response_flags"] for s in fe["istio_requests"]}
    assert flags == {"UF,URX"}


def test_unknown_host_passes_through(mesh_factory: Any) -> None:
    mesh = mesh_factory(100.0)
    host, port = mesh.backend_app
    status, body, _ = via_proxy(mesh, f"http://{host}:{port}/echo")
    assert status == 200
    spans = mesh.received.wait(1)
    a = {kv.key: kv.value.string_value for kv in spans[0][1].attributes}
    assert a["upstream_cluster"] == "PassthroughCluster"
    assert spans[0][1].name == f"{host}:{port}/*"
    assert "x-envoy-peer-metadata" not in json.loads(body)


def test_bad_input_answers_and_listener_survives(mesh_factory: Any) -> None:
    mesh = mesh_factory(0.0, "--header-timeout", "0.5")
    inbound = mesh.backend.address("inbound")
    smuggle = (
        b"POST /echo HTTP/1.1\r\nHost: backend\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    assert raw(inbound, smuggle).startswith(b"HTTP/1.1 400")
    big = b"GET /echo HTTP/1.1\r\nHost: backend\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n"
    assert raw(inbound, big).startswith(b"HTTP/1.1 431")
    assert raw(inbound, b"GARBAGE\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert raw(inbound, b"GET /echo HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 400")  # no Host
    # slowloris: a head that never completes is cut off
    started = time.monotonic()
    out = raw(inbound, b"GET /echo HTTP/1.1\r\nHost: b", 5.0, (0.2, b"a"), (0.2, b"c"))
    assert out.startswith(b"HTTP/1.1 408") and time.monotonic() - started < 3
    # an invalid traceparent is ignored, not an error
    status, body, _ = via_proxy(mesh, "http://backend:8080/echo", {"traceparent": "00-XYZ-01"})
    assert status == 200 and json.loads(body)["traceparent"] != "00-XYZ-01"
    status, _, _ = via_proxy_direct(mesh, "/echo")
    assert status == 200


def test_streamed_chunked_body_and_expect_continue(mesh_factory: Any) -> None:
    mesh = mesh_factory(0.0)
    outbound = mesh.frontend.address("outbound")
    head = (
        b"POST http://backend:8080/echo HTTP/1.1\r\nHost: backend:8080\r\nTransfer-Encoding: chunked\r\n"
        b"Expect: 100-continue\r\nConnection: close\r\n\r\n"
    )
    out = raw(outbound, head, 5.0, (0.1, b"5\r\nhello\r\n"), (0.1, b"6\r\n world\r\n0\r\n\r\n"))
    assert out.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200")
    body = json.loads(out.split(b"\r\n\r\n", 2)[2])
    assert body["x-body"] == "hello world"
    assert "expect" not in body


def test_keepalive_pipelined_requests(mesh_factory: Any) -> None:
    mesh = mesh_factory(0.0)
    req = b"GET http://backend:8080/echo HTTP/1.1\r\nHost: backend:8080\r\n\r\n"
    out = raw(
        mesh.frontend.address("outbound"),
        req * 3 + req.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"),
    )
    assert out.count(b"HTTP/1.1 200") == 4


def test_upstream_timeout_and_reset(mesh_factory: Any) -> None:
    mesh = mesh_factory(100.0, "--upstream-timeout", "0.5")
    status, body, _ = via_proxy(mesh, "http://backend:8080/slow")
    assert status == 504 and body == b"upstream request timeout"
    out = raw(
        mesh.frontend.address("outbound"), b"GET http://backend:8080/reset HTTP/1.1\r\nHost: backend\r\n\r\n"
    )
    assert out.startswith(b"HTTP/1.1 200") and len(out) < 2000  # truncated: the upstream died mid-body
    flags = set()
    for _, s in mesh.received.wait(4):
        flags.add({kv.key: kv.value.string_value for kv in s.attributes}["response_flags"])
    assert {"UT", "UC"} <= flags


def test_live_config_change_from_file(mesh_factory: Any) -> None:
    mesh = mesh_factory(100.0)
    with urllib.request.urlopen(f"http://{mesh.frontend.address('admin')}/config_dump", timeout=5) as r:
        before = json.loads(r.read())["version"]
    doc = mesh.frontend_doc
    doc["tracing"]["client"]["random_sampling_percentage"] = 0.0
    doc["tracing"]["client"]["custom_tags"] = {"bad": {"literal": {}, "header": {}}}
    mesh.frontend.config_path.write_text(json.dumps(doc))
    mesh.frontend.wait_for_line("refused, keeping the last good config")
    doc["tracing"]["client"]["custom_tags"] = {}
    mesh.frontend.config_path.write_text(json.dumps(doc))
    mesh.frontend.wait_for_line("applied")
    with urllib.request.urlopen(f"http://{mesh.frontend.address('admin')}/config_dump", timeout=5) as r:
        after = json.loads(r.read())
    assert after["version"] != before
    assert after["config"]["tracing"]["client"]["random_sampling_percentage"] == 0.0
    _, body, _ = via_proxy(mesh, "http://backend:8080/echo")
    assert json.loads(body)["traceparent"].endswith("-00")


def test_admin_and_health_ports(mesh_factory: Any) -> None:
    mesh = mesh_factory(0.0)
    via_proxy(mesh, "http://backend:8080/echo")
    admin = mesh.frontend.address("admin")
    with urllib.request.urlopen(f"http://{admin}/stats", timeout=5) as r:
        stats = r.read().decode()
    assert "outbound.downstream_rq_total: 1" in stats
    with urllib.request.urlopen(f"http://{admin}/clusters", timeout=5) as r:
        assert f"outbound|8080||{BACKEND_FQDN}::" in r.read().decode()
    with urllib.request.urlopen(f"http://{admin}/ready", timeout=5) as r:
        assert r.status == 200
    with urllib.request.urlopen(f"http://{mesh.frontend.address('health')}/healthz/ready", timeout=5) as r:
        assert r.status == 200
    with urllib.request.urlopen(f"http://{admin}/stats/prometheus", timeout=5) as r:
        assert "meshtrace_sidecar_spans_dropped_total" in r.read().decode()


def test_disable_span_reporting_still_propagates(mesh_factory: Any) -> None:
    mesh = mesh_factory(100.0, disable_span_reporting=True)
    _, body, _ = via_proxy(mesh, "http://backend:8080/echo")
    assert json.loads(body)["traceparent"].endswith("-01")
    mesh.settled()
    assert mesh.received.spans == []


def test_zipkin_provider_gets_v2_json(mesh_factory: Any, harness: Any, servers: Any) -> None:
    ip = harness.loopback()
    rx, got = harness.zipkin_receiver(ip)
    servers(rx)
    provider = {"name": "zipkin", "type": "zipkin", "protocol": "zipkin", "path": "/api/v2/spans",
                "endpoint": f"http://{ip}:{rx.port}", "timeout_s": 2.0}  # fmt: skip
    mesh = mesh_factory(100.0, provider=provider, propagation={"read": ["b3"], "write": ["b3"]})
    status, body, _ = via_proxy(mesh, "http://backend:8080/echo")
    assert status == 200
    seen = json.loads(body)
    assert "traceparent" not in seen and "x-b3-traceid" in seen  # the provider's B3 only
    deadline = time.monotonic() + 10
    while len(got) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    kinds = {(s["localEndpoint"]["serviceName"], s["kind"]) for s in got}
    assert kinds == {("frontend.default", "CLIENT"), ("backend.default", "SERVER")}
    client = next(s for s in got if s["kind"] == "CLIENT")
    assert client["tags"]["upstream_cluster"] == f"outbound|8080||{BACKEND_FQDN}"
    assert client["traceId"] == seen["x-b3-traceid"]


def test_large_bodies_stream_both_ways(mesh_factory: Any) -> None:
    """3 MB up and back through two sidecars: read backpressure and write flow control hold."""
    mesh = mesh_factory(0.0)
    payload = b"0123456789abcdef" * (3 * 65536)
    status, body, headers = via_proxy(mesh, "http://backend:8080/echo", {"content-type": "x/y"}, payload)
    assert status == 200
    assert json.loads(body)["x-body"].encode() == payload
    assert int(headers["content-length"]) == len(body)


def test_fuzzed_requests_against_a_running_listener(mesh_factory: Any) -> None:
    """Random request heads at the inbound listener: always an HTTP answer or a close, never a
    crash, and the listener keeps serving."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    mesh = mesh_factory(0.0, "--header-timeout", "1")
    inbound = mesh.backend.address("inbound")
    line = st.sampled_from(
        [b"GET /echo HTTP/1.1", b"POST / HTTP/1.1", b"GET http://x/ HTTP/1.0", b"\x00\xff"]
    )
    header = st.tuples(st.binary(min_size=0, max_size=20), st.binary(min_size=0, max_size=40)).map(
        lambda kv: kv[0] + b": " + kv[1]
    )

    @settings(max_examples=examples(60), deadline=None, suppress_health_check=list(HealthCheck))
    @given(line, st.lists(header, max_size=6), st.binary(max_size=64))
    def probe(first: bytes, headers: list[bytes], tail: bytes) -> None:
        data = first + b"\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + tail
        out = raw(inbound, data, 3.0)
        assert out == b"" or out.startswith(b"HTTP/1.1 ")

    probe()
    status, _, _ = via_proxy_direct(mesh, "/echo")
    assert status == 200
    assert "Traceback" not in mesh.backend.output()


def test_client_half_close_still_gets_its_answer(mesh_factory: Any) -> None:
    mesh = mesh_factory(0.0)
    host, port = mesh.frontend.address("outbound").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"GET http://backend:8080/echo HTTP/1.1\r\nHost: backend:8080\r\n\r\n")
        s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    assert out.startswith(b"HTTP/1.1 200")


def test_malformed_chunked_body_is_400(mesh_factory: Any) -> None:
    mesh = mesh_factory(0.0)
    head = (
        b"POST http://backend:8080/echo HTTP/1.1\r\nHost: backend:8080\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    out = raw(mesh.frontend.address("outbound"), head, 5.0, (0.1, b"5\r\nhello\r\nZZ\r\n"))
    assert out.startswith(b"HTTP/1.1 400")
    status, _, _ = via_proxy(mesh, "http://backend:8080/echo")
    assert status == 200


def test_head_answer_then_get_on_the_same_pooled_connections(mesh: Mesh) -> None:
    """A HEAD answer carries a Content-Length but no body: the next answer on the same pooled
    upstream connection (both sidecars reuse theirs) must still be read as an answer."""
    out = raw(
        mesh.frontend.address("outbound"),
        b"HEAD http://backend:8080/echo HTTP/1.1\r\nHost: backend:8080\r\n\r\n"
        b"GET http://backend:8080/echo HTTP/1.1\r\nHost: backend:8080\r\nConnection: close\r\n\r\n",
    )
    first, _, rest = out.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200 ") and b"content-length: 1234" in first.lower()
    assert rest.startswith(b"HTTP/1.1 200 "), rest[:200]
    _, _, body = rest.partition(b"\r\n\r\n")
    assert json.loads(body)["host"] == "backend:8080"
