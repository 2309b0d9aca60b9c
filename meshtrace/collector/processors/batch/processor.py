"""The batch processor. Batches are concatenated encoded `ExportTraceServiceRequest`s
(`Traces.concat`): nothing is decoded to batch. Only a batch over `send_batch_max_size` is
decoded, to be split at a span boundary.

As in the Collector, `consume_traces` accepts data at once; the size trigger sends from the
caller's task (so a slow exporter slows receivers down instead of growing memory without bound)
and the timer task sends what the timeout leaves; send errors are logged, not returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from meshtrace.collector.component import ComponentID, Host, TracesConsumer
from meshtrace.collector.processors.base import TracesProcessor
from meshtrace.collector.processors.batch.config import BatchConfig
from meshtrace.model import Traces
from meshtrace.model.traces import split_traces

log = logging.getLogger(__name__)


class Batcher:
    """The pending batch and the decision of when to cut it (sans-IO: no clock, no sending)."""

    def __init__(self, send_batch_size: int, send_batch_max_size: int) -> None:
        self.size = send_batch_size
        self.max_size = send_batch_max_size
        self.pending: list[Traces] = []
        self.count = 0

    def add(self, traces: Traces) -> list[Traces]:
        """Append; the batches the size trigger releases now."""
        self.pending.append(traces)
        self.count += len(traces)
        out = []
        while self.size and self.count >= self.size:
            out.append(self._cut())
        return out

    def flush(self) -> list[Traces]:
        """Everything pending, split at `send_batch_max_size`."""
        out = []
        while self.count:
            out.append(self._cut())
        return out

    def _cut(self) -> Traces:
        """All that is pending, or its first `send_batch_max_size` spans."""
        batch = Traces.concat(self.pending) if len(self.pending) > 1 else self.pending[0]
        self.pending, self.count = [], 0
        limit = self.max_size
        if limit and len(batch) > limit:
            batch, rest = split_traces(batch, limit)
            self.pending, self.count = [rest], len(rest)
        return batch


class BatchProcessor(TracesProcessor):
    def __init__(self, id: ComponentID, config: BatchConfig, next_consumer: TracesConsumer) -> None:
        super().__init__(id, next_consumer)
        self.timeout = float(config.timeout)
        self.batcher = Batcher(config.send_batch_size, config.send_batch_max_size)
        self._first_pending: asyncio.Event | None = None
        self._timer: asyncio.Task[None] | None = None

    async def start(self, host: Host) -> None:
        self._first_pending = asyncio.Event()
        if self.timeout > 0:
            self._timer = asyncio.create_task(self._run_timer(), name=f"{self.id} timer")

    async def consume_traces(self, traces: Traces) -> None:
        n = len(traces)
        if not n:
            return
        self.items.incoming(n)
        was_empty = not self.batcher.count
        ready = self.batcher.add(traces)
        if self.timeout <= 0:
            ready += self.batcher.flush()
        elif was_empty and self.batcher.count and self._first_pending is not None:
            self._first_pending.set()
        await self._send(ready)

    async def _run_timer(self) -> None:
        assert self._first_pending is not None
        while True:
            await self._first_pending.wait()
            self._first_pending.clear()
            await asyncio.sleep(self.timeout)
            await self._send(self.batcher.flush())

    async def _send(self, batches: list[Traces]) -> None:
        for batch in batches:
            n = len(batch)
            self.items.outgoing(n)
            try:
                await self.next.consume_traces(batch)
            except Exception as exc:
                log.warning("%s: next consumer failed, %d spans dropped: %s", self.id, n, exc)

    async def shutdown(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
        await self._send(self.batcher.flush())
