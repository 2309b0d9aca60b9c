"""Admission control at the receivers: bytes of requests in flight, and the memory limiter's word
before a body is read or decoded.

The `memory_limiter` processor only sees data after a receiver has read and decoded it, so a
burst of large requests could take `limit_mib` several times over before the first refusal. Each
memory limiter therefore registers here (`watch`), and every receiver asks before it reads or
decodes a request:
- while a memory limiter refuses, the request is refused at once (gRPC UNAVAILABLE / HTTP 503 with
  RetryInfo / Retry-After, as the processor would);
- request bytes being read, decoded and pushed (each body counted 1 + DECODE_COST times: the
  bytes and their decoding) are capped at the smallest `spike_limit_mib` (the burst allowance)
  of the memory limiters; a request that would go over is refused with
  gRPC RESOURCE_EXHAUSTED / HTTP 429 plus RetryInfo / Retry-After, which OTLP clients retry.
Without a memory_limiter in any pipeline, nothing is capped beyond each receiver's request size
limit (as the Collector).
"""

from __future__ import annotations

from typing import Protocol

from meshtrace.collector.component import RefusedError

MIB = 1024 * 1024
RETRY_AFTER_S = 1.0
# Memory a request takes while it is decoded, per byte of its body, on top of the body itself:
# upb's parse of a 3.9 MiB OTLP request peaks 15 MiB above the bytes.
DECODE_COST = 4


class ResourceExhaustedError(RefusedError):
    """Refused because too many request bytes are in flight (gRPC RESOURCE_EXHAUSTED / HTTP 429)."""


class MemoryGate(Protocol):
    """What admission needs of a memory limiter."""

    hard: int
    soft: int

    def admit(self, size: int) -> bool: ...

    def refusal(self) -> RefusedError: ...


class Admission:
    def __init__(self) -> None:
        self.limit: int | None = None  # bytes in flight; None: no memory_limiter, no cap
        self.in_flight = 0
        self._gates: list[MemoryGate] = []

    def watch(self, gate: MemoryGate) -> None:
        self._gates.append(gate)
        burst = gate.hard - gate.soft
        self.limit = burst if self.limit is None else min(self.limit, burst)

    def concurrent_requests(self, max_request: int) -> int | None:
        """How many requests of up to `max_request` bytes, with their decoding, fit in the burst
        allowance at once (None: no cap): the gRPC receiver's limit on open export calls."""
        if self.limit is None:
            return None
        return max(1, self.limit // (max_request * (1 + DECODE_COST)))

    def check(self, size: int = 0, held: int = 0) -> RefusedError | None:
        """Why a request holding `held` bytes may not take `size` more now, or None. A request
        alone in flight always may (up to its receiver's own size limit)."""
        for gate in self._gates:
            if not gate.admit(size):
                return gate.refusal()
        if self.limit is not None and self.in_flight + size > self.limit and self.in_flight > held:
            return ResourceExhaustedError(
                f"too many request bytes in flight (limit {self.limit // MIB} MiB): retry later",
                retry_after=RETRY_AFTER_S,
            )
        return None

    def ticket(self) -> Ticket:
        return Ticket(self)


class Ticket:
    """The bytes one request holds in flight; `with` releases them all."""

    def __init__(self, admission: Admission) -> None:
        self.admission = admission
        self.size = 0
        self.refused: RefusedError | None = None  # why the last `reserve` said no

    def reserve(self, size: int) -> bool:
        self.refused = self.admission.check(size, self.size)
        if self.refused is not None:
            return False
        self.admission.in_flight += size
        self.size += size
        return True

    def refusal(self) -> RefusedError:
        """Why the last `reserve` said no."""
        assert self.refused is not None
        return self.refused

    def __enter__(self) -> Ticket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.admission.in_flight -= self.size
        self.size = 0
