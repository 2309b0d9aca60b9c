"""gRPC through two sidecars: a grpcio client (the frontend app) -> frontend sidecar outbound (h2c
prior knowledge) -> backend sidecar inbound (h2c, or h2 over mTLS) -> a grpcio server. Spans go to
the real collector (OTLP/HTTP receiver, file exporter); metrics are read from :15090."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import yaml
from grpc_apps import EchoApp, H2EchoApp, channel, method
from sidecar_helpers import scrape, spans_in

BACKEND_FQDN = "backend.default.svc.cluster.local"


@dataclass
class GrpcMesh:
    frontend: Any
    backend: Any
    app: EchoApp
    channel: grpc.Channel
    spans_file: Path
    harness: Any

    def samples(self, proc: Any, name: str, **labels: str) -> list[Any]:
        return [s for s in scrape(proc).get(name, []) if all(s.labels.get(k) == v for k, v in labels.items())]


def _collector(meshtrace_process: Any, tmp_path: Path) -> tuple[Any, Path]:
    out = tmp_path / "spans.jsonl"
    cfg = {
        "receivers": {"otlp": {"protocols": {"http": {"endpoint": "127.0.0.1:0"}}}},
        "exporters": {"file": {"path": str(out), "flush_interval": "0s"}},
        "service": {
            "pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["file"]}},
            "telemetry": {"metrics": {"address": "127.0.0.1:0"}},
        },
    }
    (tmp_path / "collector.yaml").write_text(yaml.safe_dump(cfg))
    proc = meshtrace_process(["collector", "--config", str(tmp_path / "collector.yaml")])
    proc.wait_for_listeners("otlp-http")
    return proc, out


def build_grpc_mesh(
    meshtrace_process: Any, tmp_path: Path, harness: Any, app_factory: Any
) -> Iterator[GrpcMesh]:
    collector, out = _collector(meshtrace_process, tmp_path)
    endpoint = f"http://{collector.address('otlp-http')}"
    fe_ip, be_ip = harness.loopback(), harness.loopback()
    app = app_factory(be_ip)
    try:
        fe_registered = harness.service("frontend", fe_ip, harness.free_port(fe_ip))
        be_doc = harness.config_doc("backend", endpoint, 100.0, fe_registered)
        be = harness.start_sidecar(meshtrace_process, tmp_path, "backend", be_ip, app.port, be_doc)
        fe_doc = harness.config_doc(
            "frontend", endpoint, 100.0, harness.service("backend", be_ip, be.listeners["inbound"][1])
        )
        fe = harness.start_sidecar(
            meshtrace_process, tmp_path, "frontend", fe_ip, harness.free_port(fe_ip), fe_doc
        )
        ch = channel(fe.address("outbound"), "backend:8080")
        yield GrpcMesh(fe, be, app, ch, out, harness)
        ch.close()
    finally:
        app.close()


@pytest.fixture
def gmesh(meshtrace_process: Any, tmp_path: Path, harness: Any) -> Iterator[GrpcMesh]:
    yield from build_grpc_mesh(meshtrace_process, tmp_path, harness, EchoApp)


def attrs(span: dict[str, Any]) -> dict[str, str]:
    return {a["key"]: a["value"].get("stringValue", "") for a in span["attributes"]}


def test_unary_joined_trace_and_grpc_tags(gmesh: GrpcMesh, wait_until: Callable[..., Any]) -> None:
    call = method(gmesh.channel, "unary", "Metadata")
    seen = json.loads(call(b"x", timeout=10, metadata=[("user-agent-x", "pytest")]))
    spans = wait_until(lambda: len(spans_in(gmesh.spans_file)) >= 2 and spans_in(gmesh.spans_file), "2 spans")
    by = {(svc, s["kind"]): s for svc, s in spans}
    client = by[("frontend.default", 3)]
    server = by[("backend.default", 2)]
    assert client["traceId"] == server["traceId"]
    assert server["parentSpanId"] == client["spanId"]
    # the app saw the backend sidecar's SERVER span as parent, in gRPC metadata (W3C and B3)
    assert seen["traceparent"].split("-")[2] == bytes.fromhex(_b64hex(server["spanId"])).hex()
    assert seen["x-b3-spanid"] == _b64hex(server["spanId"])
    for span in (client, server):
        a = attrs(span)
        assert a["http.protocol"] == "HTTP/2"
        assert a["grpc.status_code"] == "0"
        assert a["grpc.path"] == "/mesh.Echo/Metadata"
        assert a["grpc.authority"] == "backend:8080"
        assert a["grpc.content_type"].startswith("application/grpc")
        assert "error" not in a
    assert attrs(client)["upstream_cluster"] == f"outbound|8080||{BACKEND_FQDN}"
    assert attrs(server)["upstream_cluster"].startswith("inbound|")
    src = gmesh.samples(gmesh.frontend, "istio_requests", reporter="source")
    assert src and src[0].labels["request_protocol"] == "grpc"
    assert src[0].labels["grpc_response_status"] == "0"
    assert src[0].labels["response_code"] == "200"
    assert src[0].labels["destination_workload"] == "backend"
    dst = gmesh.samples(gmesh.backend, "istio_requests", reporter="destination")
    assert dst and dst[0].labels["source_workload"] == "frontend"
    assert dst[0].labels["grpc_response_status"] == "0"


def _b64hex(value: str) -> str:
    """The collector's file exporter writes ids as hex (OTLP/JSON)."""
    return value.lower()


