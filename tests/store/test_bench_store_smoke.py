"""`meshtrace bench store` runs end to end at a tiny size and prints its tables (no timing asserted:
performance is the benchmark's job, this only keeps the command from rotting)."""

from __future__ import annotations

from typing import Any


def test_bench_store_runs_and_prints_its_tables(meshtrace_process: Any, tmp_path: Any) -> None:
    args = ["bench", "store", "--spans", "4000", "--ingest-spans", "2048", "--queries", "5"]
    proc = meshtrace_process([*args, "--engine-rows", "1000", "--data-dir", str(tmp_path / "b")])
    assert proc.proc.wait(timeout=240) == 0, proc.output()
    out = proc.output()
    for needle in (
        "through the collector, OTLP/gRPC",
        "bytes on disk per span",
        "trace by id",
        "sqlite",
        "duckdb",
    ):
        assert needle in out, out
    assert "spans stored" in out and "4,0" in out
