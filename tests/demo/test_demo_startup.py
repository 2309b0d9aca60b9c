"""Starting a demo service with a setting it cannot use: a clear message naming the variable and
a non-zero exit, never a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest


def run_demo(name: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    full.update({"POD_IP": "127.0.0.1", "PORT": "0", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"})
    full.update(env)
    return subprocess.run(
        [sys.executable, "-m", f"meshtrace.demo.{name}"], env=full, capture_output=True, text=True, timeout=60
    )


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("name", "env", "field"),
    [
        ("frontend", {"BACKEND_URL": "backend:8080"}, "BACKEND_URL"),
        ("frontend", {"PORT": "http"}, "PORT"),
        ("frontend", {"OTEL_TRACES_SAMPLER": "sometimes"}, "OTEL_TRACES_SAMPLER"),
        ("backend", {"DB_PATH": "/proc/meshtrace/users.sqlite"}, "DB_PATH"),
    ],
)
def test_bad_setting_exits_2_naming_it(name: str, env: dict[str, str], field: str, tmp_path: Path) -> None:
    env.setdefault("DB_PATH", str(tmp_path / "b.sqlite"))
    result = run_demo(name, env)
    assert result.returncode == 2, result.stderr
    assert field in result.stderr and "Traceback" not in result.stderr


@pytest.mark.e2e
def test_port_in_use_exits_1() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = run_demo("frontend", {"PORT": str(taken.getsockname()[1])})
    assert result.returncode == 1 and "cannot listen" in result.stderr, result.stderr
