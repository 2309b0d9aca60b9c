"""Assembling and running pipelines from a resolved config (the Collector's `service`).

Like the Collector: one instance per receiver id (fanning out to every pipeline that lists it),
one processor instance per pipeline, one instance per exporter id (shared by pipelines). Start
order is extensions, exporters, processors (last first), receivers; shutdown is the reverse, so
receivers stop taking data first, processors flush downstream, and exporters drain their queues
within the drain time.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import Any

from meshtrace.collector import registry
from meshtrace.collector.admission import Admission
from meshtrace.collector.component import (
    Component,
    ComponentID,
    Kind,
    PipelineWatcher,
    RefusedError,
    TracesComponent,
    TracesConsumer,
)
from meshtrace.collector.config import CollectorConfig
from meshtrace.collector.telemetry import TELEMETRY, MetricsServer
from meshtrace.model import Traces

log = logging.getLogger(__name__)


class Fanout:
    """One consumer feeding several. Each but the last gets its own `Traces` over the same
    (immutable) bytes, so a processor that edits its copy cannot change another pipeline's."""

    def __init__(self, consumers: list[TracesConsumer]) -> None:
        self.consumers = consumers

    async def consume_traces(self, traces: Traces) -> None:
        errors: list[Exception] = []
        last = len(self.consumers) - 1
        for i, consumer in enumerate(self.consumers):
            batch = traces if i == last else Traces.from_bytes(traces.encoded(), traces.span_count())
            try:
                await consumer.consume_traces(batch)
            except Exception as exc:
                errors.append(exc)
        if errors:
            # A retryable refusal wins: the sender should try again (as the Collector's fanout).
            raise next((e for e in errors if isinstance(e, RefusedError)), errors[0])


def fanout(consumers: list[TracesConsumer]) -> TracesConsumer:
    return consumers[0] if len(consumers) == 1 else Fanout(consumers)


class Service:
    def __init__(self, config: CollectorConfig) -> None:
        self.config = config
        self.extensions: dict[ComponentID, Component] = {}
        self.exporters: dict[ComponentID, TracesComponent] = {}
        self.processors: list[list[TracesComponent]] = []  # per pipeline, in pipeline order
        self.receivers: dict[ComponentID, Component] = {}
        self.metrics: MetricsServer | None = None
        self._started: list[Component] = []
        self._admission = Admission()

    def _create(self, kind: Kind, id: ComponentID, next_consumer: TracesConsumer | None) -> Any:
        component = self.config.component(kind, id)
        return registry.factory(kind, component.type).create(id, component.config, next_consumer)

    def build(self) -> None:
        for cid in self.config.extensions:
            self.extensions[cid] = self._create(Kind.EXTENSION, cid, None)
        heads: dict[ComponentID, list[TracesConsumer]] = {}
        for pipeline in self.config.pipelines:
            for cid in pipeline.exporters:
                if cid not in self.exporters:
                    self.exporters[cid] = self._create(Kind.EXPORTER, cid, None)
            consumer = fanout([self.exporters[cid] for cid in pipeline.exporters])
            chain: list[TracesComponent] = []
            for cid in reversed(pipeline.processors):
                processor = self._create(Kind.PROCESSOR, cid, consumer)
                chain.insert(0, processor)
                consumer = processor
            self.processors.append(chain)
            for cid in pipeline.receivers:
                heads.setdefault(cid, []).append(consumer)
        for cid, consumers in heads.items():
            self.receivers[cid] = self._create(Kind.RECEIVER, cid, fanout(consumers))

    # The Host protocol, for components that look others up.
    def get_extension(self, id: ComponentID) -> Component | None:
        return self.extensions.get(id)

    def get_exporter(self, id: ComponentID) -> Component | None:
        return self.exporters.get(id)

    def admission(self) -> Admission:
        return self._admission

    async def start(self) -> None:
        if self.config.metrics is not None:
            TELEMETRY.type_suffix = self.config.metrics.type_suffix
            self.metrics = MetricsServer(self.config.metrics.host, self.config.metrics.port)
            await self.metrics.start()
        order: list[Component] = [*self.extensions.values(), *self.exporters.values()]
        for chain in self.processors:
            order.extend(reversed(chain))
        order.extend(self.receivers.values())
        for component in order:
            await component.start(self)
            self._started.append(component)
        for extension in self.extensions.values():
            if isinstance(extension, PipelineWatcher):
                extension.ready()
        log.info("everything is ready: %d pipeline(s)", len(self.config.pipelines))

    async def shutdown(self, drain_timeout: float) -> None:
        """Stop receivers, flush processors, drain exporters for up to `drain_timeout` s."""
        for extension in self.extensions.values():
            if isinstance(extension, PipelineWatcher):
                extension.not_ready()
        started = set(map(id, self._started))
        for receiver in self.receivers.values():
            if id(receiver) in started:
                await _quietly(receiver.shutdown())
        for chain in self.processors:
            for processor in chain:
                if id(processor) in started:
                    await _quietly(processor.shutdown())
        exporters = [e for e in self.exporters.values() if id(e) in started]
        drains = [getattr(e, "drain", None) for e in exporters]
        await asyncio.gather(*(_quietly(d(drain_timeout)) for d in drains if d is not None))
        for exporter in exporters:
            await _quietly(exporter.shutdown())
        for extension in self.extensions.values():
            if id(extension) in started:
                await _quietly(extension.shutdown())
        if self.metrics is not None:
            await _quietly(self.metrics.shutdown())


async def _quietly(step: Any) -> None:
    """Run one shutdown step; a failing component must not stop the others from stopping."""
    try:
        await step
    except Exception:
        log.exception("error during shutdown")


async def run(config: CollectorConfig, drain_timeout: float) -> int:
    """Run until SIGTERM/SIGINT, then shut down gracefully (a second signal exits at once,
    abandoning what is still queued). Returns the exit status."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():
            log.warning("second signal: exiting without draining")
            os._exit(1)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    service = Service(config)
    status = 0
    try:
        service.build()
        await service.start()
    except Exception as exc:
        log.error("cannot start the collector: %s", exc)
        status = 1
    else:
        await stop.wait()
        log.info("shutting down (drain time %.1fs)", drain_timeout)
    await service.shutdown(drain_timeout)
    return status
