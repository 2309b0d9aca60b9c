"""The Collector's exporterhelper: `sending_queue` + `retry_on_failure` around an exporter's send.

An exporter provides `send(traces)`, which raises `RefusedError` (retryable, with an optional
server-given wait), `PermanentError` (drop) or any other exception (retryable: connection
errors). `QueuedSender` puts batches in a bounded queue (`queue_size` counts batches, as the
Collector's default `requests` sizer) drained by `num_consumers` workers that retry with
exponential backoff. A full queue refuses the batch (RefusedError, counted in
`otelcol_exporter_enqueue_failed_spans`): a slow backend never blocks receivers.

The queue is in memory unless `storage` names a storage extension (`file_storage`): then every
batch is on disk before `consume_traces` returns, and batches not yet sent when the process stops
or is killed are sent after the next start (queue.py).

`drain(timeout)` (called by the service on shutdown) keeps sending until the queue is empty or
the time is up; what is left in a memory queue is logged and counted in
`otelcol_exporter_send_failed_spans`, a persistent queue keeps it on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

from meshtrace.collector.component import (
    ComponentID,
    Host,
    Kind,
    PermanentError,
    RefusedError,
    StorageError,
    StorageExtension,
)
from meshtrace.collector.exporters.helper.queue import BatchQueue, MemoryQueue, PersistentQueue, QueueFull
from meshtrace.collector.schema import Duration
from meshtrace.collector.telemetry import TELEMETRY
from meshtrace.model import Traces
from meshtrace.model.otlp_answer import jittered, partial_success

log = logging.getLogger(__name__)


@dataclass
class QueueConfig:
    enabled: bool = True
    num_consumers: int = 10
    queue_size: int = 1000
    sizer: Literal["requests"] = "requests"
    block_on_overflow: bool = False
    # The id of a storage extension: the queue is then persistent. The config check makes sure
    # it names an enabled storage extension.
    storage: str | None = field(default=None, metadata={"extension": "storage"})

    def __post_init__(self) -> None:
        if self.num_consumers <= 0:
            raise ValueError("num_consumers must be positive")
        if self.queue_size <= 0:
            raise ValueError("queue_size must be positive")
        if self.storage is not None:
            ComponentID.parse(self.storage)


@dataclass
class RetryConfig:
    enabled: bool = True
    initial_interval: Duration = 5.0
    randomization_factor: float = 0.5
    multiplier: float = 1.5
    max_interval: Duration = 30.0
    max_elapsed_time: Duration = 300.0

    def __post_init__(self) -> None:
        if not 0 <= self.randomization_factor <= 1:
            raise ValueError("randomization_factor must be between 0 and 1")
        if self.multiplier < 1:
            raise ValueError("multiplier must be at least 1")


def warn_partial_success(id: ComponentID, answer: bytes, json: bool = False) -> None:
    """The Collector's exporters log a partial success and count the batch as sent: the server
    accepted the rest and counted what it rejected."""
    rejected, message = partial_success(answer, json)
    if rejected or message:
        log.warning("exporter %s: partial success response: %s (dropped_spans=%d)", id, message, rejected)


class QueuedSender:
    """`consume_traces` for an exporter whose `send` talks to a backend."""

    def __init__(
        self,
        id: ComponentID,
        send: Callable[[Traces], Awaitable[None]],
        queue: QueueConfig,
        retry: RetryConfig,
    ) -> None:
        self.id = id
        self._send = send
        self.queue_config = queue
        self.retry = retry
        self.metrics = TELEMETRY.exporter(id)
        self._queue: BatchQueue = MemoryQueue(queue.queue_size, queue.block_on_overflow)
        self._workers: list[asyncio.Task[None]] = []
        self._stopping = False
        self._closed = False
        if queue.enabled:
            TELEMETRY.exporter_queue(id, lambda: float(self._queue.size()), queue.queue_size)

    async def open(self, host: Host) -> None:
        """Open the persistent queue when `storage` is set (before `start`)."""
        storage = self.queue_config.storage
        if not self.queue_config.enabled or storage is None:
            return
        extension = host.get_extension(ComponentID.parse(storage))
        if not isinstance(extension, StorageExtension):
            raise StorageError(f"exporter {self.id}: sending_queue.storage: no storage extension {storage!r}")
        client = await extension.get_client(Kind.EXPORTER, self.id, "traces")
        self._queue = await PersistentQueue.open(
            client, self.queue_config.queue_size, self.queue_config.block_on_overflow
        )

    async def consume_traces(self, traces: Traces) -> None:
        if self._stopping:
            raise RefusedError(f"exporter {self.id} is shutting down")
        if not self.queue_config.enabled:
            await self._send_with_retry(traces)
            return
        try:
            await self._queue.put(traces)
        except QueueFull:
            self.metrics.enqueue_failed_spans.add(traces.span_count())
            raise RefusedError(f"sending queue of exporter {self.id} is full") from None
        except StorageError as exc:
            self.metrics.enqueue_failed_spans.add(traces.span_count())
            raise RefusedError(f"sending queue of exporter {self.id}: {exc}", retry_after=1.0) from None

    def start(self) -> None:
        if self.queue_config.enabled:
            self._workers = [
                asyncio.create_task(self._work(), name=f"{self.id}-sender-{i}")
                for i in range(self.queue_config.num_consumers)
            ]

    async def _work(self) -> None:
        while True:
            try:
                token, traces = await self._queue.get()
            except StorageError as exc:
                log.error("exporter %s: cannot read the sending queue, retrying in 1s: %s", self.id, exc)
                await asyncio.sleep(1.0)
                continue
            # Cancelled (shutdown) while sending: not done, so a persistent queue keeps it.
            await self._send_with_retry(traces)
            await self._queue.done(token)

    async def _send_with_retry(self, traces: Traces) -> None:
        count = traces.span_count()
        started = time.monotonic()
        interval: float = self.retry.initial_interval
        while True:
            try:
                await self._send(traces)
            except PermanentError as exc:
                self.metrics.send_failed_spans.add(count)
                log.error("exporter %s: dropping %d spans, not retryable: %s", self.id, count, exc)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not self.retry.enabled:
                    self.metrics.send_failed_spans.add(count)
                    log.error("exporter %s: dropping %d spans (retry disabled): %s", self.id, count, exc)
                    return
                delay = jittered(interval, self.retry.randomization_factor)
                if isinstance(exc, RefusedError) and exc.retry_after is not None:
                    delay = max(delay, exc.retry_after)
                elapsed = time.monotonic() - started
                if self.retry.max_elapsed_time and elapsed + delay > self.retry.max_elapsed_time:
                    self.metrics.send_failed_spans.add(count)
                    log.error(
                        "exporter %s: dropping %d spans after %.0fs of retries: %s",
                        self.id,
                        count,
                        elapsed,
                        exc,
                    )
                    return
                log.info("exporter %s: send failed, retrying in %.1fs: %s", self.id, delay, exc)
                await asyncio.sleep(delay)
                interval = min(interval * self.retry.multiplier, self.retry.max_interval)
                continue
            self.metrics.sent_spans.add(count)
            return

    async def drain(self, timeout: float) -> None:
        """Stop taking data, send what is queued for up to `timeout` s, then stop."""
        self._stopping = True
        if self._workers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.wait_empty(), timeout)
        await self.stop()

    async def stop(self) -> None:
        """Stop the workers; what a memory queue still holds is dropped and counted."""
        self._stopping = True
        if self._closed:
            return
        self._closed = True
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []
        left = await self._queue.close()
        dropped = sum(t.span_count() for t in left)
        if dropped:
            self.metrics.send_failed_spans.add(dropped)
            log.warning(
                "exporter %s: shutdown dropped %d spans in %d batches still queued",
                self.id,
                dropped,
                len(left),
            )


class QueuedExporter:
    """Base of exporters that send through the queue: subclasses implement `_send` (one attempt)
    and may override `_open` / `_close` for their connections."""

    def __init__(self, id: ComponentID, queue: QueueConfig, retry: RetryConfig) -> None:
        self.id = id
        self.sender = QueuedSender(id, self._send, queue, retry)

    async def _send(self, traces: Traces) -> None:
        raise NotImplementedError

    async def _open(self) -> None:
        return None

    async def _close(self) -> None:
        return None

    async def consume_traces(self, traces: Traces) -> None:
        await self.sender.consume_traces(traces)

    async def drain(self, timeout: float) -> None:
        await self.sender.drain(timeout)

    async def start(self, host: Host) -> None:
        await self.sender.open(host)
        await self._open()
        self.sender.start()

    async def shutdown(self) -> None:
        await self.sender.stop()
        await self._close()
