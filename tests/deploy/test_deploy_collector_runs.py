"""The rendered collector ConfigMap runs in `meshtrace collector` as a real process (MY_POD_IP set
as the downward API would, ports moved to 0): it accepts spans from the official OTLP exporter,
answers the probes' health check, and its self-metrics carry the names the rendered alerts and
dashboard query."""

from __future__ import annotations

import re
import signal
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExportResult


def test_rendered_collector_config_runs(seed_out: Path, tmp_path: Path, meshtrace_process: Any) -> None:
    text = (seed_out / "otel-collector" / "configmap.yaml").read_text()
    # Port 0 everywhere (tests never take fixed ports); everything else as rendered.
    config = re.sub(r"(\$\{env:MY_POD_IP\}):\d+", r"\1:0", text).replace("port: 8888", "port: 0")
    path = tmp_path / "configmap.yaml"
    path.write_text(config)
    proc = meshtrace_process(
        ["collector", "--config", str(path), "--drain-timeout", "1"], env={"MY_POD_IP": "127.0.0.1"}
    )
    proc.wait_for_listeners("otlp-grpc", "otlp-http", "zipkin", "metrics", "health-check")

    with urllib.request.urlopen(f"http://{proc.address('health-check')}/", timeout=5) as resp:
        assert resp.status == 200  # what the readiness and liveness probes call

    tracer = TracerProvider().get_tracer("render-test")
    spans: list[Any] = []
    for i in range(20):
        with tracer.start_as_current_span(f"span-{i}") as span:
            spans.append(span)
    exporter = OTLPSpanExporter(endpoint=f"http://{proc.address('otlp-grpc')}", insecure=True, timeout=5)
    assert exporter.export(spans) == SpanExportResult.SUCCESS
    exporter.shutdown()
    proc.wait_for_line('Traces {"resource spans"')  # the debug exporter (the seed's logging)

    with urllib.request.urlopen(f"http://{proc.address('metrics')}/metrics", timeout=5) as resp:
        metrics = resp.read().decode()
    names = set(re.findall(r"^(otelcol_\w+?)(?:\{| )", metrics, re.M))
    # The names the rendered rules select, spelled as this reader exposes them (no `_total`).
    # meshtrace's memory_limiter still counts only incoming/outgoing items, not the v0.155+
    # otelcol_processor_memory_limiter_refused_spans the real Collector emits.
    groups = yaml.safe_load_all((seed_out / "monitoring" / "prometheus-rules.yaml").read_text())
    exprs = " ".join(r["expr"] for doc in groups if doc for g in doc["spec"]["groups"] for r in g["rules"])
    used = set(re.findall(r"\botelcol_[a-z_]+", exprs))
    assert used
    assert used - names == {"otelcol_processor_memory_limiter_refused_spans"}
    assert proc.stop(signal.SIGTERM, timeout=20) == 0
