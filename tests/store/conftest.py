"""Fixtures shared by the store tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from meshtrace.store import TraceStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[TraceStore]:
    """An opened store in a temporary folder, closed at the end of the test."""
    s = TraceStore(tmp_path / "traces.db")
    s.open()
    yield s
    s.close()
