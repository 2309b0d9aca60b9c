"""The two queues behind `sending_queue`: in memory (the default) and persistent (`storage` set
to a storage extension, the Collector's persistent queue).

Both hold whole requests, bounded by `queue_size` requests, and hand them to consumers as
(token, traces); a consumer calls `done(token)` once the request is sent or dropped for good.

The persistent queue writes a request to its storage client before `put` returns (so before the
receiver answers its client): request `n` is the key `item/<n>`, next to the write index `wi` and
the read index `ri` (the oldest request not yet done). `done` deletes the request in one
transaction with the new `ri`. Nothing is deleted when a request is taken, so a request being sent
when the process dies is sent again after the restart: delivery is at least once, and a backend may
see a batch twice, never zero times. Only indices are kept in memory; the bytes are read back
from disk when a consumer takes the request.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import struct
from typing import Protocol

from meshtrace.collector.component import StorageClient, StorageError
from meshtrace.model import Traces

log = logging.getLogger(__name__)
_COUNT = struct.Struct("<Q")  # the span count stored before each request's bytes


class QueueFull(Exception):
    """The queue holds `queue_size` requests and does not block."""


class BatchQueue(Protocol):
    def size(self) -> int: ...

    async def put(self, traces: Traces) -> None: ...

    async def get(self) -> tuple[int, Traces]: ...

    async def done(self, token: int) -> None: ...

    async def wait_empty(self) -> None: ...

    async def close(self) -> list[Traces]:
        """Stop; return what is lost with the process (persistent queues lose nothing)."""
        ...


class MemoryQueue:
    def __init__(self, capacity: int, block: bool) -> None:
        self._queue: asyncio.Queue[Traces] = asyncio.Queue(maxsize=capacity)
        self._block = block
        self._in_flight: dict[int, Traces] = {}
        self._next_token = 0

    def size(self) -> int:
        return self._queue.qsize()

    async def put(self, traces: Traces) -> None:
        if self._block:
            await self._queue.put(traces)
            return
        try:
            self._queue.put_nowait(traces)
        except asyncio.QueueFull:
            raise QueueFull from None

    async def get(self) -> tuple[int, Traces]:
        traces = await self._queue.get()
        self._next_token += 1
        self._in_flight[self._next_token] = traces
        return self._next_token, traces

    async def done(self, token: int) -> None:
        del self._in_flight[token]
        self._queue.task_done()

    async def wait_empty(self) -> None:
        await self._queue.join()

    async def close(self) -> list[Traces]:
        lost = list(self._in_flight.values())
        self._in_flight.clear()
        while not self._queue.empty():
            lost.append(self._queue.get_nowait())
        return lost


def _item(index: int) -> str:
    return f"item/{index}"


class PersistentQueue:
    def __init__(self, client: StorageClient, capacity: int, block: bool) -> None:
        self._client = client
        self._capacity = capacity
        self._block = block
        self._ready: collections.deque[int] = collections.deque()  # written, not yet taken
        self._outstanding: set[int] = set()  # written, not yet done (ready + being sent)
        self._write_index = 0
        self._changed = asyncio.Condition()

    @classmethod
    async def open(cls, client: StorageClient, capacity: int, block: bool) -> PersistentQueue:
        """The queue with every request a previous run left undone, oldest first."""
        queue = cls(client, capacity, block)
        read_index = int(await client.get("ri") or 0)
        # `ri` can pass the stored `wi` when the newest writes failed: never reuse an index below it.
        queue._write_index = max(read_index, int(await client.get("wi") or 0))
        for index in range(read_index, queue._write_index):
            if await client.get(_item(index)) is not None:  # gaps: done out of order, or failed writes
                queue._ready.append(index)
                queue._outstanding.add(index)
        if queue._ready:
            log.info("persistent queue: %d requests left by the previous run will be sent", len(queue._ready))
        return queue

    def size(self) -> int:
        return len(self._outstanding)

    async def put(self, traces: Traces) -> None:
        async with self._changed:
            if len(self._outstanding) >= self._capacity:
                if not self._block:
                    raise QueueFull
                await self._changed.wait_for(lambda: len(self._outstanding) < self._capacity)
            # Reserve the index and the room now; the write happens outside the lock, so
            # concurrent requests reach the storage thread together.
            index = self._write_index
            self._write_index += 1
            self._outstanding.add(index)
        value = _COUNT.pack(traces.span_count()) + traces.encoded()
        try:
            await self._client.batch(set={_item(index): value, "wi": str(index + 1).encode()})
        except BaseException:
            async with self._changed:
                self._outstanding.discard(index)
                self._changed.notify_all()
            raise
        async with self._changed:
            self._ready.append(index)
            self._changed.notify_all()

    async def get(self) -> tuple[int, Traces]:
        while True:
            async with self._changed:
                await self._changed.wait_for(lambda: bool(self._ready))
                index = self._ready.popleft()
            try:
                value = await self._client.get(_item(index))
            except StorageError:
                async with self._changed:
                    self._ready.appendleft(index)
                raise
            if value is not None:
                (count,) = _COUNT.unpack_from(value)
                return index, Traces.from_bytes(value[_COUNT.size :], count)
            await self.done(index)  # cannot happen unless the file was edited: skip it

    async def done(self, token: int) -> None:
        async with self._changed:
            self._outstanding.discard(token)
            read_index = min(self._outstanding, default=self._write_index)
            self._changed.notify_all()
        try:
            await self._client.batch(set={"ri": str(read_index).encode()}, delete=[_item(token)])
        except StorageError as exc:  # the request stays on disk and is sent again after a restart
            log.warning("persistent queue: could not delete a sent request: %s", exc)

    async def wait_empty(self) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: not self._outstanding)

    async def close(self) -> list[Traces]:
        if self._outstanding:
            log.info("persistent queue: %d requests kept on disk for the next start", len(self._outstanding))
        await self._client.close()
        return []
