"""Helpers for the render tests: run `meshtrace render` as a real process, read what it wrote."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

EXAMPLES = Path(__file__).resolve().parents[2] / "meshtrace" / "examples" / "seed"


def run_meshtrace(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meshtrace", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def render(src: Path, out: Path, *extra: str) -> Path:
    proc = run_meshtrace("render", "-f", str(src), "-o", str(out), *extra)
    assert proc.returncode == 0, proc.stderr
    return out


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def one(path: Path, kind: str) -> dict[str, Any]:
    found = [d for d in documents(path) if d["kind"] == kind]
    assert len(found) == 1, f"{path}: {len(found)} {kind}"
    return found[0]


def promtool() -> str:
    """Debian's promtool; a missing one fails in CI (CI is set) and skips on a laptop."""
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is not installed (apt-get install prometheus)")
        pytest.skip("promtool is not installed")
    return found
