"""`meshtrace bench collector`: how many spans per second the collector carries, at what CPU and RSS.

A load generator sends pre-encoded OTLP/gRPC requests (100 spans x 20 attributes) over several
connections to a real `meshtrace collector` process, for a bounded number of spans and time. The
collector's CPU time and peak RSS come from /proc; a batch counts as delivered when the
collector's own `otelcol_exporter_sent_spans` says so. The sink for `otlp_grpc` is a minimal gRPC
server in this process that parses and counts what arrives. The baseline row sends the same load
straight to that sink: the ceiling the load generator and sink reach without a collector.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import grpc
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from meshtrace import ready
from meshtrace.bench.report import cpu_seconds, markdown_table, peak_rss_mib

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
EXPORT = f"/{SERVICE}/Export"


def make_request(spans: int = 100, attributes: int = 20, seed: int = 0) -> bytes:
    """One encoded ExportTraceServiceRequest like a busy service sends."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.add(key="service.name", value=AnyValue(string_value="bench"))
    ss = rs.scope_spans.add()
    ss.scope.name = "meshtrace.bench"
    for i in range(spans):
        span = ss.spans.add(
            trace_id=(seed * spans + i + 1).to_bytes(16, "big"),  # never all zeros (refused)
            span_id=(i + 1).to_bytes(8, "big"),
            name=f"GET /api/items/{i % 10}",
            kind=2,
            start_time_unix_nano=1_700_000_000_000_000_000 + i,
            end_time_unix_nano=1_700_000_000_001_000_000 + i,
        )
        for a in range(attributes):
            span.attributes.add(key=f"attribute.{a}", value=AnyValue(string_value=f"value-{a}-{i}"))
    return req.SerializeToString()


class Sink:
    """A minimal OTLP/gRPC server that counts the spans it receives."""

    def __init__(self) -> None:
        self.spans = 0
        self.port = 0
        self._server: grpc.aio.Server | None = None

    async def _export(self, request: bytes, context: Any) -> bytes:
        message = ExportTraceServiceRequest()
        message.ParseFromString(request)
        self.spans += sum(len(ss.spans) for rs in message.resource_spans for ss in rs.scope_spans)
        return b""

    async def start(self) -> None:
        server = grpc.aio.server(options=[("grpc.max_receive_message_length", 256 * 1024 * 1024)])
        handler = grpc.method_handlers_generic_handler(
            SERVICE, {"Export": grpc.unary_unary_rpc_method_handler(self._export)}
        )
        server.add_generic_rpc_handlers((handler,))
        self.port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        self._server = server

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(0)


async def generate(
    target: str,
    payload: bytes,
    requests: int,
    connections: int,
    concurrency: int,
    rate: float,
    limit_s: float,
) -> int:
    """Send `payload` `requests` times (or until `limit_s`), `rate` requests/s if > 0; the count sent."""
    channels = [
        grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(connections)
    ]
    calls = [ch.unary_unary(EXPORT) for ch in channels]
    sent = 0
    next_slot = 0
    started = time.monotonic()

    async def worker(call: Any) -> None:
        nonlocal sent, next_slot
        while next_slot < requests and time.monotonic() - started < limit_s:
            slot = next_slot
            next_slot += 1
            if rate > 0:
                delay = started + slot / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            try:
                await call(payload, timeout=30)
                sent += 1
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.01)  # refused (queue full / memory limit): try again

    await asyncio.gather(*(worker(calls[i % connections]) for i in range(connections * concurrency)))
    for ch in channels:
        await ch.close()
    return sent


@dataclass
class Row:
    name: str
    spans: int
    seconds: float
    cpu_seconds: float | None
    peak_rss_mib: float | None

    def cells(self) -> list[str]:
        rate = self.spans / self.seconds if self.seconds else 0.0
        cpu = "-" if self.cpu_seconds is None else f"{self.cpu_seconds * 100_000 / max(self.spans, 1):.2f}"
        core = "-" if self.cpu_seconds is None else f"{100 * self.cpu_seconds / self.seconds:.0f}%"
        rss = "-" if self.peak_rss_mib is None else f"{self.peak_rss_mib:.0f}"
        return [self.name, f"{self.spans:,}", f"{self.seconds:.1f}", f"{rate:,.0f}", cpu, core, rss]


HEADER = [
    "pipeline",
    "spans",
    "seconds",
    "spans/s",
    "collector CPU-s per 100k spans",
    "CPU (one core)",
    "peak RSS MiB",
]


def table(rows: list[Row]) -> str:
    return markdown_table(HEADER, [r.cells() for r in rows])


class CollectorProcess:
    def __init__(self, config: dict[str, Any], workdir: Path) -> None:
        path = workdir / "collector.yaml"
        path.write_text(yaml.safe_dump(config))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "meshtrace", "collector", "--config", str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.listeners: dict[str, tuple[str, int]] = {}

    async def ready(self, *components: str, timeout: float = 60) -> None:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while not all(c in self.listeners for c in components):
            line = await asyncio.wait_for(
                asyncio.to_thread(self.proc.stdout.readline), deadline - time.monotonic()
            )
            if not line:
                raise RuntimeError("collector exited before it was ready")
            parsed = ready.parse(line)
            if parsed:
                self.listeners[parsed[0]] = (parsed[1], parsed[2])

    def address(self, component: str) -> str:
        host, port = self.listeners[component]
        return f"{host}:{port}"

    def sent_spans(self) -> float:
        with urllib.request.urlopen(f"http://{self.address('metrics')}/metrics", timeout=5) as response:
            text = response.read().decode()
        return sum(float(v) for v in re.findall(r"^otelcol_exporter_sent_spans\{[^}]*\} (\S+)$", text, re.M))

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def pipeline_config(exporter: dict[str, Any], extensions: dict[str, Any] | None = None) -> dict[str, Any]:
    (name,) = exporter
    return {
        "receivers": {
            "otlp": {"protocols": {"grpc": {"endpoint": "127.0.0.1:0", "max_recv_msg_size_mib": 64}}}
        },
        "processors": {"batch": {}},
        "exporters": exporter,
        "extensions": extensions or {},
        "service": {
            "extensions": list(extensions or {}),
            "pipelines": {"traces": {"receivers": ["otlp"], "processors": ["batch"], "exporters": [name]}},
            "telemetry": {"metrics": {"address": "127.0.0.1:0"}},
        },
    }


