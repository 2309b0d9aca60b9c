"""The collector's self-metrics, with the OpenTelemetry Collector's names and labels.

Components count through the process-wide `TELEMETRY`:

    from meshtrace.collector.telemetry import TELEMETRY
    items = TELEMETRY.processor_items(id)        # id: ComponentID or str, e.g. "batch"
    items.incoming(len(traces)); ...; items.outgoing(n)

Counters are plain float adds (no locks: one event loop per process). They are exposed in the
Prometheus text format by `MetricsServer` (`/metrics` on 8888). The Collector's default names have
no `_total` suffix (a configured Prometheus reader adds it unless `without_type_suffix: true`), so
the exposition is written here instead of by prometheus_client's Counter, which always appends
`_total`.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from meshtrace.collector.httpserve import serve
from meshtrace.prometheus import CONTENT_TYPE, exposition, family_header, go_value, label_set, sample

Labels = tuple[tuple[str, str], ...]


class Count:
    """One monotonically increasing series."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def add(self, amount: float) -> None:
        self.value += amount


@dataclass
class ReceiverMetrics:
    accepted_spans: Count
    refused_spans: Count


@dataclass
class ExporterMetrics:
    sent_spans: Count
    send_failed_spans: Count
    enqueue_failed_spans: Count


@dataclass
class ProcessorItems:
    incoming_items: Count
    outgoing_items: Count

    def incoming(self, n: int) -> None:
        self.incoming_items.value += n

    def outgoing(self, n: int) -> None:
        self.outgoing_items.value += n


@dataclass
class _Family:
    help: str
    type: str  # "counter" or "gauge"
    series: dict[Labels, Count] = field(default_factory=dict)
    gauges: dict[Labels, Callable[[], float]] = field(default_factory=dict)


HELP = {
    "meshtrace_store_traces": "Number of traces the embedded store holds (meshtrace's own).",
    "otelcol_receiver_accepted_spans": "Number of spans successfully pushed into the pipeline.",
    "otelcol_receiver_refused_spans": "Number of spans that could not be pushed into the pipeline.",
    "otelcol_exporter_sent_spans": "Number of spans successfully sent to destination.",
    "otelcol_exporter_send_failed_spans": "Number of spans in failed attempts to send to destination.",
    "otelcol_exporter_enqueue_failed_spans": "Number of spans failed to be added to the sending queue.",
    "otelcol_exporter_queue_size": "Current size of the retry queue (in batches).",
    "otelcol_exporter_queue_capacity": "Fixed capacity of the retry queue (in batches).",
    "otelcol_processor_incoming_items": "Number of items passed to the processor.",
    "otelcol_processor_outgoing_items": "Number of items emitted from the processor.",
    "otelcol_process_memory_rss": "Total physical memory (resident set size) [bytes].",
    "otelcol_process_uptime": "Uptime of the process [seconds].",
    "otelcol_process_cpu_seconds": "Total CPU user and system time in seconds.",
}


def rss_bytes() -> int:
    """The resident set size now (from /proc; ru_maxrss where there is no /proc)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # pragma: no cover - not Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Telemetry:
    def __init__(self) -> None:
        self.families: dict[str, _Family] = {}
        self.started = time.monotonic()
        self.type_suffix = False
        self.gauge("otelcol_process_memory_rss", (), lambda: float(rss_bytes()))
        self.gauge("otelcol_process_uptime", (), lambda: time.monotonic() - self.started, type_="counter")
        self.gauge("otelcol_process_cpu_seconds", (), lambda: sum(os.times()[:2]), type_="counter")

    def _family(self, name: str, type_: str) -> _Family:
        family = self.families.get(name)
        if family is None:
            family = self.families[name] = _Family(HELP.get(name, name), type_)
        return family

    def counter(self, name: str, labels: Labels) -> Count:
        family = self._family(name, "counter")
        count = family.series.get(labels)
        if count is None:
            count = family.series[labels] = Count()
        return count

    def gauge(self, name: str, labels: Labels, read: Callable[[], float], type_: str = "gauge") -> None:
        """A value read at scrape time (`type_` "counter" for monotonic readings like uptime)."""
        self._family(name, type_).gauges[labels] = read

    def receiver(self, id: object, transport: str) -> ReceiverMetrics:
        labels = (("receiver", str(id)), ("transport", transport))
        return ReceiverMetrics(
            self.counter("otelcol_receiver_accepted_spans", labels),
            self.counter("otelcol_receiver_refused_spans", labels),
        )

    def exporter(self, id: object) -> ExporterMetrics:
        labels = (("exporter", str(id)),)
        return ExporterMetrics(
            self.counter("otelcol_exporter_sent_spans", labels),
            self.counter("otelcol_exporter_send_failed_spans", labels),
            self.counter("otelcol_exporter_enqueue_failed_spans", labels),
        )

    def exporter_queue(self, id: object, size: Callable[[], float], capacity: int) -> None:
        labels = (("data_type", "traces"), ("exporter", str(id)))
        self.gauge("otelcol_exporter_queue_size", labels, size)
        self.gauge("otelcol_exporter_queue_capacity", labels, lambda: float(capacity))

    def processor_items(self, id: object) -> ProcessorItems:
        labels = (("otel_signal", "traces"), ("processor", str(id)))
        return ProcessorItems(
            self.counter("otelcol_processor_incoming_items", labels),
            self.counter("otelcol_processor_outgoing_items", labels),
        )

    def exposition(self) -> bytes:
        """The Prometheus text format (0.0.4). Written here rather than by prometheus_client's
        generate_latest, which would force `_total` onto counter names in HELP/TYPE lines."""
        lines = []
        for name, family in sorted(self.families.items()):
            exposed = name + "_total" if family.type == "counter" and self.type_suffix else name
            values = [(labels, count.value) for labels, count in family.series.items()]
            values += [(labels, read()) for labels, read in family.gauges.items()]
            if not values:
                continue
            lines += family_header(exposed, family.type, family.help)
            lines += [sample(exposed, label_set(labels), go_value(value)) for labels, value in values]
        return exposition(lines)

    def value(self, name: str, **labels: str) -> float:
        """The sum of the series of `name` matching `labels` (for tests and the benchmark)."""
        family = self.families.get(name)
        if family is None:
            return 0.0
        total = 0.0
        for key, count in family.series.items():
            if all(dict(key).get(k) == v for k, v in labels.items()):
                total += count.value
        return total


TELEMETRY = Telemetry()


class MetricsServer:
    """`GET /metrics` in the Prometheus text format, on the collector's event loop."""

    def __init__(self, host: str, port: int, telemetry: Telemetry = TELEMETRY) -> None:
        self.host, self.port, self.telemetry = host, port, telemetry
        self._runner: web.AppRunner | None = None

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.telemetry.exposition(), headers={"Content-Type": CONTENT_TYPE})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        self._runner = await serve(app, self.host, self.port, "metrics")

    async def shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
