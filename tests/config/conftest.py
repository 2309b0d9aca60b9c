"""Fixtures for config tests: manifests written to a temporary folder and loaded."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from meshtrace.config import Bundle, load

# Test modules import config_helpers (pytest runs with --import-mode=importlib).
sys.path.insert(0, str(Path(__file__).resolve().parent))
from config_helpers import MESH


@pytest.fixture
def manifests(tmp_path: Path) -> Callable[..., Bundle]:
    """`manifests(doc, doc, ...)` writes each YAML document to its own file (in order) and loads
    the folder; `manifests(..., mesh=False)` leaves out the default IstioOperator MESH."""

    calls = iter(range(1_000_000))

    def build(*docs: str, mesh: bool = True) -> Bundle:
        folder = tmp_path / f"call{next(calls)}"  # a fresh folder per call: no files left over
        folder.mkdir()
        all_docs = ([MESH] if mesh else []) + list(docs)
        for i, doc in enumerate(all_docs):
            (folder / f"{i:02d}.yaml").write_text(textwrap.dedent(doc).strip() + "\n", encoding="utf-8")
        return load([folder])

    return build
