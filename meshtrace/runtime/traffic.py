"""`up --traffic RPS`: a bounded, fixed-rate load generator against the ingress gateway, with a
fixed mix of `/` and `/api/data` (the demo's two pages), reporting progress as it goes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

PATHS = ("/", "/api/data", "/api/data")  # one page view, two API calls


@dataclass
class TrafficStats:
    sent: int = 0
    ok: int = 0
    failed: int = 0
    latencies_ms: list[float] = field(default_factory=list)

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def summary(self) -> str:
        return (
            f"traffic: {self.sent} sent, {self.ok} ok, {self.failed} failed, "
            f"{self.sent - self.ok - self.failed} in flight, "
            f"p50 {self.percentile(0.5):.1f} ms, p99 {self.percentile(0.99):.1f} ms"
        )


async def run_traffic(
    base_url: str,
    rps: float,
    duration_s: float,
    max_requests: int,
    report: Callable[[str], None],
    report_every_s: float = 10.0,
) -> TrafficStats:
    """Send requests at `rps` until `duration_s` passes or `max_requests` were sent."""
    stats = TrafficStats()
    interval = 1.0 / rps
    timeout = aiohttp.ClientTimeout(total=10)
    in_flight: set[asyncio.Task[None]] = set()

    async def one(session: aiohttp.ClientSession, path: str) -> None:
        start = time.perf_counter()
        try:
            async with session.get(base_url + path) as resp:
                await resp.read()
                good = resp.status < 500
        except (aiohttp.ClientError, TimeoutError):
            good = False
        stats.latencies_ms.append((time.perf_counter() - start) * 1000)
        if good:
            stats.ok += 1
        else:
            stats.failed += 1

    # trust_env=False: the load generator is the outside world and must not go through a proxy.
    async with aiohttp.ClientSession(timeout=timeout, trust_env=False) as session:
        start = time.monotonic()
        next_report = start + report_every_s
        while stats.sent < max_requests and time.monotonic() - start < duration_s:
            task = asyncio.create_task(one(session, PATHS[stats.sent % len(PATHS)]))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            stats.sent += 1
            now = time.monotonic()
            if now >= next_report:
                report(stats.summary())
                next_report = now + report_every_s
            # Fixed schedule, not fixed gaps: a slow response does not lower the rate.
            await asyncio.sleep(max(0.0, start + stats.sent * interval - time.monotonic()))
        if in_flight:
            await asyncio.wait(in_flight, timeout=10)
    report(stats.summary())
    return stats
