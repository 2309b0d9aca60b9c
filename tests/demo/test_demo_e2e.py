"""End to end: the demo services as real processes, exporting with the official OTLP exporter to a
running collector; requests over real HTTP; the spans that arrive are checked for the seed's
structure (names, parents, kinds, attributes, status), trace continuation (W3C, B3), unsampled
callers, the proxy path `meshtrace up` uses, the scheme-less endpoint and the flush on SIGTERM."""

from __future__ import annotations

import http.server
import signal
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from meshtrace.model import otlp_json

SERVER, CLIENT, INTERNAL = 2, 3, 1  # OTLP Span.SpanKind numbers
UNSET, OK, ERROR = 0, 1, 2  # OTLP Status.StatusCode numbers
WAIT_S = 20.0
# What the aiohttp instrumentation calls a captured x-request-id header.
REQUEST_ID_ATTRIBUTE = "http.request.header.x_request_id"


# ---------------------------------------------------------------- spans as plain records


def value_of(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [value_of(v) for v in value.array_value.values]
    return getattr(value, kind)


def attributes_of(kvs: Any) -> dict[str, Any]:
    return {kv.key: value_of(kv.value) for kv in kvs}


@dataclass
class Span:
    service: str
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: int
    attributes: dict[str, Any]
    status: int
    status_message: str
    duration_ms: float
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    resource: dict[str, Any] = field(default_factory=dict)


def spans_of(request: ExportTraceServiceRequest) -> list[Span]:
    out = []
    for rs in request.resource_spans:
        resource = attributes_of(rs.resource.attributes)
        for ss in rs.scope_spans:
            for s in ss.spans:
                out.append(
                    Span(
                        service=str(resource.get("service.name", "")),
                        trace_id=s.trace_id.hex(),
                        span_id=s.span_id.hex(),
                        parent_id=s.parent_span_id.hex(),
                        name=s.name,
                        kind=s.kind,
                        attributes=attributes_of(s.attributes),
                        status=s.status.code,
                        status_message=s.status.message,
                        duration_ms=(s.end_time_unix_nano - s.start_time_unix_nano) / 1e6,
                        events=[(e.name, attributes_of(e.attributes)) for e in s.events],
                        resource=resource,
                    )
                )
    return out


# ---------------------------------------------------------------- processes and the collector


@pytest.fixture(scope="module")
def process_class(request: pytest.FixtureRequest) -> type[Any]:
    """tests/conftest.py's MeshtraceProcess (reached through the plugin manager: conftest modules
    are not importable under --import-mode=importlib)."""
    for plugin in request.config.pluginmanager.get_plugins():
        found = getattr(plugin, "MeshtraceProcess", None)
        if found is not None:
            return found
    raise RuntimeError("tests/conftest.py MeshtraceProcess not found")


class CollectedSpans:
    """What a `meshtrace collector` file exporter wrote (one OTLP/JSON request per line)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.spans: list[Span] = []
        self._offset = 0

    def all(self) -> list[Span]:
        if self.path.exists():
            with self.path.open("rb") as f:
                f.seek(self._offset)
                data = f.read()
            complete = data[: data.rfind(b"\n") + 1]
            self._offset += len(complete)
            for line in complete.splitlines():
                if line.strip():
                    self.spans.extend(spans_of(otlp_json.loads(line)))
        return list(self.spans)

    def wait_for(self, predicate: Callable[[list[Span]], bool], what: str) -> list[Span]:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            spans = self.all()
            if predicate(spans):
                return spans
            time.sleep(0.05)
        raise TimeoutError(f"collector never got {what}; it has: {[(s.service, s.name) for s in self.all()]}")


@dataclass
class RunningCollector:
    store: CollectedSpans
    grpc: str  # host:port
    http: str

    @property
    def endpoint(self) -> str:
        return f"http://{self.grpc}"


@pytest.fixture(scope="module")
def collector(
    process_class: type[Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningCollector]:
    """`meshtrace collector`: otlp receiver (gRPC and HTTP on port 0) -> file exporter."""
    work = tmp_path_factory.mktemp("collector")
    out = work / "spans.jsonl"
    config = {
        "receivers": {"otlp": {"protocols": {"grpc": {}, "http": {}}}},
        "exporters": {"file": {"path": str(out), "flush_interval": "0s"}},
        "service": {
            "pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["file"]}},
            "telemetry": {"metrics": {"level": "none"}},
        },
    }
    (work / "collector.yaml").write_text(yaml.safe_dump(config))
    process = process_class(
        [
            "collector",
            "--config",
            str(work / "collector.yaml"),
            "--set",
            "receivers.otlp.protocols.grpc.endpoint=127.0.0.1:0",
            "--set",
            "receivers.otlp.protocols.http.endpoint=127.0.0.1:0",
        ]
    )
    try:
        process.wait_for_listeners("otlp-grpc", "otlp-http", timeout=WAIT_S)
        yield RunningCollector(
            CollectedSpans(out), process.address("otlp-grpc"), process.address("otlp-http")
        )
    finally:
        process.stop()


@pytest.fixture(scope="module")
def start_demo(
    process_class: type[Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., Any]]:
    """`start_demo("backend", {...env})`: `python -m meshtrace.demo.<name>` as a real process,
    ready when it printed its ready line; stopped (SIGTERM) at the end of the module."""

    started: list[Any] = []
    db = tmp_path_factory.mktemp("demo") / "backend.sqlite"

    def start(name: str, env: dict[str, str]) -> Any:
        full = {
            "POD_IP": "127.0.0.1",
            "PORT": "0",
            "DB_PATH": str(db),
            "OTEL_SERVICE_NAME": name,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            # The server spans record x-request-id, so tests can see that it was forwarded.
            "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST": "x-request-id",
            **env,
        }
        process = process_class([], env=full, module=f"meshtrace.demo.{name}")
        started.append(process)
        process.wait_for_listeners(name, timeout=WAIT_S)
        return process

    yield start
    for process in reversed(started):
        process.stop()


@dataclass
class Demo:
    collector: CollectedSpans
    frontend: str
    backend: str

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
        request = urllib.request.Request(self.frontend + path, headers=headers or {})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(request, timeout=WAIT_S) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    def trace_with_request_id(self, request_id: str, count: int) -> list[Span]:
        """The spans of the trace whose frontend server span saw `x-request-id: request_id`."""

        def find(spans: list[Span]) -> list[Span]:
            roots = [s for s in spans if s.attributes.get(REQUEST_ID_ATTRIBUTE) == [request_id]]
            if not roots:
                return []
            return [s for s in spans if s.trace_id == roots[0].trace_id]

        self.collector.wait_for(lambda all_: len(find(all_)) >= count, f"{count} spans for {request_id}")
        time.sleep(0.3)  # a straggler would show up within a few batch delays; none is expected
        return find(self.collector.all())

    def trace(self, trace_id: str, count: int) -> list[Span]:
        self.collector.wait_for(
            lambda all_: len([s for s in all_ if s.trace_id == trace_id]) >= count,
            f"{count} spans of {trace_id}",
        )
        time.sleep(0.3)
        return [s for s in self.collector.all() if s.trace_id == trace_id]


def address(process: Any, name: str) -> str:
    host, port = process.listeners[name]
    return f"http://{host}:{port}"


@pytest.fixture(scope="module")
def backend(start_demo: Callable[..., Any], collector: RunningCollector) -> Any:
    return start_demo("backend", {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint})


@pytest.fixture(scope="module")
def demo(start_demo: Callable[..., Any], collector: RunningCollector, backend: Any) -> Demo:
    frontend = start_demo(
        "frontend",
        {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint, "BACKEND_URL": address(backend, "backend")},
    )
    return Demo(collector.store, address(frontend, "frontend"), address(backend, "backend"))


def by_name(spans: list[Span]) -> dict[str, Span]:
    named = {s.name: s for s in spans}
    assert len(named) == len(spans), f"duplicate span names: {[s.name for s in spans]}"
    return named


SEED_SPANS = {
    # name: (service, kind)
    "GET /api/data": ("frontend", SERVER),
    "handleData": ("frontend", INTERNAL),
    "callBackend": ("frontend", INTERNAL),
    "GET": ("frontend", CLIENT),
    "GET /api/users": ("backend", SERVER),
    "handleUsers": ("backend", INTERNAL),
    "queryDatabase": ("backend", CLIENT),
}
PARENTS = {
    "handleData": "GET /api/data",
    "callBackend": "handleData",
    "GET": "callBackend",
    "GET /api/users": "GET",
    "handleUsers": "GET /api/users",
    "queryDatabase": "handleUsers",
}


def assert_seed_shape(spans: list[Span]) -> dict[str, Span]:
    named = by_name(spans)
    assert set(named) == set(SEED_SPANS)
    assert len({s.trace_id for s in spans}) == 1
    for name, (service, kind) in SEED_SPANS.items():
        assert (named[name].service, named[name].kind) == (service, kind), name
    for child, parent in PARENTS.items():
        assert named[child].parent_id == named[parent].span_id, f"{child} is not a child of {parent}"
    return named


# ---------------------------------------------------------------- tests


def test_request_yields_one_trace_with_the_seeds_spans(demo: Demo) -> None:
    request_id = str(uuid.uuid4())
    status, body = demo.get("/api/data", {"x-request-id": request_id})
    assert status == 200 and "Alice" in body
    spans = demo.trace_with_request_id(request_id, len(SEED_SPANS))
    named = assert_seed_shape(spans)
    assert named["GET /api/data"].parent_id == ""  # no caller context: the frontend starts the trace
    # ONE trace: both server spans that saw this request id are in it, nothing went elsewhere.
    saw_it = [s for s in demo.collector.all() if s.attributes.get(REQUEST_ID_ATTRIBUTE) == [request_id]]
    assert sorted(s.name for s in saw_it) == ["GET /api/data", "GET /api/users"]
    assert {s.trace_id for s in saw_it} == {spans[0].trace_id}

    server = named["GET /api/data"].attributes
    assert (server["http.request.method"], server["http.route"], server["http.response.status_code"]) == (
        "GET",
        "/api/data",
        200,
    )
    assert server["url.path"] == "/api/data" and "http.target" not in server
    handle = named["handleData"]
    assert handle.attributes["http.request.method"] == "GET"
    assert handle.attributes["url.full"].endswith("/api/data")
    assert "Alice" in handle.attributes["backend.response"]
    call = named["callBackend"]
    assert call.attributes["url.full"] == demo.backend + "/api/users"
    assert call.attributes["http.response.status_code"] == 200
    client = named["GET"].attributes
    assert client["url.full"] == demo.backend + "/api/users" and client["http.response.status_code"] == 200
    # Istio needs apps to forward x-request-id: the backend's server span saw the same one.
    assert named["GET /api/users"].attributes[REQUEST_ID_ATTRIBUTE] == [request_id]
    assert named["handleUsers"].attributes["users.count"] == 3
    db = named["queryDatabase"].attributes
    assert db["db.system.name"] == "sqlite" and db["db.operation.name"] == "SELECT"
    assert db["db.collection.name"] == "users" and db["db.query.text"].startswith("SELECT")
    assert db["db.response.returned_rows"] == 3

    # Application spans say Ok (the seed's SetStatus(codes.Ok)); instrumentation never does.
    for name in ("handleData", "callBackend", "handleUsers", "queryDatabase"):
        assert named[name].status == OK, name
    for name in ("GET /api/data", "GET", "GET /api/users"):
        assert named[name].status == UNSET, name
    # Current semantic-convention names only.
    for span in spans:
        for old in ("http.method", "http.url", "http.status_code", "db.system", "db.statement"):
            assert old not in span.attributes, (span.name, old)
    resource = named["handleUsers"].resource
    assert resource["service.version"] and resource["deployment.environment.name"] == "production"
    assert resource["telemetry.sdk.language"] == "python" and "host.name" in resource


def test_injected_error_marks_the_database_span_and_everything_above(demo: Demo) -> None:
    request_id = str(uuid.uuid4())
    status, body = demo.get("/api/data?fail=1", {"x-request-id": request_id})
    assert status == 500 and "injected fault" in body
    named = assert_seed_shape(demo.trace_with_request_id(request_id, len(SEED_SPANS)))
    query = named["queryDatabase"]
    assert query.status == ERROR and "injected fault" in query.status_message
    assert query.attributes["error.type"] == "InjectedFault"
    ((event, attributes),) = query.events
    assert event == "exception" and attributes["exception.type"].endswith("InjectedFault")
    for name in SEED_SPANS:
        assert named[name].status == ERROR, name
    assert named["GET /api/users"].attributes["http.response.status_code"] == 500
    assert named["GET /api/data"].attributes["http.response.status_code"] == 500


def test_slow_query_shows_in_the_database_span(demo: Demo) -> None:
    request_id = str(uuid.uuid4())
    assert demo.get("/api/data?slow_ms=300", {"x-request-id": request_id})[0] == 200
    named = assert_seed_shape(demo.trace_with_request_id(request_id, len(SEED_SPANS)))
    assert named["queryDatabase"].duration_ms >= 300
    assert named["GET /api/data"].duration_ms >= named["queryDatabase"].duration_ms


def test_bad_fault_parameter_is_a_400_naming_it(demo: Demo) -> None:
    status, body = demo.get("/api/data?slow_ms=soon")
    assert status == 400 and "slow_ms" in body


def test_root_page(demo: Demo) -> None:
    request_id = str(uuid.uuid4())
    status, body = demo.get("/", {"x-request-id": request_id})
    assert status == 200 and body.startswith("Frontend service")
    named = by_name(demo.trace_with_request_id(request_id, 2))
    assert named["handleRoot"].parent_id == named["GET /"].span_id and named["handleRoot"].status == OK


def test_w3c_caller_is_continued(demo: Demo) -> None:
    trace_id, parent = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    assert demo.get("/api/data", {"traceparent": f"00-{trace_id}-{parent}-01"})[0] == 200
    named = assert_seed_shape(demo.trace(trace_id, len(SEED_SPANS)))
    assert named["GET /api/data"].parent_id == parent


def test_b3_caller_is_continued(demo: Demo) -> None:
    trace_id, parent = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    headers = {"x-b3-traceid": trace_id, "x-b3-spanid": parent, "x-b3-sampled": "1"}
    assert demo.get("/api/data", headers)[0] == 200
    named = assert_seed_shape(demo.trace(trace_id, len(SEED_SPANS)))
    assert named["GET /api/data"].parent_id == parent


def test_unsampled_caller_produces_no_spans(demo: Demo) -> None:
    unsampled = uuid.uuid4().hex
    assert demo.get("/api/data", {"traceparent": f"00-{unsampled}-{uuid.uuid4().hex[:16]}-00"})[0] == 200
    # A sampled request sent after it: once its spans are in, the unsampled ones would be too.
    sampled = uuid.uuid4().hex
    assert demo.get("/api/data", {"traceparent": f"00-{sampled}-{uuid.uuid4().hex[:16]}-01"})[0] == 200
    demo.trace(sampled, len(SEED_SPANS))
    assert [s.name for s in demo.collector.all() if s.trace_id == unsampled] == []


class RecordingProxy(http.server.BaseHTTPRequestHandler):
    """A forward HTTP proxy (what the sidecar's outbound listener is to the app): records each
    request and sends it to the one upstream it knows, whatever the host name."""

    seen: list[tuple[str, dict[str, str]]]
    upstream: str

    def do_GET(self) -> None:
        self.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
        target = self.upstream + urllib.parse.urlsplit(self.path).path
        query = urllib.parse.urlsplit(self.path).query
        forward = urllib.request.Request(target + (f"?{query}" if query else ""), headers=dict(self.headers))
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(forward, timeout=WAIT_S) as response:
                status, body = response.status, response.read()
        except urllib.error.HTTPError as err:
            status, body = err.code, err.read()
        self.send_response(status)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.mark.e2e
def test_outbound_goes_through_http_proxy_and_scheme_less_endpoint_works(
    start_demo: Callable[..., Any], collector: RunningCollector, backend: Any
) -> None:
    seen: list[tuple[str, dict[str, str]]] = []
    handler = type("Proxy", (RecordingProxy,), {"seen": seen, "upstream": address(backend, "backend")})
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        frontend = start_demo(
            "frontend",
            {
                # The seed's form: host:port without a scheme.
                "OTEL_EXPORTER_OTLP_ENDPOINT": collector.grpc,
                # `backend` does not resolve: only the proxy can reach it, as with `meshtrace up`.
                "BACKEND_URL": "http://backend:8080",
                "HTTP_PROXY": f"http://127.0.0.1:{proxy.server_address[1]}",
                "NO_PROXY": "127.0.0.1,localhost",
                "no_proxy": "127.0.0.1,localhost",
            },
        )
        frontend.wait_for_line("has no scheme")
        demo = Demo(collector.store, address(frontend, "frontend"), "http://backend:8080")
        request_id = str(uuid.uuid4())
        status, body = demo.get("/api/data", {"x-request-id": request_id})
        assert status == 200 and "Alice" in body, body
        named = assert_seed_shape(demo.trace_with_request_id(request_id, len(SEED_SPANS)))
    finally:
        proxy.shutdown()
        proxy.server_close()
    ((path, headers),) = seen
    assert path == "http://backend:8080/api/users"
    assert headers["x-request-id"] == request_id
    client = named["GET"]
    version, trace_id, span_id, flags = headers["traceparent"].split("-")
    assert (version, trace_id, span_id) == ("00", client.trace_id, client.span_id)
    assert int(flags, 16) & 1  # sampled (the SDK also sets bit 1, W3C level 2's random trace id)
    assert (headers["x-b3-traceid"], headers["x-b3-spanid"]) == (client.trace_id, client.span_id)
    assert named["GET"].attributes["server.address"] == "backend"
    # Ctrl-C stops it as cleanly as SIGTERM.
    assert frontend.stop(signal.SIGINT) == 0, frontend.output()


@pytest.mark.e2e
def test_http_protobuf_export_and_sigterm_flush(
    start_demo: Callable[..., Any], collector: RunningCollector, tmp_path: Path
) -> None:
    # The seed's 5 s batch delay: the spans are still queued when SIGTERM comes; a process that
    # exits without flushing loses them for good.
    backend = start_demo(
        "backend",
        {
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{collector.http}",
            "OTEL_BSP_SCHEDULE_DELAY": "5000",
            "DB_PATH": str(tmp_path / "b.sqlite"),
        },
    )
    backend.wait_for_line(f"OTLP http/protobuf to http://{collector.http}/v1/traces")
    trace_id = uuid.uuid4().hex
    request = urllib.request.Request(
        address(backend, "backend") + "/api/users",
        headers={"traceparent": f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"},
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=WAIT_S) as response:
        assert response.status == 200
    assert backend.stop(signal.SIGTERM) == 0
    spans = collector.store.wait_for(
        lambda all_: len([s for s in all_ if s.trace_id == trace_id]) >= 3, "the flushed backend spans"
    )
    assert {s.name for s in spans if s.trace_id == trace_id} == {
        "GET /api/users",
        "handleUsers",
        "queryDatabase",
    }


# ---------------------------------------------------------------- the gRPC hop (no sidecars)

GRPC_NAME = "meshtrace.demo.Users/Count"


@pytest.fixture(scope="module")
def grpc_demo(start_demo: Callable[..., Any], collector: RunningCollector) -> Demo:
    """A backend serving the gRPC API too, and a frontend that calls it on every /api/data."""
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint}
    backend = start_demo("backend", {**env, "GRPC_PORT": "0"})
    grpc_host, grpc_port = backend.listeners["backend-grpc"]
    frontend = start_demo(
        "frontend",
        {**env, "BACKEND_URL": address(backend, "backend"), "BACKEND_GRPC": f"{grpc_host}:{grpc_port}"},
    )
    return Demo(collector.store, address(frontend, "frontend"), address(backend, "backend"))


def test_the_grpc_hop_joins_the_trace_with_rpc_spans(grpc_demo: Demo) -> None:
    """Before: the demo had no gRPC service; the SDK had no gRPC instrumentation."""
    request_id = str(uuid.uuid4())
    status, body = grpc_demo.get("/api/data", {"x-request-id": request_id})
    assert status == 200, body
    assert '"backend_grpc": {"count": 3}' in body
    spans = grpc_demo.trace_with_request_id(request_id, len(SEED_SPANS) + 2)
    grpc_spans = [s for s in spans if s.name == GRPC_NAME]
    client = next(s for s in grpc_spans if s.kind == CLIENT)
    server = next(s for s in grpc_spans if s.kind == SERVER)
    assert (client.service, server.service) == ("frontend", "backend")
    seed = by_name([s for s in spans if s.name != GRPC_NAME])
    assert set(seed) == set(SEED_SPANS)  # the seed's trace, plus the gRPC pair
    assert client.parent_id == seed["handleData"].span_id
    assert server.parent_id == client.span_id  # the context crossed in the gRPC metadata
    for span in (client, server):
        assert span.attributes["rpc.system"] == "grpc"
        assert span.attributes["rpc.service"] == "meshtrace.demo.Users"
        assert span.attributes["rpc.method"] == "Count"
        assert span.attributes["rpc.grpc.status_code"] == 0
        assert span.status == UNSET
