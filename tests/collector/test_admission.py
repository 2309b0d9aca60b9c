"""Admission control (sans-IO): request bytes in flight capped at the smallest memory limiter's
spike allowance, a lone request always admitted, and a refusing memory limiter refusing first."""

from __future__ import annotations

from meshtrace.collector.admission import MIB, Admission, ResourceExhaustedError
from meshtrace.collector.component import RefusedError
from meshtrace.collector.processors.memory_limiter.processor import MemoryLimiter


def gate(limit_mib: int, rss_mib: int) -> tuple[MemoryLimiter, list[int]]:
    rss = [rss_mib * MIB]
    limiter = MemoryLimiter(limit_mib * MIB, limit_mib * MIB * 4 // 5, read_memory=lambda: rss[0])
    limiter.check()
    return limiter, rss


def test_no_memory_limiter_no_cap() -> None:
    admission = Admission()
    with admission.ticket() as ticket:
        assert ticket.reserve(10**12)
    assert admission.in_flight == 0 and admission.concurrent_requests(4 * MIB) is None


def test_in_flight_capped_at_the_smallest_spike_allowance() -> None:
    admission = Admission()
    admission.watch(gate(500, 10)[0])  # 100 MiB burst
    admission.watch(gate(200, 10)[0])  # 40 MiB burst
    assert admission.limit == 40 * MIB
    assert admission.concurrent_requests(4 * MIB) == 2  # 40 / (4 x 5)
    with admission.ticket() as first:
        assert first.reserve(30 * MIB)
        assert first.reserve(30 * MIB)  # alone in flight: always admitted
        with admission.ticket() as second:
            assert not second.reserve(1)
            assert isinstance(second.refusal(), ResourceExhaustedError)
            assert second.refusal().retry_after == 1.0
    assert admission.in_flight == 0
    with admission.ticket() as third:
        assert third.reserve(1 * MIB)


def test_a_refusing_memory_limiter_refuses_before_the_body_is_read() -> None:
    limiter, rss = gate(200, 10)
    admission = Admission()
    admission.watch(limiter)
    limiter.accept(155 * MIB)  # accepted since the last reading: the estimate nears 160 MiB (soft)
    rss[0] = 190 * MIB  # read again at admission (not at the next check): over, so refuse
    with admission.ticket() as ticket:
        assert not ticket.reserve(0)
        refusal = ticket.refusal()
        assert type(refusal) is RefusedError and "high memory usage" in str(refusal)
