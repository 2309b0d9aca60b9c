"""`meshtrace bench overhead` runs end to end at a tiny size with each load client and prints its
table (no timing asserted: performance is the benchmark's job, this only keeps the command from
rotting); its hey CSV parsing and bin-interpolated percentiles checked on their own."""

from __future__ import annotations

import shutil
from typing import Any

import click
import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshtrace.bench.overhead import parse_hey_csv, percentile

HEY_CSV = """response-time,DNS+dialup,DNS,Request-write,Response-delay,Response-read,status-code,offset
0.0040,0.0005,0.0000,0.0001,0.0033,0.0001,200,0.0143
0.0003,0.0000,0.0000,0.0000,0.0002,0.0000,200,1.2000
0.0005,0.0000,0.0000,0.0000,0.0004,0.0000,503,1.2040
0.0004,0.0000,0.0000,0.0000,0.0003,0.0000,200,1.2080
"""


def test_hey_csv_keeps_the_200s_after_the_warmup_in_ms() -> None:
    latencies, others = parse_hey_csv(HEY_CSV, warmup=1.0)
    assert latencies == pytest.approx([0.3, 0.4])
    assert others == 1


def test_hey_csv_with_a_broken_line_is_a_clear_error() -> None:
    with pytest.raises(click.ClickException, match="unexpected line in hey's CSV"):
        parse_hey_csv(HEY_CSV + "0.00x4,0,0,0,0,0,200,1.3\n", warmup=1.0)


def test_interpolated_percentile_sees_less_than_one_bin() -> None:
    # hey rounds to 0.1 ms: moving a fifth of the requests up one bin moves the median by a fraction
    same = [0.3] * 100
    shifted = [0.3] * 70 + [0.4] * 30
    assert percentile(same, 0.5, 0.1) == pytest.approx(0.3)
    assert 0.3 < percentile(shifted, 0.9, 0.1) < 0.4 + 0.05
    assert percentile(shifted, 0.5, 0.1) < percentile(shifted, 0.9, 0.1)


@given(st.lists(st.integers(0, 300), min_size=1, max_size=200), st.floats(0, 0.99), st.floats(0, 0.99))
def test_interpolated_percentile_is_monotone_and_within_the_values_bins(
    tenths: list[int], q1: float, q2: float
) -> None:
    values = [t / 10 for t in tenths]
    low, high = sorted((q1, q2))
    assert percentile(values, low, 0.1) <= percentile(values, high, 0.1) + 1e-9
    assert min(values) - 0.05 - 1e-9 <= percentile(values, low, 0.1) <= max(values) + 0.05 + 1e-9


def _run(meshtrace_process: Any, client: str) -> str:
    args = ["bench", "overhead", "--rates", "100", "--sampling", "10", "--duration", "1", "--warmup", "0.3"]
    proc = meshtrace_process([*args, "--client", client, "--no-nginx"])
    assert proc.proc.wait(timeout=180) == 0, proc.output()
    out = proc.output()
    rows = [line.split(" | ") for line in out.splitlines() if line.startswith(f"| 100 | {client} |")]
    assert [r[2] for r in rows] == ["direct", "direct +0.2 ms", "mesh", "mesh mTLS"], out
    for row in rows:
        assert float(row[4]) > 50, out  # answered/s: the load went through every path
    assert "meshtrace + tracing (10% sampling)" in out, out
    return out


def test_bench_overhead_runs_with_the_python_client(meshtrace_process: Any) -> None:
    _run(meshtrace_process, "python")


@pytest.mark.skipif(shutil.which("hey") is None, reason="hey is not installed (apt-get install hey)")
def test_bench_overhead_runs_with_hey(meshtrace_process: Any) -> None:
    _run(meshtrace_process, "hey")


@pytest.mark.skipif(
    shutil.which("h2load") is None, reason="h2load is not installed (apt-get install nghttp2-client)"
)
def test_bench_overhead_grpc_runs_with_h2load(meshtrace_process: Any) -> None:
    """`--protocol grpc`: unary calls by h2load; the floor (direct) and the sidecar pair, with
    and without mTLS, all answer."""
    args = [
        "bench",
        "overhead",
        "--protocol",
        "grpc",
        "--rates",
        "100",
        "--sampling",
        "10",
        "--duration",
        "1",
    ]
    proc = meshtrace_process([*args, "--warmup", "0.3", "--no-nginx"])
    assert proc.proc.wait(timeout=180) == 0, proc.output()
    out = proc.output()
    rows = {
        r[2]: r
        for r in (line.split(" | ") for line in out.splitlines() if line.startswith("| 100 | h2load |"))
    }
    assert list(rows) == ["direct", "direct +0.2 ms", "mesh", "mesh mTLS"], out
    assert float(rows["direct"][4]) > 50 and float(rows["direct +0.2 ms"][4]) > 50, out
    assert "meshtrace + tracing (10% sampling)" in out, out
    assert all(float(rows[p][4]) > 50 for p in ("mesh", "mesh mTLS")), out
