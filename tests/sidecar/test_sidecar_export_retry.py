"""The sidecar's span export when the collector refuses (issue 10: no acknowledged span is lost):
real sidecar processes export to a server that refuses as the collector does under admission
control or memory_limiter (OTLP/HTTP 503/429 + Retry-After, gRPC UNAVAILABLE / RESOURCE_EXHAUSTED
+ RetryInfo, Zipkin 429/503), then accepts. Every span arrives or is counted as dropped, exactly."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from sidecar_helpers import via_proxy

REQUESTS = 12  # each makes two spans: the frontend's CLIENT and the backend's SERVER


class Script:
    """What a fake collector answers: the first `refusals` exports are refused, then (unless
    `refuse_forever`) accepted; accepted spans are counted."""

    def __init__(self, refusals: int = 0) -> None:
        self.refusals = refusals
        self.refuse_forever = False
        self.reject_per_batch = 0  # partial success: spans rejected in each accepted export
        self.spans = 0
        self.rejected = 0
        self.calls = 0
        self.lock = threading.Lock()

    def refuse(self) -> bool:
        with self.lock:
            self.calls += 1
            if self.refuse_forever or self.refusals > 0:
                self.refusals -= 1
                return True
            return False

    def accept(self, count: int) -> int:
        """Record `count` spans; the number rejected (partial success)."""
        with self.lock:
            rejected = min(count, self.reject_per_batch)
            self.spans += count - rejected
            self.rejected += rejected
            return rejected


def span_count(body: bytes) -> int:
    req = ExportTraceServiceRequest.FromString(body)
    return sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)


def http_collector(harness: Any, host: str, script: Script, status: int, zipkin: bool = False) -> Any:
    """An OTLP/HTTP (or Zipkin) endpoint refusing with `status` + `Retry-After: 1` per the script."""

    class Handler(harness._Quiet):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            answer = b""
            if script.refuse():
                self.send_response(status)
                self.send_header("retry-after", "1")
            else:
                rejected = script.accept(len(json.loads(body)) if zipkin else span_count(body))
                self.send_response(202 if zipkin else 200)
                if rejected:
                    response = ExportTraceServiceResponse()
                    response.partial_success.rejected_spans = rejected
                    response.partial_success.error_message = "invalid trace id"
                    answer = response.SerializeToString()
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

    return harness.Server(host, Handler)


def retry_info(code: grpc.StatusCode, seconds: int) -> tuple[tuple[str, bytes], ...]:
    status = status_pb2.Status(code=code.value[0], message="refused")
    info = error_details_pb2.RetryInfo()
    info.retry_delay.seconds = seconds
    status.details.add().Pack(info)
    return (("grpc-status-details-bin", status.SerializeToString()),)


@pytest.fixture
def grpc_collector() -> Iterator[Callable[[str, Script, grpc.StatusCode, bool], int]]:
    """A real gRPC TraceService refusing with `code` (+ RetryInfo 1 s when asked) per the script."""
    started: list[grpc.Server] = []

    def start(host: str, script: Script, code: grpc.StatusCode, with_retry_info: bool) -> int:
        def export(request: bytes, context: grpc.ServicerContext) -> bytes:
            if script.refuse():
                if with_retry_info:
                    context.set_trailing_metadata(retry_info(code, 1))
                context.abort(code, "refused")
            script.accept(span_count(request))
            return ExportTraceServiceResponse().SerializeToString()

        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        handler = grpc.unary_unary_rpc_method_handler(export)  # bytes in, bytes out
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "opentelemetry.proto.collector.trace.v1.TraceService", {"Export": handler}
                ),
            )
        )
        port = server.add_insecure_port(f"{host}:0")
        server.start()
        started.append(server)
        return port

    yield start
    for server in started:
        server.stop(0)


def provider(protocol: str, endpoint: str) -> dict[str, Any]:
    path = "/api/v2/spans" if protocol == "zipkin" else "/v1/traces"
    kind = "zipkin" if protocol == "zipkin" else "opentelemetry"
    return {"name": "otel", "type": kind, "protocol": protocol, "path": path, "endpoint": endpoint,
            "timeout_s": 2.0, "max_tag_length": 256}  # fmt: skip


def dropped(mesh: Any) -> dict[str, float]:
    """meshtrace_sidecar_spans_dropped_total by reason, summed over both sidecars."""
    out: dict[str, float] = {}
    for proc in (mesh.frontend, mesh.backend):
        for sample in mesh.metrics(proc).get("meshtrace_sidecar_spans_dropped", []):
            if sample.name.endswith("_total"):
                reason = sample.labels["reason"]
                out[reason] = out.get(reason, 0) + sample.value
    return out


def metric(mesh: Any, name: str) -> float:
    """A sidecar metric summed over both sidecars (counters by their `_total` sample)."""
    family = name.removesuffix("_total")
    return sum(
        s.value
        for p in (mesh.frontend, mesh.backend)
        for s in mesh.metrics(p).get(family, [])
        if s.name == name
    )


def traffic(mesh: Any, n: int = REQUESTS) -> None:
    started = time.monotonic()
    for _ in range(n):
        status, _, _ = via_proxy(mesh, "http://backend:8080/echo")
        assert status == 200
    assert time.monotonic() - started < 10  # refusals never hold requests up


@pytest.mark.parametrize(
    ("protocol", "status"), [("http", 503), ("http", 429), ("zipkin", 429), ("zipkin", 503)]
)
def test_http_refusals_are_retried_until_every_span_arrives(
    mesh_factory: Any, harness: Any, servers: Any, protocol: str, status: int, wait_until: Callable[..., Any]
) -> None:
    ip = harness.loopback()
    script = Script(refusals=4)
    rx = servers(http_collector(harness, ip, script, status, zipkin=protocol == "zipkin"))
    mesh = mesh_factory(100.0, provider=provider(protocol, f"http://{ip}:{rx.port}"))
    traffic(mesh)
    wait_until(lambda: script.spans >= 2 * REQUESTS, "every span", timeout=20.0)
    mesh.settled()  # nothing more arrives (no duplicates) and nothing was counted as lost
    assert script.spans == 2 * REQUESTS
    assert dropped(mesh) == {"buffer_full": 0, "export_failed": 0, "rejected": 0, "shutdown": 0}
    assert metric(mesh, "meshtrace_sidecar_span_export_retries_total") >= 4
    assert metric(mesh, "meshtrace_sidecar_spans_exported_total") == 2 * REQUESTS


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED])
def test_grpc_refusals_with_retry_info_are_retried(
    mesh_factory: Any,
    harness: Any,
    grpc_collector: Any,
    code: grpc.StatusCode,
    wait_until: Callable[..., Any],
) -> None:
    ip = harness.loopback()
    script = Script(refusals=4)
    port = grpc_collector(ip, script, code, True)
    mesh = mesh_factory(100.0, provider=provider("grpc", f"http://{ip}:{port}"))
    traffic(mesh)
    wait_until(lambda: script.spans >= 2 * REQUESTS, "every span", timeout=20.0)
    mesh.settled()
    assert script.spans == 2 * REQUESTS
    assert sum(dropped(mesh).values()) == 0


def test_resource_exhausted_without_retry_info_is_final(
    mesh_factory: Any, harness: Any, grpc_collector: Any, wait_until: Callable[..., Any]
) -> None:
    """OTLP: RESOURCE_EXHAUSTED is retryable only when the server says it can recover (RetryInfo):
    without it the batch is dropped at once and counted as export_failed."""
    ip = harness.loopback()
    script = Script()
    script.refuse_forever = True
    port = grpc_collector(ip, script, grpc.StatusCode.RESOURCE_EXHAUSTED, False)
    mesh = mesh_factory(100.0, provider=provider("grpc", f"http://{ip}:{port}"))
    traffic(mesh)
    wait_until(lambda: sum(dropped(mesh).values()) >= 2 * REQUESTS, "every span dropped", timeout=20.0)
    assert dropped(mesh)["export_failed"] == 2 * REQUESTS
    assert metric(mesh, "meshtrace_sidecar_span_export_retries_total") == 0


def test_full_buffer_drops_are_counted_exactly(
    mesh_factory: Any, harness: Any, servers: Any, wait_until: Callable[..., Any]
) -> None:
    """While the collector refuses, a small buffer fills: what does not fit is dropped and
    counted; once the collector accepts, the rest arrives. Sent = arrived + counted, exactly."""
    ip = harness.loopback()
    script = Script()
    script.refuse_forever = True
    rx = servers(http_collector(harness, ip, script, 503))
    # 2 spans of ~880 bytes fit
    mesh = mesh_factory(
        100.0, "--span-buffer-bytes", "2500", provider=provider("http", f"http://{ip}:{rx.port}")
    )
    traffic(mesh)
    assert dropped(mesh)["buffer_full"] > 0
    assert metric(mesh, "meshtrace_sidecar_span_buffer_bytes") <= 2 * 2500
    script.refuse_forever = False
    wait_until(
        lambda: script.spans + dropped(mesh)["buffer_full"] >= 2 * REQUESTS,
        "every span sent or dropped",
        timeout=20.0,
    )
    mesh.settled()
    counted = dropped(mesh)
    assert script.spans + counted["buffer_full"] == 2 * REQUESTS
    assert counted["export_failed"] == counted["rejected"] == counted["shutdown"] == 0
    assert metric(mesh, "meshtrace_sidecar_spans_queued") == 0
    with urllib.request.urlopen(f"http://{mesh.frontend.address('admin')}/stats", timeout=5) as r:
        stats = dict(line.split(": ", 1) for line in r.read().decode().splitlines())
    assert int(stats["tracing.spans_dropped"]) == int(stats["tracing.spans_dropped.buffer_full"]) > 0
    assert "dropped" in mesh.frontend.output() and "buffer_full" in mesh.frontend.output()


def test_partial_success_is_counted_not_retried(
    mesh_factory: Any, harness: Any, servers: Any, wait_until: Callable[..., Any]
) -> None:
    ip = harness.loopback()
    script = Script()
    script.reject_per_batch = 1
    rx = servers(http_collector(harness, ip, script, 503))
    mesh = mesh_factory(100.0, provider=provider("http", f"http://{ip}:{rx.port}"))
    traffic(mesh)
    wait_until(lambda: script.spans + script.rejected >= 2 * REQUESTS, "every span answered", timeout=20.0)
    mesh.settled()
    assert script.spans + script.rejected == 2 * REQUESTS  # nothing sent twice
    assert dropped(mesh)["rejected"] == script.rejected > 0
    assert metric(mesh, "meshtrace_sidecar_spans_exported_total") == script.spans


def test_down_collector_costs_spans_not_requests_and_loses_none(
    mesh_factory: Any,
    harness: Any,
    meshtrace_process: Any,
    default_collector_args: list[str],
    collector_metric: Callable[..., float],
    tmp_path: Any,
    wait_until: Callable[..., Any],
) -> None:
    """No collector listening (connection refused): requests are served at once, the spans wait
    in the sidecars' buffers; a real collector then starts on that address and gets every one."""
    ip = harness.loopback()
    port = harness.free_port(ip)
    mesh = mesh_factory(100.0, provider=provider("http", f"http://{ip}:{port}"))
    traffic(mesh, 20)
    wait_until(
        lambda: metric(mesh, "meshtrace_sidecar_span_export_retries_total") >= 2, "2 retries", timeout=20.0
    )
    assert metric(mesh, "meshtrace_sidecar_spans_queued") == 40
    assert sum(dropped(mesh).values()) == 0
    collector = meshtrace_process(
        [*default_collector_args, "--set", f"receivers.otlp.protocols.http.endpoint={ip}:{port}"],
        env={"MESHTRACE_DATA_DIR": str(tmp_path)},
    )
    collector.wait_for_listeners("otlp-http", "metrics", timeout=60)
    wait_until(
        lambda: collector_metric(collector, "otelcol_receiver_accepted_spans") >= 40, "40 spans", timeout=40
    )
    assert collector_metric(collector, "otelcol_receiver_accepted_spans") == 40
    assert metric(mesh, "meshtrace_sidecar_spans_exported_total") == 40
    assert sum(dropped(mesh).values()) == 0


