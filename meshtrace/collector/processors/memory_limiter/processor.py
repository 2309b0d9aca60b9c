"""The memory_limiter processor.

Usage is the process's RSS at the last reading plus the bytes of every request accepted since
then. Accepted bytes are never subtracted until the next reading: data that left this processor
still sits in the batch buffer or an exporter's queue, so counting only what is inside the
pipeline let a flood take hundreds of MiB between two checks. When that estimate says "over the
soft limit", RSS is read again at once (a cheap /proc read) before refusing, so the decision never
waits for the next `check_interval`. Receivers ask the same limiter before they read or decode
a request (meshtrace/collector/admission.py).

CPython keeps freed memory in its allocators and glibc rarely returns it to the OS, so RSS alone
would stay high after a spike and refuse forever: when over the soft limit the limiter collects
garbage (over the hard limit, or at most every `min_gc_interval_when_soft_limited`) and then asks
glibc to give free pages back (`malloc_trim`) before reading RSS again.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import time
from collections.abc import Callable

from meshtrace.collector.component import ComponentID, Host, RefusedError, TracesConsumer
from meshtrace.collector.processors.base import TracesProcessor
from meshtrace.collector.processors.memory_limiter.config import MemoryLimiterConfig
from meshtrace.collector.telemetry import rss_bytes
from meshtrace.model import Traces

log = logging.getLogger(__name__)
MIB = 1024 * 1024


def total_memory() -> int:
    """The memory this process may use: the cgroup v2 limit if set, else the machine's RAM."""
    with contextlib.suppress(OSError, ValueError):
        with open("/sys/fs/cgroup/memory.max") as f:
            text = f.read().strip()
        if text != "max":
            return int(text)
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    raise OSError("cannot read the total memory from /proc/meminfo")


def _load_malloc_trim() -> Callable[[], None]:
    # The process's own symbols include libc's; ctypes.util.find_library would run ldconfig (a
    # process) at import.
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        trim = None
    if trim is None:
        return lambda: None
    trim.argtypes = [ctypes.c_size_t]

    def trim_heap() -> None:
        trim(0)

    return trim_heap


malloc_trim = _load_malloc_trim()


def collect_and_trim() -> None:
    gc.collect()
    malloc_trim()


def limits(config: MemoryLimiterConfig, total: Callable[[], int] = total_memory) -> tuple[int, int]:
    """(hard, soft) limits in bytes."""
    if config.limit_mib:
        hard = config.limit_mib * MIB
        spike = config.spike_limit_mib * MIB if config.spike_limit_mib else hard // 5
    else:
        memory = total()
        hard = memory * config.limit_percentage // 100
        spike = memory * config.spike_limit_percentage // 100 if config.spike_limit_percentage else hard // 5
    return hard, hard - spike


class MemoryLimiter:
    """The decision (sans-IO apart from the injected readers): refuse or accept, collect when."""

    def __init__(
        self,
        hard: int,
        soft: int,
        read_memory: Callable[[], int] = rss_bytes,
        collect: Callable[[], None] = collect_and_trim,
        trim: Callable[[], None] = malloc_trim,
        clock: Callable[[], float] = time.monotonic,
        soft_gc_interval: float = 10.0,
        hard_gc_interval: float = 0.0,
        retry_after: float = 1.0,
    ) -> None:
        self.hard, self.soft = hard, soft
        self.read_memory, self.collect, self.trim, self.clock = read_memory, collect, trim, clock
        self.soft_gc_interval, self.hard_gc_interval = soft_gc_interval, hard_gc_interval
        self.retry_after = retry_after  # what a refusal tells the sender to wait (s)
        self.accepted = 0  # bytes of requests accepted since the last reading
        self._rss = 0
        self._last_gc = float("-inf")
        self.refusing = False

    def usage(self) -> int:
        return self._rss + self.accepted

    def check(self) -> None:
        """Read memory (every check_interval); collect and trim when over the limits."""
        rss = self.read_memory()
        if rss > self.soft:
            now = self.clock()
            interval = self.hard_gc_interval if rss > self.hard else self.soft_gc_interval
            if now - self._last_gc >= interval:
                self.collect()
                self._last_gc = now
            else:
                self.trim()
            rss = self.read_memory()
        self._rss, self.accepted = rss, 0
        self._set_refusing(rss > self.soft)

    def _set_refusing(self, refusing: bool) -> None:
        if refusing != self.refusing:
            log.warning(
                "memory usage %.1f MiB %s the soft limit %.1f MiB: %s data",
                self.usage() / MIB,
                "above" if refusing else "back under",
                self.soft / MIB,
                "refusing" if refusing else "accepting",
            )
        self.refusing = refusing

    def admit(self, size: int) -> bool:
        """Whether a request of `size` bytes may enter now (RSS read again if the estimate says no)."""
        if self.refusing:
            return False
        if self.usage() + size <= self.soft:
            return True
        self._rss, self.accepted = self.read_memory(), 0
        self._set_refusing(self._rss > self.soft)
        return not self.refusing and self._rss + size <= self.soft

    def accept(self, size: int) -> None:
        self.accepted += size

    def refusal(self) -> RefusedError:
        return RefusedError(
            f"data refused due to high memory usage (soft limit {self.soft // MIB} MiB)",
            retry_after=self.retry_after,
        )


class MemoryLimiterProcessor(TracesProcessor):
    def __init__(self, id: ComponentID, config: MemoryLimiterConfig, next_consumer: TracesConsumer) -> None:
        super().__init__(id, next_consumer)
        self.interval = float(config.check_interval)
        hard, soft = limits(config)
        self.limiter = MemoryLimiter(
            hard,
            soft,
            soft_gc_interval=float(config.min_gc_interval_when_soft_limited),
            hard_gc_interval=float(config.min_gc_interval_when_hard_limited),
            retry_after=max(self.interval, 1.0),
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self, host: Host) -> None:
        self.limiter.check()
        host.admission().watch(self.limiter)
        self._task = asyncio.create_task(self._run(), name=f"{self.id} checks")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.limiter.check()

    async def consume_traces(self, traces: Traces) -> None:
        n = len(traces)
        self.items.incoming(n)
        size = len(traces.encoded())
        if not self.limiter.admit(size):
            raise self.limiter.refusal()
        self.limiter.accept(size)
        await self.next.consume_traces(traces)
        self.items.outgoing(n)

    async def shutdown(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
