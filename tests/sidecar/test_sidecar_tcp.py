"""TCP passthrough through two real sidecars: an app opens `CONNECT backend:<port>` on its
sidecar's outbound listener (HTTP_PROXY style) for a Service port whose protocol is TCP, the bytes
go both ways through the backend's sidecar to a plain TCP server, a half-close reaches the far
end, and both sidecars report Istio's `istio_tcp_*` metrics with their reporters' labels.

Before: CONNECT was refused (the parser answered 501 after queuing the head) and no sidecar had
TCP metrics."""

from __future__ import annotations

import re
import socket
import socketserver
import threading
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

BACKEND = "backend.default.svc.cluster.local"
PAYLOAD = bytes(range(256)) * 2048  # 512 KiB: more than the write buffers, so backpressure acts


class _Reverser(socketserver.BaseRequestHandler):
    """Reads until the client half-closes, then answers with the bytes reversed and closes: only
    a proxy that passes the half-close on lets it answer at all."""

    def handle(self) -> None:
        data = b""
        while chunk := self.request.recv(65536):
            data += chunk
        self.request.sendall(data[::-1] + b"|bye")


class TcpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@pytest.fixture
def tcp_app(harness: Any) -> Iterator[tuple[str, int]]:
    ip = harness.loopback()
    server = TcpServer((ip, 0), _Reverser)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield ip, server.server_address[1]
    server.shutdown()
    server.server_close()


def _tcp_service(ip: str, inbound: int, port: int, target: int, protocol: str) -> dict[str, Any]:
    """The backend Service: HTTP on its first port (the sidecar's --app-port), the TCP app on
    a second port, which targets its own app port."""
    return {
        BACKEND: {
            "name": "backend",
            "namespace": "default",
            "ports": [
                {"name": "http", "port": 8080, "target_port": 8080, "protocol": "http"},
                {"name": "db", "port": port, "target_port": target, "protocol": protocol},
            ],
            "endpoints": [{"ip": ip, "port": inbound, "app_port": target, "pod": "backend-0"}],
        }
    }


@pytest.fixture
def tcp_mesh(
    meshtrace_process: Any, tmp_path: Path, harness: Any, tcp_app: tuple[str, int]
) -> Callable[..., tuple[Any, Any]]:
    """tcp_mesh(protocol, *sidecar_flags) -> (frontend sidecar, backend sidecar) with the
    backend's port 5432 targeting the TCP app, declared with `protocol`."""

    def start(protocol: str, *flags: str) -> tuple[Any, Any]:
        be_ip, app_port = tcp_app
        fe_ip = harness.loopback()
        rx_endpoint = f"http://{be_ip}:9"  # no spans are asserted here
        fe_reg = harness.service("frontend", fe_ip, harness.free_port(fe_ip))
        # the backend's registry holds its own Service (as the control plane's does)
        own = _tcp_service(be_ip, 15006, 5432, app_port, protocol)
        be_doc = harness.config_doc("backend", rx_endpoint, 0.0, {**fe_reg, **own})
        be_port = harness.free_port(be_ip)
        be = harness.start_sidecar(meshtrace_process, tmp_path, "backend", be_ip, be_port, be_doc, *flags)
        own[BACKEND]["endpoints"][0]["port"] = be.listeners["inbound"][1]
        fe_doc = harness.config_doc("frontend", rx_endpoint, 0.0, own)
        fe_port = harness.free_port(fe_ip)
        fe = harness.start_sidecar(meshtrace_process, tmp_path, "frontend", fe_ip, fe_port, fe_doc, *flags)
        return fe, be

    return start


def connect_via(outbound: str, target: str) -> tuple[socket.socket, bytes]:
    """A CONNECT on the outbound listener: the socket and the answer's head."""
    host, port = outbound.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=10)
    s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(1)
        if not chunk:
            break
        head += chunk
    return s, head


def read_all(s: socket.socket) -> bytes:
    out = b""
    while chunk := s.recv(65536):
        out += chunk
    return out


def samples(proc: Any, name: str) -> list[Any]:
    """The samples named `name` on a sidecar's :15090 page."""
    return samples_at(proc.address("stats"), name)


def samples_at(stats: str, name: str) -> list[Any]:
    with urllib.request.urlopen(f"http://{stats}/stats/prometheus", timeout=5) as r:
        text = r.read().decode()
    return [s for fam in text_string_to_metric_families(text) for s in fam.samples if s.name == name]


@pytest.mark.parametrize("protocol", ["tcp", "mysql", "auto"])
def test_tcp_passthrough_with_half_close_and_istio_tcp_metrics(
    tcp_mesh: Callable[[str], tuple[Any, Any]], harness: Any, wait_until: Callable[..., Any], protocol: str
) -> None:
    fe, be = tcp_mesh(protocol)
    s, head = connect_via(fe.address("outbound"), "backend:5432")
    with s:
        assert head.startswith(b"HTTP/1.1 200 "), head
        s.sendall(PAYLOAD)
        s.shutdown(socket.SHUT_WR)  # the half-close the app waits for
        answer = read_all(s)
    assert answer == PAYLOAD[::-1] + b"|bye"

    def closed(proc: Any) -> Any:
        return samples(proc, "istio_tcp_connections_closed_total")

    wait_until(lambda: closed(fe) and closed(be), "both sidecars to count the closed connection")
    for proc, reporter in ((fe, "source"), (be, "destination")):
        opened = samples(proc, "istio_tcp_connections_opened_total")
        assert [s.value for s in opened] == [1]
        labels = opened[0].labels
        assert labels["reporter"] == reporter
        assert labels["request_protocol"] == "tcp"
        assert labels["destination_service"] == BACKEND and labels["destination_service_name"] == "backend"
        # the peer's metadata crossed the tunnel both ways
        assert labels["source_workload"] == "frontend" and labels["destination_workload"] == "backend"
        assert "response_code" not in labels and "grpc_response_status" not in labels
        received = samples(proc, "istio_tcp_received_bytes_total")
        sent = samples(proc, "istio_tcp_sent_bytes_total")
        assert [s.value for s in received] == [len(PAYLOAD)]
        assert [s.value for s in sent] == [len(PAYLOAD) + 4]
        assert [s.value for s in closed(proc)] == [1]
    # one access-log line per connection, Envoy's TCP proxy in Istio's format: no request
    # (`"- - -" 0`), the bytes each way, the cluster
    for proc, cluster in ((fe, f"outbound|5432||{BACKEND}"), (be, "inbound|")):
        line = next(x for x in proc.output().splitlines() if '"- - -"' in x)
        assert re.search(rf'"- - -" 0 - - - "-" {len(PAYLOAD)} {len(PAYLOAD) + 4} \d+ - ', line), line
        assert f" {cluster}" in line, line