def test_streaming_kinds_and_message_counts(gmesh: GrpcMesh) -> None:
    ch = gmesh.channel
    assert method(ch, "client", "ClientStream")(iter([b"a" * 10] * 7), timeout=10) == b"7:70"
    got = list(method(ch, "server", "ServerStream")(b"5:1000", timeout=10))
    assert [len(m) for m in got] == [1000] * 5
    answers = list(method(ch, "bidi", "Bidi")(iter([b"1", b"2", b"3"]), timeout=10))
    assert answers == [b"echo:1", b"echo:2", b"echo:3"]
    req = gmesh.samples(gmesh.frontend, "istio_request_messages", reporter="source")
    resp = gmesh.samples(gmesh.frontend, "istio_response_messages", reporter="source")
    assert sum(s.value for s in req) == 7 + 1 + 3
    assert sum(s.value for s in resp) == 1 + 5 + 3
    dst = gmesh.samples(gmesh.backend, "istio_response_messages", reporter="destination")
    assert sum(s.value for s in dst) == 9


def test_large_messages_both_ways(gmesh: GrpcMesh) -> None:
    """Several MiB each way: flow control (windows acknowledged as forwarded) carries them."""
    big = bytes(range(256)) * (6 * 4096)  # 6 MiB
    assert method(gmesh.channel, "unary", "Unary")(big, timeout=30) == big
    got = list(method(gmesh.channel, "server", "ServerStream")(b"3:3000000", timeout=30))
    assert [len(m) for m in got] == [3_000_000] * 3


@pytest.mark.parametrize("code", [grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED,
                                  grpc.StatusCode.INTERNAL])  # fmt: skip
