"""The Collector's exporterhelper: `sending_queue` + `retry_on_failure` around an exporter's send.

An exporter provides `send(traces)`, which raises `RefusedError` (retryable, with an optional
server-given wait), `PermanentError` (drop) or any other exception (retryable: connection
errors). `QueuedSender` puts batches in a bounded in-memory queue (`queue_size` counts batches,
as the Collector's default `requests` sizer) drained by `num_consumers` workers that retry with
exponential backoff. A full queue refuses the batch (RefusedError, counted in
`otelcol_exporter_enqueue_failed_spans`): a slow backend never blocks receivers.

`drain(timeout)` (called by the service on shutdown) keeps sending until the queue is empty or
the time is up; what is left is logged and counted in `otelcol_exporter_send_failed_spans`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

from meshtrace.collector.component import ComponentID, Host, PermanentError, RefusedError
from meshtrace.collector.schema import Duration
from meshtrace.collector.telemetry import TELEMETRY
from meshtrace.model import Traces

log = logging.getLogger(__name__)


@dataclass
class QueueConfig:
    enabled: bool = True
    num_consumers: int = 10
    queue_size: int = 1000
    sizer: Literal["requests"] = "requests"
    block_on_overflow: bool = False
    storage: str | None = field(
        default=None,
        metadata={"warning": "persistent queues (storage) are not supported yet: the queue is in memory"},
    )

    def __post_init__(self) -> None:
        if self.num_consumers <= 0:
            raise ValueError("num_consumers must be positive")
        if self.queue_size <= 0:
            raise ValueError("queue_size must be positive")


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


def next_delay(interval: float, config: RetryConfig, rng: Callable[[], float] = random.random) -> float:
    """One randomized wait around `interval` (interval * (1 ± randomization_factor))."""
    spread = config.randomization_factor * interval
    return interval - spread + rng() * 2 * spread


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
        self._queue: asyncio.Queue[Traces] = asyncio.Queue(maxsize=queue.queue_size)
        self._workers: list[asyncio.Task[None]] = []
        self._in_flight: set[Traces] = set()
        self._stopping = False
        if queue.enabled:
            TELEMETRY.exporter_queue(id, lambda: float(self._queue.qsize()), queue.queue_size)

    async def consume_traces(self, traces: Traces) -> None:
        if self._stopping:
            raise RefusedError(f"exporter {self.id} is shutting down")
        if not self.queue_config.enabled:
            await self._send_with_retry(traces)
            return
        if self.queue_config.block_on_overflow:
            await self._queue.put(traces)
            return
        try:
            self._queue.put_nowait(traces)
        except asyncio.QueueFull:
            self.metrics.enqueue_failed_spans.add(traces.span_count())
            raise RefusedError(f"sending queue of exporter {self.id} is full") from None

    def start(self) -> None:
        if self.queue_config.enabled:
            self._workers = [
                asyncio.create_task(self._work(), name=f"{self.id}-sender-{i}")
                for i in range(self.queue_config.num_consumers)
            ]

    async def _work(self) -> None:
        while True:
            traces = await self._queue.get()
            self._in_flight.add(traces)
            try:
                await self._send_with_retry(traces)
            finally:
                self._in_flight.discard(traces)
                self._queue.task_done()

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
                delay = next_delay(interval, self.retry)
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
        """Stop taking data, send what is queued for up to `timeout` s, drop and count the rest."""
        self._stopping = True
        if self._workers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), timeout)
        await self.stop()

    async def stop(self) -> None:
        self._stopping = True
        left = list(self._in_flight)  # before cancelling: a cancelled worker forgets its batch
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []
        self._in_flight.clear()
        while not self._queue.empty():
            left.append(self._queue.get_nowait())
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
        await self._open()
        self.sender.start()

    async def shutdown(self) -> None:
        await self.sender.stop()
        await self._close()
