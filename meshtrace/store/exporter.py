"""The `store` exporter: writes every span it gets into the embedded trace store.

```yaml
exporters:
  store:
    path: ""            # default $MESHTRACE_DATA_DIR/traces.db, else ~/.local/share/meshtrace/traces.db
    max_bytes: 1073741824   # live database pages; the first written traces go first
    retention: 72h      # traces first written longer ago are deleted (0 = keep)
    max_pending_bytes: 67108864   # accepted, not yet written
    max_wait: 5s        # how long consume waits for room before refusing
```

`consume_traces` only queues the encoded bytes for the store's writer thread, so the event loop
never waits for the disk. When `max_pending_bytes` are already waiting it waits (up to `max_wait`)
for room, which slows the pipeline, and through it the senders, to the disk's pace; then it
refuses (retryable). It never buffers without bound. A span the store cannot hold (receivers
refuse those first) is isolated and dropped alone, counted in `otelcol_exporter_send_failed_spans`.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from meshtrace.collector.component import ComponentID, Host, Kind, RefusedError
from meshtrace.collector.factory import ComponentFactory
from meshtrace.collector.schema import Duration
from meshtrace.collector.telemetry import TELEMETRY
from meshtrace.model import Traces
from meshtrace.store.protocol import StoreError, StoreFullError
from meshtrace.store.sqlite import TraceStore, default_path

TRACE_COUNT_EVERY_S = 5.0


@dataclass
class StoreConfig:
    path: str = ""
    max_bytes: int = 1 << 30
    retention: Duration = 72 * 3600.0
    max_pending_bytes: int = 64 << 20
    max_wait: Duration = 5.0

    def __post_init__(self) -> None:
        if self.max_bytes < 0:
            raise ValueError(f"max_bytes must not be negative, got {self.max_bytes}")
        if self.max_pending_bytes <= 0:
            raise ValueError(f"max_pending_bytes must be positive, got {self.max_pending_bytes}")
        if self.max_wait < 0:
            raise ValueError("max_wait must not be negative")


class StoreExporter:
    """Owns a `TraceStore`; the query extension reads it through `.store`."""

    def __init__(self, id: ComponentID, config: StoreConfig) -> None:
        self.id = id
        self.config = config
        self.store = TraceStore(
            Path(config.path).expanduser() if config.path else default_path(),
            max_bytes=config.max_bytes,
            retention_s=float(config.retention),
            max_pending_bytes=config.max_pending_bytes,
        )
        self.metrics = TELEMETRY.exporter(id)
        TELEMETRY.exporter_queue(id, lambda: float(self.store.pending_bytes), config.max_pending_bytes)
        # How many traces the store holds (what `meshtrace up` shows); counted at most every
        # TRACE_COUNT_EVERY_S, since a count reads the whole trace index.
        self._traces = (0.0, -TRACE_COUNT_EVERY_S)
        TELEMETRY.gauge("meshtrace_store_traces", (("exporter", str(id)),), self._trace_count)

    async def consume_traces(self, traces: Traces) -> None:
        """Queue for the writer and wait until committed, so a returned call is on disk. While the
        queue is full, wait for room (the caller, and through it the receiver's client, slows down
        to the disk's pace) up to `max_wait`, then refuse."""
        count = traces.span_count()
        encoded = traces.encoded()
        deadline = time.monotonic() + self.config.max_wait
        while True:
            try:
                committed = self.store.write(encoded)
                break
            except StoreFullError as exc:
                if time.monotonic() >= deadline:
                    self.metrics.enqueue_failed_spans.add(count)
                    raise RefusedError(str(exc), retry_after=1.0) from None
                await asyncio.sleep(0.01)
        try:
            dropped = await asyncio.wrap_future(committed)
        except StoreError as exc:
            self.metrics.send_failed_spans.add(count)
            raise RefusedError(str(exc), retry_after=1.0) from None
        # Spans the store could not hold were isolated and dropped (logged by the store); the
        # rest is stored, so the batch is not failed (which would make a sender retry it all).
        self.metrics.send_failed_spans.add(dropped)
        self.metrics.sent_spans.add(count - dropped)

    def _trace_count(self) -> float:
        count, at = self._traces
        now = time.monotonic()
        if now - at >= TRACE_COUNT_EVERY_S:
            with contextlib.suppress(StoreError, sqlite3.Error):  # not open yet: the last count stands
                count = float(self.store.trace_count())
            self._traces = (count, now)
        return count

    async def start(self, host: Host) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.store.open)

    async def shutdown(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.store.close)


factory = ComponentFactory(
    "store", Kind.EXPORTER, StoreConfig, lambda id, config, _next: StoreExporter(id, config)
)
