"""Fixtures for the render tests: the seed's manifests and the built-in examples, each rendered
once per session by the real `meshtrace render` command."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# Test modules import deploy_helpers (pytest runs with --import-mode=importlib).
sys.path.insert(0, str(Path(__file__).resolve().parent))
from deploy_helpers import EXAMPLES, render

_RENDERED: dict[str, Path] = {}


def _once(name: str, src: Path, factory: pytest.TempPathFactory) -> Path:
    if name not in _RENDERED:
        _RENDERED[name] = render(src, factory.mktemp(f"render-{name}"))
    return _RENDERED[name]


@pytest.fixture
def seed_out(seed_manifests: Path, tmp_path_factory: pytest.TempPathFactory, starts_processes: None) -> Path:
    """The seed's manifests rendered (the folder `meshtrace up -f` reads)."""
    return _once("seed", seed_manifests, tmp_path_factory)


@pytest.fixture
def examples_out(tmp_path_factory: pytest.TempPathFactory, starts_processes: None) -> Path:
    """meshtrace/examples/seed rendered."""
    return _once("examples", EXAMPLES, tmp_path_factory)


@pytest.fixture(params=["seed", "examples"])
def out(request: pytest.FixtureRequest, starts_processes: None) -> Path:
    """Each input rendered: tests using it run for both."""
    path: Path = request.getfixturevalue(f"{request.param}_out")
    return path
