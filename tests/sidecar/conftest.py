"""Sidecar test mesh: real `meshtrace sidecar` processes between real HTTP apps, spans received by
a small OTLP/HTTP receiver (the collector's wire format), each test on its own loopback addresses."""

from __future__ import annotations

import json
import random
import socket
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from opentelemetry.propagators.b3 import B3MultiFormat
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for sidecar_helpers, mock_backend
from sidecar_helpers import scrape, spans_settled  # importable once the line above ran


def loopback() -> str:
    """A fresh 127.x.y.z address so parallel tests never share a pod address."""
    return f"127.{random.randint(20, 250)}.{random.randint(0, 255)}.{random.randint(2, 250)}"


class _Quiet(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass


@dataclass
class Received:
    spans: list[tuple[str, Span]] = field(default_factory=list)  # (service.name, span)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wait(self, n: int, timeout: float = 10.0) -> list[tuple[str, Span]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.spans) >= n:
                    return list(self.spans)
            time.sleep(0.05)
        raise TimeoutError(f"expected {n} spans, got {len(self.spans)}")


class Server:
    """A stdlib HTTP server in a thread (apps and the test span receiver)."""

    def __init__(self, host: str, handler: type[BaseHTTPRequestHandler], port: int = 0) -> None:
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.host = host
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def otlp_receiver(host: str) -> tuple[Server, Received]:
    received = Received()

    class Handler(_Quiet):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            req = ExportTraceServiceRequest()
            req.ParseFromString(body)
            with received.lock:
                for rs in req.resource_spans:
                    svc = next(
                        a.value.string_value for a in rs.resource.attributes if a.key == "service.name"
                    )
                    for ss in rs.scope_spans:
                        received.spans.extend((svc, s) for s in ss.spans)
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

    return Server(host, Handler), received


def zipkin_receiver(host: str) -> tuple[Server, list[dict[str, Any]]]:
    """Collects Zipkin v2 JSON spans POSTed to /api/v2/spans."""
    got: list[dict[str, Any]] = []

    class Handler(_Quiet):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            if self.path == "/api/v2/spans" and self.headers.get("content-type") == "application/json":
                got.extend(json.loads(body))
                self.send_response(202)
            else:
                self.send_response(400)
            self.send_header("content-length", "0")
            self.end_headers()

    return Server(host, Handler), got


def tracing_block(endpoint: str, sampling: float, **extra: Any) -> dict[str, Any]:
    block: dict[str, Any] = {
        "enabled": True,
        "provider": {
            "name": "otel",
            "type": "opentelemetry",
            "protocol": "http",
            "path": "/v1/traces",
            "endpoint": endpoint,
            "timeout_s": 2.0,
            "max_tag_length": 256,
        },
        "random_sampling_percentage": sampling,
        "propagation": {"read": ["w3c", "b3"], "write": ["w3c", "b3"]},
    }
    block.update(extra)
    return block


def config_doc(
    app: str,
    endpoint: str,
    sampling: float = 100.0,
    services: dict[str, Any] | None = None,
    **tracing_extra: Any,
) -> dict[str, Any]:
    return {
        "schema": 1,
        "workload": {"name": app, "namespace": "default", "labels": {"app": app, "version": "v1"}},
        "mesh": {"mesh_id": "cluster.local", "cluster_id": "Kubernetes"},
        "tracing": {
            "client": tracing_block(endpoint, sampling, **tracing_extra),
            "server": tracing_block(endpoint, sampling, **tracing_extra),
        },
        "metrics": {"enabled": True, "client": {}, "server": {}},
        "services": services or {},
    }


def service(name: str, ip: str, inbound: int, port: int = 8080, app_port: int = 8080) -> dict[str, Any]:
    return {
        f"{name}.default.svc.cluster.local": {
            "name": name,
            "namespace": "default",
            "ports": [{"name": "http", "port": port, "target_port": app_port}],
            "endpoints": [{"ip": ip, "port": inbound, "app_port": app_port, "pod": f"{name}-0"}],
        }
    }


def start_sidecar(
    meshtrace_process: Any,
    tmp_path: Path,
    app: str,
    ip: str,
    app_port: int,
    doc: dict[str, Any],
    *extra: str,
) -> Any:
    path = tmp_path / f"{app}-{ip}.json"
    path.write_text(json.dumps(doc))
    args = [
        "sidecar", "--workload", app, "--namespace", "default", "--pod", f"{app}-0", "--ip", ip,
        "--labels", f"app={app},version=v1", "--app-port", str(app_port), "--config", str(path),
        "--inbound-port", "0", "--outbound-port", "0", "--admin-port", "0", "--stats-port", "0",
        "--health-port", "0", *extra,
    ]  # fmt: skip
    proc = meshtrace_process(args)
    proc.config_path = path
    proc.wait_for_listeners("inbound", "outbound", "admin", "stats", "health")
    return proc


@pytest.fixture
def servers() -> Iterator[Callable[[Server], Server]]:
    started: list[Server] = []

    def track(s: Server) -> Server:
        started.append(s)
        return s

    yield track
    for s in started:
        s.close()


PROPAGATORS = {"w3c": TraceContextTextMapPropagator(), "b3": B3MultiFormat()}
BACKEND_FQDN = "backend.default.svc.cluster.local"


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if handler.headers.get("transfer-encoding", "").lower() == "chunked":
        out = b""
        while True:
            size = int(handler.rfile.readline().strip(), 16)
            if size == 0:
                handler.rfile.readline()
                return out
            out += handler.rfile.read(size)
            handler.rfile.readline()
    return handler.rfile.read(int(handler.headers.get("content-length") or 0))


def backend_app(host: str) -> Server:
    """Echoes the request headers (and body as x-body) as JSON; /slow sleeps, /reset dies mid-body."""

    class Handler(_Quiet):
        def do_GET(self) -> None:
            path = urlsplit(self.path)
            body_in = _read_body(self)
            if path.path == "/slow":
                time.sleep(2)
            if path.path == "/reset":
                self.send_response(200)
                self.send_header("content-length", "100000")
                self.end_headers()
                self.wfile.write(b"partial")
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            status = int(parse_qs(path.query).get("status", ["200"])[0])
            seen = {k.lower(): v for k, v in self.headers.items()}
            if body_in:
                seen["x-body"] = body_in.decode()
            body = json.dumps(seen).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_GET

        def do_HEAD(self) -> None:
            # the GET answer's head (its Content-Length included) without the body
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", "1234")
            self.end_headers()

    return Server(host, Handler)


def frontend_app(host: str, outbound: str, port: int = 0) -> Server:
    """Calls backend through its sidecar (HTTP_PROXY style), forwarding the trace context with
    the OpenTelemetry propagator named by ?fmt= and x-request-id."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": f"http://{outbound}"}))

    class Handler(_Quiet):
        def do_GET(self) -> None:
            q = parse_qs(urlsplit(self.path).query)
            fmt = q.get("fmt", ["w3c"])[0]
            incoming = {k.lower(): v for k, v in self.headers.items()}
            ctx = PROPAGATORS[fmt].extract(incoming)
            out: dict[str, str] = {}
            PROPAGATORS[fmt].inject(out, context=ctx)
            if "x-request-id" in incoming:
                out["x-request-id"] = incoming["x-request-id"]
            status = q.get("status", ["200"])[0]
            req = urllib.request.Request(f"http://backend:8080/echo?status={status}", headers=out)
            try:
                with opener.open(req, timeout=10) as resp:
                    code, body = resp.status, resp.read()
            except urllib.error.HTTPError as err:
                code, body = err.code, err.read()
            self.send_response(code)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Server(host, Handler, port)


@dataclass
class Mesh:
    frontend: Any  # sidecar processes
    backend: Any
    received: Received
    endpoint: str
    frontend_doc: dict[str, Any]
    backend_doc: dict[str, Any]
    backend_app: tuple[str, int]

    def call(self, path: str = "/call", headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        url = f"http://{self.frontend.address('inbound')}{path}"
        req = urllib.request.Request(url, headers={"host": "frontend:8080", **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def settled(self) -> None:
        """Wait until both sidecars have exported (or dropped) every span they queued: what
        `received` holds is then all that arrives."""
        spans_settled(self.frontend, self.backend)

    def metrics(self, proc: Any) -> dict[str, list[Any]]:
        return scrape(proc)


def build_mesh(
    meshtrace_process: Any,
    tmp_path: Path,
    sampling: float,
    *flags: str,
    backend_sampling: float | None = None,
    dead_backend: bool = False,
    **extra: Any,
) -> Iterator[Mesh]:
    fe_ip, be_ip, rx_ip = loopback(), loopback(), loopback()
    rx, received = otlp_receiver(rx_ip)
    endpoint = f"http://{rx_ip}:{rx.port}"
    be_app = backend_app(be_ip)
    fe_app: Server | None = None
    try:
        be_sampling = sampling if backend_sampling is None else backend_sampling
        # the registry lists the frontend too (as the control plane's does): the backend believes
        # peer metadata only from mesh workloads' addresses; the port is not used for that
        fe_registered = service("frontend", fe_ip, free_port(fe_ip))
        be_doc = config_doc("backend", endpoint, be_sampling, fe_registered, **extra)
        be = start_sidecar(meshtrace_process, tmp_path, "backend", be_ip, be_app.port, be_doc, *flags)
        inbound = be.listeners["inbound"][1]
        if dead_backend:
            inbound = free_port(be_ip)
        fe_doc = config_doc("frontend", endpoint, sampling, service("backend", be_ip, inbound), **extra)
        # the app needs the sidecar's outbound port and the sidecar the app's port: reserve one
        app_port = free_port(fe_ip)
        fe = start_sidecar(meshtrace_process, tmp_path, "frontend", fe_ip, app_port, fe_doc, *flags)
        fe_app = frontend_app(fe_ip, fe.address("outbound"), app_port)
        yield Mesh(fe, be, received, endpoint, fe_doc, be_doc, (be_ip, be_app.port))
    finally:
        for srv in (fe_app, be_app, rx):
            if srv is not None:
                srv.close()


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@pytest.fixture
def mesh(meshtrace_process: Any, tmp_path: Path) -> Iterator[Mesh]:
    yield from build_mesh(meshtrace_process, tmp_path, 100.0)


@pytest.fixture
def mesh_factory(meshtrace_process: Any, tmp_path: Path) -> Iterator[Callable[..., Mesh]]:
    """mesh_factory(sampling, *sidecar_flags, backend_sampling=, dead_backend=, **tracing_keys)"""
    gens: list[Iterator[Mesh]] = []

    def make(sampling: float, *flags: str, **kw: Any) -> Mesh:
        gen = build_mesh(meshtrace_process, tmp_path, sampling, *flags, **kw)
        gens.append(gen)
        return next(gen)

    yield make
    for gen in gens:
        gen.close()


@pytest.fixture
def harness() -> Any:
    """This module, for tests that build their own topology from its helpers."""
    return sys.modules[__name__]
