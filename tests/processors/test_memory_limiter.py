"""memory_limiter: refuse above the soft limit and accept again below it, GC above the hard limit,
bytes in flight counted between checks; driven by an injected memory reading."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from meshtrace.collector.component import ComponentID, RefusedError
from meshtrace.collector.processors.memory_limiter import factory
from meshtrace.collector.processors.memory_limiter.config import MemoryLimiterConfig
from meshtrace.collector.processors.memory_limiter.processor import (
    MIB,
    MemoryLimiter,
    limits,
    malloc_trim,
    total_memory,
)
from meshtrace.collector.schema import Duration
from meshtrace.model import Traces


class Memory:
    """A fake RSS that GC and trimming can lower."""

    def __init__(self, rss: int) -> None:
        self.rss = rss
        self.freed_by_gc = 0
        self.collects = 0
        self.trims = 0

    def read(self) -> int:
        return self.rss

    def collect(self) -> None:
        self.collects += 1
        self.rss -= self.freed_by_gc

    def trim(self) -> None:
        self.trims += 1


def limiter(memory: Memory, now: list[float]) -> MemoryLimiter:
    return MemoryLimiter(
        hard=100 * MIB,
        soft=80 * MIB,
        read_memory=memory.read,
        collect=memory.collect,
        trim=memory.trim,
        clock=lambda: now[0],
        soft_gc_interval=10.0,
    )


def test_refuses_above_soft_and_accepts_again_below() -> None:
    memory, now = Memory(50 * MIB), [0.0]
    lim = limiter(memory, now)
    lim.check()
    assert lim.admit(1 * MIB) and not lim.refusing
    memory.rss = 90 * MIB  # over soft, under hard
    lim.check()
    assert lim.refusing and not lim.admit(1)
    assert memory.collects == 1  # first time over soft: collect (then every 10 s at most)
    now[0] = 5.0
    lim.check()
    assert memory.collects == 1 and memory.trims == 1  # too soon to collect again: only trim
    memory.rss = 70 * MIB
    lim.check()
    assert not lim.refusing and lim.admit(1 * MIB)


def test_hard_limit_collects_every_check_and_gc_can_bring_usage_back() -> None:
    memory, now = Memory(120 * MIB), [0.0]
    memory.freed_by_gc = 50 * MIB
    lim = limiter(memory, now)
    lim.check()
    assert memory.collects == 1 and not lim.refusing  # 120 - 50 = 70 MiB after the collection


def test_bytes_accepted_count_until_the_next_reading() -> None:
    memory, now = Memory(70 * MIB), [0.0]
    lim = limiter(memory, now)
    lim.check()
    lim.accept(8 * MIB)  # accepted since the reading (in the pipeline or already in a batch)
    memory.rss = 78 * MIB
    assert lim.usage() == 78 * MIB
    assert not lim.admit(3 * MIB)  # 70 + 8 + 3 > 80 before the next check_interval
    assert lim.admit(1 * MIB)


def test_a_stale_estimate_is_read_again_before_refusing() -> None:
    memory, now = Memory(70 * MIB), [0.0]
    lim = limiter(memory, now)
    lim.check()
    lim.accept(9 * MIB)
    memory.rss = 60 * MIB  # the accepted data has been exported and freed meanwhile
    assert lim.admit(5 * MIB) and lim.usage() == 60 * MIB
    memory.rss = 85 * MIB
    lim.accept(25 * MIB)
    assert not lim.admit(1) and lim.refusing  # the fresh reading says over: refuse until a check


def test_limits_from_mib_and_percentage() -> None:
    assert limits(MemoryLimiterConfig(check_interval=Duration(1), limit_mib=100)) == (100 * MIB, 80 * MIB)
    cfg = MemoryLimiterConfig(check_interval=Duration(1), limit_mib=100, spike_limit_mib=30)
    assert limits(cfg) == (100 * MIB, 70 * MIB)
    pct = MemoryLimiterConfig(check_interval=Duration(1), limit_percentage=50, spike_limit_percentage=10)
    assert limits(pct, total=lambda: 1000 * MIB) == (500 * MIB, 400 * MIB)
    assert total_memory() > 0
    malloc_trim()  # callable on any libc


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"limit_mib": 100}, "check_interval"),
        ({"check_interval": Duration(1)}, "limit_mib or limit_percentage"),
        ({"check_interval": Duration(1), "limit_mib": 100, "spike_limit_mib": 100}, "spike_limit_mib"),
        ({"check_interval": Duration(1), "limit_percentage": 101}, "between 0 and 100"),
    ],
)
def test_config_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MemoryLimiterConfig(**kwargs)  # type: ignore[arg-type]
    assert factory.default_config()["check_interval"] == 0


class Sink:
    def __init__(self) -> None:
        self.count = 0

    async def consume_traces(self, traces: Traces) -> None:
        self.count += 1


def test_processor_raises_retryable_refusal(bare_host: Any) -> None:
    async def main() -> None:
        sink = Sink()
        config = MemoryLimiterConfig(check_interval=Duration(3600), limit_mib=100)
        proc = factory.create(ComponentID("memory_limiter"), config, sink)
        memory = Memory(10 * MIB)
        proc.limiter.read_memory = memory.read  # type: ignore[attr-defined]
        await proc.start(bare_host)
        assert bare_host.gate.limit == 20 * MIB  # the burst allowance: 20% of limit_mib
        await proc.consume_traces(Traces.from_bytes(b"", span_count=0))  # type: ignore[attr-defined]
        memory.rss = 95 * MIB
        proc.limiter.check()  # type: ignore[attr-defined]
        with pytest.raises(RefusedError, match="high memory usage") as info:
            await proc.consume_traces(Traces.from_bytes(b"", span_count=0))  # type: ignore[attr-defined]
        assert info.value.retry_after == 3600
        assert sink.count == 1
        await proc.shutdown()

    asyncio.run(main())
