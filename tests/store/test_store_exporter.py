"""The store exporter's backpressure: it waits for room while the writer is behind, then refuses."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from meshtrace.collector.component import ComponentID, RefusedError
from meshtrace.model import Traces
from meshtrace.store.exporter import StoreConfig, StoreExporter
from meshtrace.store.synthetic import mesh_trace


def _exporter(tmp_path: Path, max_wait: float) -> StoreExporter:
    config = StoreConfig(path=str(tmp_path / "traces.db"), max_pending_bytes=4096, max_wait=max_wait)
    exporter = StoreExporter(ComponentID("store", f"t{random.random()}"), config)
    exporter.store.open()
    return exporter


_IDS = random.Random(1)


def _traces() -> Traces:
    """A new trace each call: the store keeps one copy of a span sent twice."""
    return Traces.from_message(mesh_trace(time.time_ns(), _IDS))


def test_refuses_after_max_wait_while_the_disk_is_stuck(tmp_path: Path) -> None:
    exporter = _exporter(tmp_path, max_wait=0.3)
    blocker = sqlite3.connect(tmp_path / "traces.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:

        async def flood() -> None:  # concurrent calls, as several receivers' requests would be
            await asyncio.gather(*(exporter.consume_traces(_traces()) for _ in range(100)))

        with pytest.raises(RefusedError):
            asyncio.run(flood())
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
        exporter.store.close()


def test_waits_for_room_instead_of_dropping(tmp_path: Path) -> None:
    exporter = _exporter(tmp_path, max_wait=20)
    blocker = sqlite3.connect(tmp_path / "traces.db", isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")
    threading.Timer(0.5, lambda: blocker.execute("ROLLBACK")).start()
    try:

        async def send() -> None:
            for _ in range(20):
                await exporter.consume_traces(_traces())

        asyncio.run(send())
        assert exporter.store.flush(20)
        assert exporter.store.stats().spans == 20 * 4
    finally:
        blocker.close()
        exporter.store.close()


def test_config_rejects_negative_values() -> None:
    with pytest.raises(ValueError, match="max_wait"):
        StoreConfig(max_wait=-1)
    with pytest.raises(ValueError, match="max_bytes"):
        StoreConfig(max_bytes=-1)


def test_a_span_the_store_cannot_hold_is_counted_and_the_rest_sent(tmp_path: Path) -> None:
    """Issue 10, finding 1: the store exporter failed the whole batch for one bad span (and the
    batch processor then dropped it all); now that span alone is dropped and counted."""
    exporter = _exporter(tmp_path, max_wait=5)
    request = mesh_trace(time.time_ns(), random.Random(1))
    request.resource_spans[0].scope_spans[0].spans[0].end_time_unix_nano = 2**64 - 1
    try:
        asyncio.run(exporter.consume_traces(Traces.from_message(request)))
        assert exporter.metrics.send_failed_spans.value == 1
        assert exporter.metrics.sent_spans.value == 3
        assert exporter.store.stats().spans == 3
    finally:
        exporter.store.close()
