"""Synthetic mesh traces for the store benchmark and tests: each trace is what a two-service mesh
records for one request (ingress SERVER span, the caller sidecar's CLIENT span, the callee's
SERVER span and an INTERNAL database span), with Istio-like tags."""

from __future__ import annotations

import random

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span, Status

FRONTEND = "frontend.default"
BACKEND = "backend.default"


def _kv(key: str, value: str | int | bool | float) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def _resource(request: ExportTraceServiceRequest, service: str, pod: str) -> ResourceSpans:
    rs = request.resource_spans.add()
    rs.resource.attributes.extend(
        [_kv("service.name", service), _kv("k8s.pod.name", pod), _kv("k8s.namespace.name", "default")]
    )
    return rs


def _span(
    rs: ResourceSpans,
    trace_id: bytes,
    parent: bytes,
    name: str,
    kind: int,
    start_ns: int,
    duration_ns: int,
    rng: random.Random,
    attributes: list[KeyValue],
) -> Span:
    ss = rs.scope_spans[0] if rs.scope_spans else rs.scope_spans.add()
    if not ss.scope.name:
        ss.scope.name = "meshtrace.sidecar"
        ss.scope.version = "0.1.0"
    span = ss.spans.add()
    span.trace_id = trace_id
    span.span_id = rng.randbytes(8)
    if parent:
        span.parent_span_id = parent
    span.name = name
    span.kind = kind
    span.start_time_unix_nano = start_ns
    span.end_time_unix_nano = start_ns + duration_ns
    span.flags = 0x101
    span.attributes.extend(attributes)
    return span


def mesh_trace(
    start_ns: int, rng: random.Random, *, error: bool = False, trace_id: bytes | None = None
) -> ExportTraceServiceRequest:
    """One 4-span trace starting at `start_ns`; `error` makes the backend answer 500."""
    tid = trace_id or rng.randbytes(16)
    status_code = 500 if error else 200
    request_id = f"{rng.getrandbits(128):032x}"
    total = rng.randint(2_000_000, 80_000_000)
    request = ExportTraceServiceRequest()
    front = _resource(request, FRONTEND, f"frontend-{rng.randint(0, 2)}")
    back = _resource(request, BACKEND, f"backend-{rng.randint(0, 2)}")
    path = rng.choice(["/", "/api/items", "/api/checkout", "/healthz"])
    http = [
        _kv("http.request.method", "GET"),
        _kv("url.path", path),
        _kv("http.response.status_code", status_code),
        _kv("guid:x-request-id", request_id),
        _kv("component", "proxy"),
        _kv("istio.namespace", "default"),
    ]
    root = _span(
        front,
        tid,
        b"",
        "frontend.default.svc.cluster.local:8080/*",
        Span.SPAN_KIND_SERVER,
        start_ns,
        total,
        rng,
        [*http, _kv("istio.canonical_service", "frontend")],
    )
    client = _span(
        front,
        tid,
        root.span_id,
        "backend.default.svc.cluster.local:8080/*",
        Span.SPAN_KIND_CLIENT,
        start_ns + 200_000,
        total - 400_000,
        rng,
        [*http, _kv("upstream_cluster", "outbound|8080||backend.default.svc.cluster.local")],
    )
    server = _span(
        back,
        tid,
        client.span_id,
        "backend.default.svc.cluster.local:8080/*",
        Span.SPAN_KIND_SERVER,
        start_ns + 400_000,
        total - 800_000,
        rng,
        [*http, _kv("istio.canonical_service", "backend")],
    )
    _span(
        back,
        tid,
        server.span_id,
        "SELECT items",
        Span.SPAN_KIND_INTERNAL,
        start_ns + 600_000,
        (total - 1_200_000) // 2,
        rng,
        [_kv("db.system.name", "sqlite"), _kv("db.query.text", "SELECT * FROM items WHERE id = ?")],
    )
    if error:
        for span in (client, server):
            span.status.code = Status.STATUS_CODE_ERROR
            span.attributes.append(_kv("error", True))
        server.status.message = "internal error"
        event = server.events.add(time_unix_nano=start_ns + 500_000, name="exception")
        event.attributes.append(_kv("exception.message", "database is locked"))
    return request


def mesh_traces(
    count: int, start_ns: int, step_ns: int, seed: int = 1, error_every: int = 20
) -> ExportTraceServiceRequest:
    """`count` traces, one every `step_ns` from `start_ns`; every `error_every`-th one fails."""
    rng = random.Random(seed)
    out = ExportTraceServiceRequest()
    for i in range(count):
        part = mesh_trace(start_ns + i * step_ns, rng, error=error_every > 0 and i % error_every == 0)
        out.resource_spans.extend(part.resource_spans)
    return out