def test_status_codes_trailers_only(
    gmesh: GrpcMesh, code: grpc.StatusCode, wait_until: Callable[..., Any]
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        method(gmesh.channel, "unary", "Status")(str(code.value[0]).encode(), timeout=10)
    assert err.value.code() == code
    assert err.value.details() == f"asked for {code.value[0]}"
    src = gmesh.samples(gmesh.frontend, "istio_requests", reporter="source")
    assert src[0].labels["grpc_response_status"] == str(code.value[0])
    assert src[0].labels["response_code"] == "200"
    spans = wait_until(lambda: len(spans_in(gmesh.spans_file)) >= 2 and spans_in(gmesh.spans_file), "2 spans")
    a = attrs(next(s for svc, s in spans if s["kind"] == 3))
    assert a["grpc.status_code"] == str(code.value[0])
    assert a["grpc.message"] == f"asked for {code.value[0]}"
    # Envoy tags error=true for the server's failures only (INTERNAL), not NOT_FOUND / PERMISSION_DENIED
    assert ("error" in a) == (code == grpc.StatusCode.INTERNAL)


def test_unavailable_is_retried_then_ok(gmesh: GrpcMesh) -> None:
    """Istio's default policy retries UNAVAILABLE (trailers-only) up to twice."""
    gmesh.app.flaky_left["k1"] = 2
    assert method(gmesh.channel, "unary", "Flaky")(b"k1", timeout=10) == b"ok:k1"
    assert gmesh.app.calls["Flaky:k1"] == 3
    src = gmesh.samples(gmesh.frontend, "istio_requests", reporter="source")
    assert [s.labels["grpc_response_status"] for s in src] == ["0"]
    # the backend sidecar saw all three attempts
    dst = gmesh.samples(gmesh.backend, "istio_requests", reporter="destination")
    by_status = {s.labels["grpc_response_status"]: s.value for s in dst}
    assert by_status == {"14": 2, "0": 1}
    # three failures: retries exhausted, the client gets UNAVAILABLE, flagged URX
    gmesh.app.flaky_left["k2"] = 5
    with pytest.raises(grpc.RpcError) as err:
        method(gmesh.channel, "unary", "Flaky")(b"k2", timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert gmesh.app.calls["Flaky:k2"] == 3
    failed = gmesh.samples(gmesh.frontend, "istio_requests", reporter="source", grpc_response_status="14")
    assert failed[0].labels["response_flags"] == "URX"


def test_deadline_and_cancellation(gmesh: GrpcMesh) -> None:
    slow = method(gmesh.channel, "unary", "Slow")
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as err:
        slow(b"5", timeout=0.5)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 4
    # the backend app saw the call cancelled (grpc-timeout reached it and/or the reset did)
    assert gmesh.app.cancelled.wait(5)
    gmesh.app.cancelled.clear()
    future = slow.future(b"5", timeout=10)
    time.sleep(0.3)
    future.cancel()
    assert gmesh.app.cancelled.wait(5)
    # the connection stays usable
    assert method(gmesh.channel, "unary", "Unary")(b"after", timeout=10) == b"after"


def test_httpx_http2_through_two_sidecars(meshtrace_process: Any, tmp_path: Path, harness: Any) -> None:
    for m in build_grpc_mesh(meshtrace_process, tmp_path, harness, H2EchoApp):
        with httpx.Client(http1=False, http2=True, timeout=10) as client:
            url = f"http://{m.frontend.address('outbound')}/hello"
            for size in (0, 100_000):
                r = client.post(url, headers={"host": "backend:8080"}, content=b"z" * size)
                assert r.status_code == 200 and r.http_version == "HTTP/2"
                seen = r.json()
                assert seen["size"] == size
                assert seen["headers"][":authority"] == "backend:8080"
                assert "traceparent" in seen["headers"] and "x-b3-traceid" in seen["headers"]
                assert "x-envoy-peer-metadata" not in seen["headers"]
        src = m.samples(m.frontend, "istio_requests", reporter="source")
        assert src[0].labels["request_protocol"] == "http"
        assert src[0].labels["response_code"] == "200"
        assert sum(s.value for s in src) == 2


def h2_exchange(
    address: str, request: list[tuple[str, str]], body: bytes, trailers: list[tuple[str, str]] | None
) -> Any:
    """One stream (with request trailers unless None), sent with python-hyper's h2 as a client:
    (response headers, body, response trailers)."""
    import socket

    import h2.config
    import h2.connection
    import h2.events

    host, port = address.rsplit(":", 1)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    conn.send_headers(1, request)
    conn.send_data(1, body, end_stream=trailers is None)
    if trailers is not None:
        conn.send_headers(1, trailers, end_stream=True)
    head: dict[str, str] = {}
    tail: dict[str, str] = {}
    data = b""
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(conn.data_to_send())
        ended = False
        while not ended and (chunk := sock.recv(65536)):
            for event in conn.receive_data(chunk):
                if isinstance(event, h2.events.ResponseReceived):
                    head = dict(event.headers)
                elif isinstance(event, h2.events.DataReceived):
                    data += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, 1)
                elif isinstance(event, h2.events.TrailersReceived):
                    tail = dict(event.headers)
                elif isinstance(event, h2.events.StreamEnded):
                    ended = True
            sock.sendall(conn.data_to_send())
    return head, data, tail


def test_grpc_timeout_passed_is_deadline_exceeded(gmesh: GrpcMesh) -> None:
    """A grpc-timeout that passes before the answer: the sidecar ends the stream as Envoy's
    connection manager does at the route's max stream duration (Istio takes it from
    grpc-timeout): a trailers-only DEADLINE_EXCEEDED, `downstream duration timeout`."""
    request = [(":method", "POST"), (":scheme", "http"), (":authority", "backend:8080"),
               (":path", "/mesh.Echo/Slow"), ("content-type", "application/grpc"), ("te", "trailers"),
               ("grpc-timeout", "300m")]  # fmt: skip
    message = b"5"
    framed = b"\x00" + len(message).to_bytes(4, "big") + message
    head, body, tail = h2_exchange(gmesh.frontend.address("outbound"), request, framed, None)
    assert head[":status"] == "200" and body == b"" and tail == {}
    assert head["grpc-status"] == "4"
    assert head["grpc-message"] == "downstream duration timeout"
    assert gmesh.app.cancelled.wait(5)  # the app's call was cancelled too
    src = gmesh.samples(gmesh.frontend, "istio_requests", reporter="source")
    assert src[0].labels["grpc_response_status"] == "4"


def test_trailers_both_ways(meshtrace_process: Any, tmp_path: Path, harness: Any) -> None:
    for m in build_grpc_mesh(meshtrace_process, tmp_path, harness, H2EchoApp):
        request = [(":method", "POST"), (":scheme", "http"), (":authority", "backend:8080"), (":path", "/t")]
        head, body, tail = h2_exchange(
            m.frontend.address("outbound"), request, b"abc", [("x-checksum", "42")]
        )
        assert head[":status"] == "200"
        seen = json.loads(body)
        assert seen["size"] == 3
        assert json.loads(seen["headers"]["trailers"]) == {"x-checksum": "42"}
        assert tail == {"x-trailer": "done"}


def test_upstream_stream_limit(meshtrace_process: Any, tmp_path: Path, harness: Any) -> None:
    """The app allows one stream per connection: concurrent requests open more connections
    instead of overrunning it."""

    def app(host: str) -> H2EchoApp:
        return H2EchoApp(host, max_streams=1)

    for m in build_grpc_mesh(meshtrace_process, tmp_path, harness, app):
        url = f"http://{m.frontend.address('outbound')}/slow"

        async def concurrent(url: str = url) -> list[int]:
            async with httpx.AsyncClient(http1=False, http2=True, timeout=10) as client:
                calls = [client.get(url, headers={"host": "backend:8080"}) for _ in range(3)]
                return [r.status_code for r in await asyncio.gather(*calls)]

        assert asyncio.run(concurrent()) == [200, 200, 200]
        assert m.app.connections == 3


def test_upstream_goaway_then_new_connection(meshtrace_process: Any, tmp_path: Path, harness: Any) -> None:
    """An app's GOAWAY: the stream in flight on that connection still finishes; the next
    request goes to a new connection."""
    for m in build_grpc_mesh(meshtrace_process, tmp_path, harness, H2EchoApp):
        url = f"http://{m.frontend.address('outbound')}"

        async def slow_then_goaway(url: str = url) -> list[int]:
            async with httpx.AsyncClient(http1=False, http2=True, timeout=10) as client:
                slow = asyncio.ensure_future(client.get(f"{url}/slow", headers={"host": "backend:8080"}))
                await asyncio.sleep(0.2)  # /slow is in flight when the app sends GOAWAY
                goaway = await client.get(f"{url}/goaway", headers={"host": "backend:8080"})
                return [(await slow).status_code, goaway.status_code]

        assert asyncio.run(slow_then_goaway()) == [200, 200]
        assert m.app.connections == 1
        with httpx.Client(http1=False, http2=True, timeout=10) as client:
            assert client.get(f"{url}/after", headers={"host": "backend:8080"}).status_code == 200
        assert m.app.connections == 2


def test_backpressure_from_a_stalled_reader(gmesh: GrpcMesh) -> None:
    """A client that never opens its window: the sidecars forward what the windows allow and
    acknowledge upstream only what they forwarded, so the app stops producing instead of the
    proxies buffering the whole 64 MiB answer."""
    import socket

    import h2.config
    import h2.connection
    import h2.events

    host, port = gmesh.frontend.address("outbound").rsplit(":", 1)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()  # HTTP/2's default 65535-octet windows, never acknowledged below
    request = [(":method", "POST"), (":scheme", "http"), (":authority", "backend:8080"),
               (":path", "/mesh.Echo/ServerStream"), ("content-type", "application/grpc"),
               ("te", "trailers")]  # fmt: skip
    conn.send_headers(1, request)
    message = b"64:1048576"
    conn.send_data(1, b"\x00" + len(message).to_bytes(4, "big") + message, end_stream=True)
    received = 0
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(conn.data_to_send())
        sock.settimeout(0.2)
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            for event in conn.receive_data(chunk):
                if isinstance(event, h2.events.DataReceived):
                    received += len(event.data)
            sock.sendall(conn.data_to_send())
        produced = gmesh.app.produced
    assert received <= 65535
    assert produced < 40, f"the app produced {produced} MiB for a reader that took 64 KiB"
