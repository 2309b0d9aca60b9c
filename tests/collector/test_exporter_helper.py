"""exporterhelper semantics, tested directly: bounded queue, retry with backoff, permanent errors,
server-given waits, max_elapsed_time, and drain on shutdown."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from meshtrace.collector.component import ComponentID, PermanentError, RefusedError
from meshtrace.collector.exporters.helper import QueueConfig, QueuedSender, RetryConfig
from meshtrace.collector.telemetry import TELEMETRY
from meshtrace.model import Traces
from meshtrace.model.otlp_answer import jittered


def batch(spans: int) -> Traces:
    req = ExportTraceServiceRequest()
    ss = req.resource_spans.add().scope_spans.add()
    for _ in range(spans):
        ss.spans.add(name="s")
    return Traces.from_message(req)


FAST = RetryConfig(initial_interval=0.01, max_interval=0.02, max_elapsed_time=5.0)


Send = Callable[[Traces], Awaitable[None]]


def sender(
    name: str, send: Send, queue: QueueConfig | None = None, retry: RetryConfig = FAST
) -> QueuedSender:
    queue = queue or QueueConfig(num_consumers=1, queue_size=2)
    return QueuedSender(ComponentID("test", name), send, queue, retry)


def value(metric: str, name: str) -> float:
    return TELEMETRY.value(metric, exporter=f"test/{name}")


def test_backoff_grows_and_is_randomized_within_bounds() -> None:
    config = RetryConfig()
    assert jittered(5.0, config.randomization_factor, rng=lambda: 0.0) == 2.5
    assert jittered(5.0, config.randomization_factor, rng=lambda: 1.0) == 7.5
    assert min(5.0 * 1.5**10, config.max_interval) == 30


def test_full_queue_refuses_and_counts_without_blocking() -> None:
    async def main() -> None:
        gate = asyncio.Event()

        async def send(traces: Traces) -> None:
            await gate.wait()

        s = sender("full", send)
        s.start()
        await s.consume_traces(batch(1))  # taken by the one worker
        await asyncio.sleep(0)
        await s.consume_traces(batch(2))
        await s.consume_traces(batch(3))  # queue of 2 now full
        with pytest.raises(RefusedError):
            await s.consume_traces(batch(5))
        assert value("otelcol_exporter_enqueue_failed_spans", "full") == 5
        gate.set()
        await s.drain(5)
        assert value("otelcol_exporter_sent_spans", "full") == 6

    asyncio.run(main())


def test_retries_until_success_and_drops_permanent_errors() -> None:
    async def main() -> None:
        attempts = 0

        async def flaky(traces: Traces) -> None:
            nonlocal attempts
            attempts += 1
            if attempts < 3:
                raise ConnectionError("down")

        s = sender("flaky", flaky)
        s.start()
        await s.consume_traces(batch(4))
        await s.drain(5)
        assert attempts == 3 and value("otelcol_exporter_sent_spans", "flaky") == 4

        async def reject(traces: Traces) -> None:
            raise PermanentError("400")

        p = sender("perm", reject)
        p.start()
        await p.consume_traces(batch(3))
        await p.drain(5)
        assert value("otelcol_exporter_send_failed_spans", "perm") == 3

    asyncio.run(main())


def test_server_wait_is_honoured_and_max_elapsed_gives_up() -> None:
    async def main() -> None:
        times: list[float] = []

        async def throttled(traces: Traces) -> None:
            times.append(time.monotonic())
            if len(times) == 1:
                raise RefusedError("busy", retry_after=0.3)

        s = sender("throttle", throttled)
        s.start()
        await s.consume_traces(batch(1))
        await s.drain(5)
        assert times[1] - times[0] >= 0.29

        async def down(traces: Traces) -> None:
            raise ConnectionError("down")

        retry = RetryConfig(initial_interval=0.05, max_interval=0.05, max_elapsed_time=0.2)
        d = sender("elapsed", down, retry=retry)
        d.start()
        await d.consume_traces(batch(2))
        await d.drain(5)
        assert value("otelcol_exporter_send_failed_spans", "elapsed") == 2

    asyncio.run(main())


def test_without_queue_the_caller_waits_and_drain_counts_leftovers() -> None:
    async def main() -> None:
        sent: list[int] = []

        async def send(traces: Traces) -> None:
            sent.append(traces.span_count())

        direct = sender("direct", send, QueueConfig(enabled=False))
        await direct.consume_traces(batch(3))
        assert sent == [3]

        async def hang(traces: Traces) -> None:
            await asyncio.sleep(60)

        h = sender("hang", hang)
        h.start()
        for n in (1, 2, 3):
            await h.consume_traces(batch(n))
            await asyncio.sleep(0)  # let the worker take the first
        await h.drain(0.1)
        assert value("otelcol_exporter_send_failed_spans", "hang") == 6
        with pytest.raises(RefusedError):
            await h.consume_traces(batch(1))

    asyncio.run(main())