def test_shutdown_counts_what_it_could_not_send(
    mesh_factory: Any, harness: Any, servers: Any, wait_until: Callable[..., Any]
) -> None:
    """SIGTERM while the collector refuses: one last try, then every span still held is logged
    as dropped (reason shutdown), none silently."""
    ip = harness.loopback()
    script = Script()
    script.refuse_forever = True
    rx = servers(http_collector(harness, ip, script, 503))
    mesh = mesh_factory(100.0, provider=provider("http", f"http://{ip}:{rx.port}"))
    traffic(mesh)
    wait_until(
        lambda: metric(mesh, "meshtrace_sidecar_span_export_retries_total") >= 2, "2 retries", timeout=20.0
    )
    assert mesh.frontend.stop() == 0
    counts = re.findall(r"dropped (\d+) spans \(shutdown\)", mesh.frontend.output())
    assert sum(int(n) for n in counts) == REQUESTS  # the frontend's CLIENT spans
    assert script.spans == 0


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_real_collectors_memory_limiter_refusal_is_retried(
    mesh_factory: Any,
    harness: Any,
    meshtrace_process: Any,
    default_collector_args: list[str],
    collector_metric: Callable[..., float],
    tmp_path: Any,
    protocol: str,
    wait_until: Callable[..., Any],
) -> None:
    """A real collector whose memory_limiter refuses everything (limit below its own RSS: 503 +
    Retry-After / UNAVAILABLE + RetryInfo), replaced on the same address by one that accepts:
    the sidecars' spans all reach the second one's store."""
    ip = harness.loopback()
    port = harness.free_port(ip)
    key = f"receivers.otlp.protocols.{protocol}.endpoint"

    def collector(*sets: str) -> Any:
        args = [*default_collector_args, "--set", f"{key}={ip}:{port}"]
        for item in sets:
            args += ["--set", item]
        proc = meshtrace_process(args, env={"MESHTRACE_DATA_DIR": str(tmp_path)})
        proc.wait_for_listeners(f"otlp-{protocol}", "metrics", timeout=60)
        return proc

    refusing = collector("processors.memory_limiter.limit_mib=5")
    mesh = mesh_factory(100.0, provider=provider(protocol, f"http://{ip}:{port}"))
    traffic(mesh)
    # both sidecars refused at least twice (a refusal before decoding counts no spans there)
    wait_until(
        lambda: metric(mesh, "meshtrace_sidecar_span_export_retries_total") >= 4, "4 retries", timeout=20.0
    )
    assert collector_metric(refusing, "otelcol_receiver_accepted_spans") == 0
    assert "retrying in" in mesh.frontend.output()
    assert refusing.stop() == 0
    accepting = collector()
    wait_until(
        lambda: collector_metric(accepting, "otelcol_receiver_accepted_spans") >= 2 * REQUESTS,
        "every span",
        40,
    )
    assert collector_metric(accepting, "otelcol_receiver_accepted_spans") == 2 * REQUESTS
    assert sum(dropped(mesh).values()) == 0
