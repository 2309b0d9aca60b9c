"""`up`'s calm terminal: children's lines go to one log file per pod in the run folder (the
terminal keeps warnings, errors and the supervisor's notes), `meshtrace logs` reads them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from meshtrace.runtime.runfolder import KEEP_RUNS, PodLogs, is_trouble, latest_run, new_run

ACCESS_LINE = (
    '[2026-12-06T04:37:37.552Z] "GET /api/errors HTTP/1.1" 500 - via_upstream - "-" 0 43 2 1 "127.0.0.1" '
    '"curl/8" "97329298-ec28" "127.0.0.1:8080" "127.0.1.1:8080" inbound|8080|| - 127.0.1.1:15006 - -'
)


@pytest.mark.parametrize(
    ("line", "shown"),
    [
        (ACCESS_LINE, False),  # even one that says "errors" and 500
        ('2026-12-06 04:37:38,342 INFO meshtrace.collector.debug: debug: Traces {"spans": 2}', False),
        ("meshtrace sidecar: config version dabdb1e45299d49a applied", False),
        ("meshtrace: inbound listening on 127.0.1.1:15006", False),
        ("meshtrace sidecar: control plane 127.0.0.1:15010 unreachable: connection refused", True),
        ("2026-12-06 04:37:30,893 WARNING meshtrace.collector.exporter: retrying in 1s", True),
        ("meshtrace.demo: ERROR query failed", True),
        ("Traceback (most recent call last):", True),
        ("exited with status 1: restarting in 0.5s (restart #1)", True),
        ("did not stop within 15s: killed", True),
    ],
)
def test_the_terminal_keeps_trouble_only(line: str, shown: bool) -> None:
    assert is_trouble(line) is shown


def test_one_log_file_per_pod_with_the_container_named(tmp_path: Path) -> None:
    run = new_run(tmp_path)
    logs = PodLogs(run)
    logs.write("frontend-0/app", "frontend listening")
    logs.write("frontend-0/sidecar", ACCESS_LINE)
    logs.write("istiod", "registered")
    logs.close()
    assert (
        run / "logs" / "frontend-0.log"
    ).read_text() == f"app | frontend listening\nsidecar | {ACCESS_LINE}\n"
    assert (run / "logs" / "istiod.log").read_text() == "registered\n"
    assert list(logs.recent)[-1] == "istiod registered"


def test_old_runs_are_pruned(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for i in range(KEEP_RUNS + 3):
        (runs / f"20200101-0000{i:02d}-1").mkdir(parents=True)
    newest = new_run(tmp_path)
    kept = sorted(p.name for p in runs.iterdir())
    assert len(kept) == KEEP_RUNS and kept[-1] == newest.name
    assert latest_run(tmp_path) == newest


def _logs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meshtrace", "logs", *args], capture_output=True, text=True, timeout=60
    )


@pytest.mark.e2e
def test_meshtrace_logs_lists_and_prints_the_newest_runs_pods(tmp_path: Path) -> None:
    assert _logs("--data-dir", str(tmp_path)).returncode == 2  # no run yet: said, not a crash
    new_run(tmp_path)
    run = new_run(tmp_path)
    logs = PodLogs(run)
    logs.write("backend-0/sidecar", ACCESS_LINE)
    logs.close()
    listing = _logs("--data-dir", str(tmp_path))
    assert listing.returncode == 0 and listing.stdout.split() == [f"{run / 'logs'}:", "backend-0"]
    pod = _logs("--data-dir", str(tmp_path), "backend-0")
    assert pod.returncode == 0 and pod.stdout == f"sidecar | {ACCESS_LINE}\n"
    typo = _logs("--data-dir", str(tmp_path), "backend0")
    assert typo.returncode == 2 and "did you mean backend-0?" in typo.stderr