def test_an_http_port_is_served_as_http_inside_the_tunnel(
    meshtrace_process: Any, tmp_path: Path, harness: Any, servers: Any
) -> None:
    """CONNECT to an HTTP-class port: the tunnel's inside is an HTTP connection of the same
    listener (routed, traced and counted as requests; h2 by its preface once the sidecar speaks
    it), not opaque bytes."""
    be_ip, fe_ip = harness.loopback(), harness.loopback()
    app = servers(harness.backend_app(be_ip))
    be_doc = harness.config_doc("backend", f"http://{be_ip}:9", 0.0, harness.service("frontend", fe_ip, 1))
    be = harness.start_sidecar(meshtrace_process, tmp_path, "backend", be_ip, app.port, be_doc)
    reg = harness.service("backend", be_ip, be.listeners["inbound"][1], 8080, app.port)
    reg[BACKEND]["ports"][0]["protocol"] = "http"
    fe = harness.start_sidecar(
        meshtrace_process, tmp_path, "frontend", fe_ip, harness.free_port(fe_ip),
        harness.config_doc("frontend", f"http://{be_ip}:9", 0.0, reg),
    )  # fmt: skip
    s, head = connect_via(fe.address("outbound"), "backend:8080")
    with s:
        assert head.startswith(b"HTTP/1.1 200 "), head
        s.sendall(b"GET /echo HTTP/1.1\r\nHost: backend:8080\r\nConnection: close\r\n\r\n")
        answer = read_all(s)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    assert b'"x-envoy-peer-metadata-id"' not in answer  # the app never sees the peer metadata
    assert b"traceparent" in answer  # the sidecar proxied it as a request
    assert any(s.labels["destination_service"] == BACKEND for s in samples(fe, "istio_requests_total"))


def test_a_short_http_request_on_an_auto_port_is_detected_without_waiting(
    tcp_mesh: Callable[..., tuple[Any, Any]],
) -> None:
    """18 bytes of HTTP/1.0 have left the HTTP/2 preface already: detection decides at once (the
    sidecars wait 30 s for more bytes, the client 5 s for its answer)."""
    fe, _ = tcp_mesh("auto", "--header-timeout", "30")
    s, head = connect_via(fe.address("outbound"), "backend:5432")
    with s:
        assert head.startswith(b"HTTP/1.1 200 "), head
        s.settimeout(5)
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert read_all(s).startswith(b"HTTP/1.1 400 "), "served as HTTP (no Host: 400)"


def test_connect_refusals(tcp_mesh: Callable[[str], tuple[Any, Any]], harness: Any) -> None:
    fe, be = tcp_mesh("udp")
    for target, status in (("backend:5432", b"501"), ("backend:1", b"404"), ("backend", b"400")):
        s, head = connect_via(fe.address("outbound"), target)
        with s:
            assert head.startswith(b"HTTP/1.1 " + status + b" "), (target, head)
    # the inbound listener takes no CONNECT from clients
    s, head = connect_via(be.address("inbound"), "backend:5432")
    with s:
        assert head.startswith(b"HTTP/1.1 501 "), head


@pytest.mark.e2e
def test_tcp_through_a_mutual_tls_pair_keeps_the_half_close(tcp_app: tuple[str, int], tmp_path: Path) -> None:
    """The pair of `meshtrace bench overhead` (control plane, signed certificates, auto mTLS)
    with a TCP Service port: the tunnel crosses mutual TLS, which has no half-close of its own,
    yet the app still sees the client's end of input (the tunnel's last chunk carries it)."""
    from meshtrace.bench.overhead import mtls_pair

    ip, port = tcp_app
    extra = f", {{name: tcp-db, port: 5432, targetPort: {port}}}"
    with mtls_pair(tmp_path, (ip, port), (ip, 9), 0.0, extra_ports=extra) as (client, server):
        s, head = connect_via("{}:{}".format(*client.listeners["outbound"]), "server:5432")
        with s:
            assert head.startswith(b"HTTP/1.1 200 "), head
            s.sendall(PAYLOAD)
            s.shutdown(socket.SHUT_WR)
            assert read_all(s) == PAYLOAD[::-1] + b"|bye"
        opened = samples_at("{}:{}".format(*server.listeners["stats"]), "istio_tcp_connections_opened_total")
        assert [(s.labels["connection_security_policy"], s.value) for s in opened] == [("mutual_tls", 1)]
        assert opened[0].labels["source_principal"] == "spiffe://cluster.local/ns/default/sa/default"