@dataclass
class Load:
    requests: int
    connections: int
    concurrency: int
    limit_s: float


async def run_collector_case(
    name: str, config: dict[str, Any], load: Load, payload: bytes, rate: float
) -> Row:
    with tempfile.TemporaryDirectory() as tmp:
        collector = CollectorProcess(config, Path(tmp))
        try:
            await collector.ready("otlp-grpc", "metrics")
            target = collector.address("otlp-grpc")
            await generate(target, payload, 5, 1, 1, 0, 30)  # warm-up, delivered before measuring
            deadline = time.monotonic() + 10
            while collector.sent_spans() < 500 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            warm = collector.sent_spans()
            cpu0, t0 = cpu_seconds(collector.proc.pid), time.monotonic()
            sent = await generate(
                target, payload, load.requests, load.connections, load.concurrency, rate, load.limit_s
            )
            want = warm + sent * 100
            deadline = time.monotonic() + 60
            while collector.sent_spans() < want and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            delivered = int(collector.sent_spans() - warm)
            elapsed = time.monotonic() - t0
            return Row(
                name,
                delivered,
                elapsed,
                cpu_seconds(collector.proc.pid) - cpu0,
                peak_rss_mib(collector.proc.pid),
            )
        finally:
            collector.stop()


async def run_all(load: Load, include_rate: bool) -> list[Row]:
    payload = make_request()
    sink = Sink()
    await sink.start()
    rows = []
    try:
        t0 = time.monotonic()
        sent = await generate(
            f"127.0.0.1:{sink.port}",
            payload,
            load.requests,
            load.connections,
            load.concurrency,
            0,
            load.limit_s,
        )
        rows.append(
            Row(
                "baseline: load generator -> sink (no collector)",
                sent * 100,
                time.monotonic() - t0,
                None,
                None,
            )
        )
        sink_endpoint = {"endpoint": f"127.0.0.1:{sink.port}", "tls": {"insecure": True}}
        with tempfile.TemporaryDirectory() as tmp:
            persistent = {**sink_endpoint, "sending_queue": {"storage": "file_storage"}}
            storage = {"file_storage": {"directory": tmp}}
            cases: list[tuple[str, dict[str, Any], dict[str, Any] | None, float, Load]] = [
                (
                    "otlp -> batch -> otlp_grpc (compression none)",
                    {"otlp_grpc": {**sink_endpoint, "compression": "none"}},
                    None,
                    0,
                    load,
                ),
                (
                    "otlp -> batch -> otlp_grpc (gzip, the default)",
                    {"otlp_grpc": sink_endpoint},
                    None,
                    0,
                    load,
                ),
                (
                    "otlp -> batch -> otlp_grpc (gzip, persistent queue)",
                    {"otlp_grpc": persistent},
                    storage,
                    0,
                    load,
                ),
                ("otlp -> batch -> file", {"file": {"path": f"{tmp}/spans.jsonl"}}, None, 0, load),
            ]
            if include_rate:
                steady = Load(requests=500, connections=2, concurrency=2, limit_s=10)
                cases.append(
                    (
                        "otlp -> batch -> otlp_grpc at 10k spans/s",
                        {"otlp_grpc": sink_endpoint},
                        None,
                        100,
                        steady,
                    )
                )
            for name, exporter, extensions, rate, case_load in cases:
                config = pipeline_config(exporter, extensions)
                rows.append(await run_collector_case(name, config, case_load, payload, rate))
                click.echo(f"done: {name}", err=True)
    finally:
        await sink.stop()
    return rows


@click.command()
@click.option("--spans", default=200_000, show_default=True, help="Spans per max-rate run (100 per request).")
@click.option("--connections", default=4, show_default=True, help="gRPC connections of the load generator.")
@click.option("--concurrency", default=4, show_default=True, help="Requests in flight per connection.")
@click.option(
    "--max-seconds", default=30.0, show_default=True, help="Upper bound on each run's sending time."
)
@click.option(
    "--steady/--no-steady", default=True, show_default=True, help="Also run at 10k spans/s for 5 s."
)
def collector(spans: int, connections: int, concurrency: int, max_seconds: float, steady: bool) -> None:
    """Throughput, CPU and RSS of `meshtrace collector` under pre-encoded OTLP/gRPC load."""
    from meshtrace import aio

    load = Load(max(1, spans // 100), connections, concurrency, max_seconds)
    rows = aio.run(run_all(load, steady))
    click.echo(
        f"requests of 100 spans x 20 attributes ({len(make_request())} bytes); cores: {os.cpu_count()}"
    )
    click.echo(table(rows))
