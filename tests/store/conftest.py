"""Fixtures shared by the store tests."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from meshtrace.store import TraceStore
from meshtrace.store.schema import SCHEMA_VERSION


@pytest.fixture
def store(tmp_path: Path) -> Iterator[TraceStore]:
    """An opened store in a temporary folder, closed at the end of the test."""
    s = TraceStore(tmp_path / "traces.db")
    s.open()
    yield s
    s.close()


class FakeClock:
    """A store clock (ns since the epoch) that moves only when the test says: retention without
    waiting for it."""

    def __init__(self) -> None:
        self.now_ns = time.time_ns()

    def __call__(self) -> int:
        return self.now_ns

    def advance(self, seconds: float) -> None:
        self.now_ns += int(seconds * 1e9)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


class OlderFile:
    """A store file made to look like an older schema's, for migration tests."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.opened: list[TraceStore] = []

    def write(self, request: ExportTraceServiceRequest) -> None:
        """`request` written (committed) by today's store, which is then closed."""
        first = TraceStore(self.path)
        first.open()
        try:
            first.write(request.SerializeToString()).result(10)
        finally:
            first.close()

    def reopen_as(self, version: int, *statements: str) -> TraceStore:
        """The file after `statements` (what schema `version` wrote) and that version number,
        opened by today's store: migrated to SCHEMA_VERSION (checked); closed at the test's end."""
        with sqlite3.connect(self.path) as conn:
            for statement in statements:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version={version}")
        again = TraceStore(self.path)
        again.open()
        self.opened.append(again)
        with sqlite3.connect(self.path) as conn:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        return again


@pytest.fixture
def older_file(tmp_path: Path) -> Iterator[OlderFile]:
    older = OlderFile(tmp_path / "traces.db")
    yield older
    for opened in older.opened:
        opened.close()
