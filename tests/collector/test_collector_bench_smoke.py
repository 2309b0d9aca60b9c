"""`meshtrace bench collector` runs end to end on a tiny load and prints its table (a smoke test:
performance itself is measured by running the benchmark, never asserted here)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from meshtrace.bench.collector import Row, make_request, table


def test_request_shape_and_table() -> None:
    req = ExportTraceServiceRequest.FromString(make_request())
    spans = req.resource_spans[0].scope_spans[0].spans
    assert len(spans) == 100 and all(len(s.attributes) == 20 for s in spans)
    text = table([Row("p", 100_000, 2.0, 0.5, 80.0), Row("base", 1000, 1.0, None, None)])
    row = text.splitlines()[2]
    assert [cell.strip() for cell in row.strip("|").split("|")] == [
        "p",
        "100,000",
        "2.0",
        "50,000",
        "0.50",
        "25%",
        "80",
    ]


@pytest.mark.e2e
def test_bench_collector_runs() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "meshtrace",
            "bench",
            "collector",
            "--spans",
            "500",
            "--no-steady",
            "--max-seconds",
            "10",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("| otlp -> batch")]
    assert len(lines) == 4  # none, gzip, gzip with a persistent queue, file
    for line in lines:
        assert "| 500 " in line  # every span delivered
