"""The seed's two collector ConfigMaps run as they are (endpoints moved to port 0 with --set):
they warn about what a current collector treats differently, accept spans, and keep retrying
their unreachable Jaeger backend without blocking receivers."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExportResult

PORT0 = (
    "--set=receivers.otlp.protocols.grpc.endpoint=127.0.0.1:0",
    "--set=service.telemetry.metrics.address=127.0.0.1:0",
)


def finished_spans(n: int) -> list[Any]:
    """n ended SDK spans to hand to an exporter directly."""
    tracer = TracerProvider().get_tracer("seed-test")
    spans = []
    for i in range(n):
        with tracer.start_as_current_span(f"seed-{i}") as span:
            spans.append(span)
    return spans


@pytest.mark.parametrize(
    ("name", "extra", "expected"),
    [
        (
            "otel-collector.yaml",
            (
                "--set=receivers.otlp.protocols.http.endpoint=127.0.0.1:0",
                "--set=receivers.zipkin.endpoint=127.0.0.1:0",
            ),
            [
                "deprecated alias of 'otlp_grpc'",
                "removed in Collector v0.111",
                "use 'verbosity'",
            ],
        ),
        ("otel-collector-performance.yaml", (), ["deprecated alias of 'otlp_grpc'"]),
    ],
)
def test_seed_config_runs(
    seed_manifests: Path, meshtrace_process: Any, name: str, extra: tuple[str, ...], expected: list[str]
) -> None:
    proc = meshtrace_process(
        ["collector", "--config", str(seed_manifests / name), *PORT0, *extra, "--drain-timeout", "1"]
    )
    proc.wait_for_listeners("otlp-grpc", "metrics")
    for text in expected:
        proc.wait_for_line(text)
    exporter = OTLPSpanExporter(endpoint=f"http://{proc.address('otlp-grpc')}", insecure=True, timeout=5)
    for _ in range(3):
        started = time.monotonic()
        assert exporter.export(finished_spans(50)) == SpanExportResult.SUCCESS
        assert time.monotonic() - started < 3  # the dead backend never blocks the receiver
    exporter.shutdown()
    if name == "otel-collector.yaml":
        proc.wait_for_line('Traces {"resource spans"')  # the logging exporter, run as debug
    proc.wait_for_line("retrying in")  # jaeger-collector is unreachable here: retried, not fatal
    assert proc.stop(signal.SIGTERM, timeout=20) == 0
    assert "shutdown dropped" in proc.output()
