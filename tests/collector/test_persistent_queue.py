"""The persistent sending queue on a real `file_storage` (SQLite files in tmp_path): what a restart
finds, what it sends again, the lock, the bound, and QueuedSender delivering after a "crash"
(the queue closed without draining, as SIGKILL leaves it)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from meshtrace.collector.component import Component, ComponentID, Kind, StorageError
from meshtrace.collector.exporters.helper import QueueConfig, QueuedSender, RetryConfig
from meshtrace.collector.exporters.helper.queue import PersistentQueue, QueueFull
from meshtrace.collector.extensions.file_storage import FileStorage, client_file_name, sanitize
from meshtrace.collector.extensions.file_storage.config import CompactionConfig, FileStorageConfig
from meshtrace.model import Traces

EXPORTER = ComponentID("otlp_grpc", "agent")


def traces(name: str, spans: int = 1) -> Traces:
    req = ExportTraceServiceRequest()
    ss = req.resource_spans.add().scope_spans.add()
    for i in range(spans):
        ss.spans.add(name=f"{name}-{i}")
    return Traces.from_message(req)


def names(t: Traces) -> list[str]:
    return [s.name for rs in t.message().resource_spans for ss in rs.scope_spans for s in ss.spans]


class Host:
    def __init__(self, extensions: dict[ComponentID, Any]) -> None:
        self.extensions = extensions

    def get_extension(self, id: ComponentID) -> Component | None:
        found: Component | None = self.extensions.get(id)
        return found

    def get_exporter(self, id: ComponentID) -> Component | None:
        return None


async def storage(directory: Path, **config: Any) -> FileStorage:
    ext = FileStorage(ComponentID("file_storage"), FileStorageConfig(directory=str(directory), **config))
    await ext.start(Host({}))
    return ext


async def open_queue(ext: FileStorage, capacity: int = 100) -> PersistentQueue:
    return await PersistentQueue.open(
        await ext.get_client(Kind.EXPORTER, EXPORTER, "traces"), capacity, False
    )


def test_requests_not_done_survive_a_restart_and_are_sent_again(tmp_path: Path) -> None:
    async def main() -> None:
        ext = await storage(tmp_path)
        queue = await open_queue(ext)
        for n in range(4):
            await queue.put(traces(f"b{n}", spans=n + 1))
        _, first = await queue.get()
        token1, _ = await queue.get()
        await queue.done(token1)  # sent: b1 is gone for good
        assert names(first) == ["b0-0"]
        await ext.shutdown()  # b0 was being sent: as if the process died here

        queue = await open_queue(await storage(tmp_path))
        assert queue.size() == 3
        got = [await queue.get() for _ in range(3)]
        assert [names(t)[0] for _, t in got] == ["b0-0", "b2-0", "b3-0"]
        assert [t.span_count() for _, t in got] == [1, 3, 4]
        for token, _ in got:
            await queue.done(token)
        assert queue.size() == 0
        await queue.close()

        queue = await open_queue(await storage(tmp_path))
        assert queue.size() == 0  # nothing comes back once done
        await queue.put(traces("after"))
        _, again = await queue.get()
        assert names(again) == ["after-0"]
        await queue.close()

    asyncio.run(main())


def test_a_full_queue_refuses_and_a_second_process_cannot_open_the_same_file(tmp_path: Path) -> None:
    async def main() -> None:
        ext = await storage(tmp_path)
        queue = await open_queue(ext, capacity=2)
        await queue.put(traces("a"))
        await queue.put(traces("b"))
        with pytest.raises(QueueFull):
            await queue.put(traces("c"))
        other = await storage(tmp_path, timeout=0.2)
        with pytest.raises(StorageError, match="locked"):
            await other.get_client(Kind.EXPORTER, EXPORTER, "traces")
        await ext.shutdown()

    asyncio.run(main())


def test_sender_delivers_after_a_crash_what_it_had_acknowledged(tmp_path: Path) -> None:
    async def main() -> None:
        fast = RetryConfig(initial_interval=0.01, max_interval=0.02, max_elapsed_time=0)
        config = QueueConfig(num_consumers=2, queue_size=100, storage="file_storage")

        async def down(t: Traces) -> None:
            raise ConnectionError("backend down")

        ext = await storage(tmp_path)
        sender = QueuedSender(EXPORTER, down, config, fast)
        await sender.open(Host({ComponentID("file_storage"): ext}))
        sender.start()
        for n in range(5):
            await sender.consume_traces(traces(f"b{n}"))  # acknowledged
        await asyncio.sleep(0.05)  # the workers are retrying
        for task in sender._workers:  # the process dies: no drain, no done
            task.cancel()
        await ext.shutdown()

        received: list[str] = []

        async def up(t: Traces) -> None:
            received.extend(names(t))

        ext = await storage(tmp_path)
        sender = QueuedSender(EXPORTER, up, config, fast)
        await sender.open(Host({ComponentID("file_storage"): ext}))
        sender.start()
        await sender.drain(5)
        assert sorted(received) == [f"b{n}-0" for n in range(5)]
        await ext.shutdown()

    asyncio.run(main())


def test_file_names_follow_the_collectors_sanitizing_rule() -> None:
    assert sanitize("logs/container") == "logs~002Fcontainer"
    assert sanitize("a~b") == "a~007Eb"
    assert client_file_name(Kind.EXPORTER, EXPORTER, "traces") == "exporter_otlp_grpc_agent_traces"


def test_a_missing_directory_is_an_error_unless_create_directory(tmp_path: Path) -> None:
    async def main() -> None:
        with pytest.raises(StorageError, match="create_directory"):
            await storage(tmp_path / "nope")
        ext = await storage(tmp_path / "made" / "here", create_directory=True)
        assert (tmp_path / "made" / "here").is_dir()
        await ext.shutdown()

    asyncio.run(main())


def allocated_bytes(file: Path) -> int:
    """Pages the database holds, as SQLite sees it (WAL included), from a reader of its own."""
    with contextlib.closing(sqlite3.connect(f"file:{file}?mode=ro", uri=True)) as conn:
        return int(
            conn.execute("PRAGMA page_count").fetchone()[0] * conn.execute("PRAGMA page_size").fetchone()[0]
        )


def test_rebound_compaction_gives_the_space_of_a_drained_queue_back(tmp_path: Path) -> None:
    async def main() -> None:
        compaction = CompactionConfig(
            on_rebound=True,
            rebound_needed_threshold_mib=1,
            rebound_trigger_threshold_mib=1,
            check_interval=0.05,
        )
        ext = await storage(tmp_path, compaction=compaction)
        queue = await open_queue(ext)
        for n in range(40):
            await queue.put(traces(f"big{n}", spans=3000))  # ~40 x 60 KiB
        file = tmp_path / client_file_name(Kind.EXPORTER, EXPORTER, "traces")
        assert allocated_bytes(file) > 1 << 20
        for _ in range(40):
            token, _ = await queue.get()
            await queue.done(token)
        # Without compaction the file keeps its peak size; with it, once the data is under the
        # trigger size (1 MiB) the file is rewritten to about that size.
        for _ in range(100):  # bounded: 5 s
            await asyncio.sleep(0.05)
            if allocated_bytes(file) < 1 << 20:
                break
        assert allocated_bytes(file) < 1 << 20
        await ext.shutdown()

    asyncio.run(main())


def test_concurrent_requests_committed_together_all_survive_a_restart(tmp_path: Path) -> None:
    async def main() -> None:
        ext = await storage(tmp_path, fsync=True)
        queue = await open_queue(ext, capacity=1000)
        await asyncio.gather(*(queue.put(traces(f"c{n}")) for n in range(200)))
        await ext.shutdown()
        queue = await open_queue(await storage(tmp_path))
        got = [names((await queue.get())[1])[0] for _ in range(200)]
        assert got == [f"c{n}-0" for n in range(200)]  # every one, in the order they were taken
        await queue.close()

    asyncio.run(main())
