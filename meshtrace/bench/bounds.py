"""`meshtrace bench bounds`: the collector's memory and latency bounds under hostile load.

Each scenario runs a real `meshtrace collector` (the built-in default config: otlp + zipkin ->
memory_limiter -> batch -> store, query on its port) on free loopback ports with its own data
directory, drives it, and reads its peak RSS (VmHWM in /proc/PID/status):
- burst: 60 concurrent ~3.9 MiB OTLP/gRPC exports, each on its own connection;
- overload: five senders of 1.3 MB OTLP/gRPC requests for `--seconds` (40 in issue 10);
- bombs: 8 concurrent 1 MB gzip bodies that unpack to 1 GiB, to Zipkin and to `/api/import`;
- canary: two senders of 62 KiB gzipped OTLP/JSON bodies (120k spans each) while a small gRPC
  export every 20 ms measures the latency another client sees (p50/p99).
The load functions are used by tests/collector/test_collector_bounds.py too (bounds, no timings).
"""

from __future__ import annotations

import asyncio
import gzip
import statistics
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import aiohttp
import click
import grpc

from meshtrace.bench.collector import EXPORT, make_request
from meshtrace.bench.faults import DEFAULT_LISTENERS, Proc, default_collector_args

MIB = 1024 * 1024
GIB = 1024 * MIB
BURST_REQUEST = 4 * MIB - 64 * 1024  # under the 4 MiB max_recv_msg_size_mib


def vm_kib(pid: int, field: str) -> int:
    """A memory field of /proc/PID/status (VmHWM: peak RSS, VmRSS: now) in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"no {field} in /proc/{pid}/status")


def request_of_size(size: int, seed: int = 0) -> bytes:
    """An encoded ExportTraceServiceRequest just under `size` bytes (100-span requests concatenated,
    which is itself a valid request)."""
    part = make_request(spans=100, attributes=20, seed=seed)
    return part * max(1, size // len(part))


async def grpc_burst(address: str, requests: int = 60, size: int = BURST_REQUEST) -> Counter[str]:
    """`requests` concurrent exports of `size` bytes, each on its own connection: status counts
    (a refusal without RetryInfo, which OTLP clients need to retry RESOURCE_EXHAUSTED, is
    counted as `<CODE> without RetryInfo`)."""
    body = request_of_size(size)

    async def one() -> str:
        async with grpc.aio.insecure_channel(address) as channel:
            try:
                await channel.unary_unary(EXPORT)(body, timeout=60)
                return "OK"
            except grpc.aio.AioRpcError as exc:
                trailers = dict(exc.trailing_metadata() or ())
                retry_info = "" if "grpc-status-details-bin" in trailers else " without RetryInfo"
                return exc.code().name + retry_info

    return Counter(await asyncio.gather(*(one() for _ in range(requests))))


async def grpc_overload(
    address: str, seconds: float, senders: int = 5, size: int = 1_300_000
) -> Counter[str]:
    """`senders` clients each sending `size`-byte exports back to back for `seconds` (50 ms pause
    after a refusal, far less than the RetryInfo asks: a hostile client)."""
    body = request_of_size(size)
    deadline = time.monotonic() + seconds
    counts: Counter[str] = Counter()

    async def sender() -> None:
        async with grpc.aio.insecure_channel(address) as channel:
            export = channel.unary_unary(EXPORT)
            while time.monotonic() < deadline:
                try:
                    await export(body, timeout=30)
                    counts["OK"] += 1
                except grpc.aio.AioRpcError as exc:
                    counts[exc.code().name] += 1
                    await asyncio.sleep(0.05)

    await asyncio.gather(*(sender() for _ in range(senders)))
    return counts


def gzip_bomb(unpacked: int = GIB) -> bytes:
    """A gzip body of zeros that unpacks to `unpacked` bytes (about 1 MB per GiB)."""
    z = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(MIB)
    parts = [z.compress(block) for _ in range(unpacked // MIB)]
    parts.append(z.flush())
    return b"".join(parts)


async def post_all(url: str, body: bytes, headers: dict[str, str], requests: int) -> Counter[int]:
    """`requests` concurrent POSTs of `body`: status counts."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:

        async def one() -> int:
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                return response.status

        return Counter(await asyncio.gather(*(one() for _ in range(requests))))


def big_json_body(spans: int = 120_000) -> bytes:
    """A gzipped OTLP/JSON request of `spans` minimal spans (one resource, one scope)."""
    span = '{"traceId":"0af7651916cd43dd8448eb211c80319c","spanId":"b7ad6b7169203331","name":"x"}'
    text = '{"resourceSpans":[{"scopeSpans":[{"spans":[' + ",".join([span] * spans) + "]}]}]}"
    return gzip.compress(text.encode(), 9)


JSON_HEADERS = {"Content-Type": "application/json", "Content-Encoding": "gzip"}


@dataclass
class CanaryResult:
    latencies_ms: list[float]
    json_statuses: Counter[int]
    canary_refused: Counter[str]

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


async def canary(grpc_address: str, http_address: str, seconds: float, json_senders: int = 2) -> CanaryResult:
    """Small gRPC exports every 20 ms while `json_senders` post big OTLP/JSON bodies back to back."""
    body = big_json_body()
    small = make_request(spans=1, attributes=2)
    deadline = time.monotonic() + seconds
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    refused: Counter[str] = Counter()

    async def sender(session: aiohttp.ClientSession) -> None:
        while time.monotonic() < deadline:
            async with session.post(f"http://{http_address}/v1/traces", data=body, headers=JSON_HEADERS) as r:
                await r.read()
                statuses[r.status] += 1

    async def probe() -> None:
        async with grpc.aio.insecure_channel(grpc_address) as channel:
            export = channel.unary_unary(EXPORT)
            await channel.channel_ready()  # connected before measuring
            while time.monotonic() < deadline:
                start = time.perf_counter()
                try:
                    await export(small, timeout=30)
                    latencies.append((time.perf_counter() - start) * 1000)
                except grpc.aio.AioRpcError as exc:
                    refused[exc.code().name] += 1
                await asyncio.sleep(0.02)

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        await asyncio.gather(probe(), *(sender(session) for _ in range(json_senders)))
    return CanaryResult(latencies, statuses, refused)


@contextmanager
def running_collector(*sets: str) -> Iterator[tuple[int, dict[str, str]]]:
    """(pid, {component: host:port}) of a default-config collector with `--set` overrides."""
    with tempfile.TemporaryDirectory() as data:
        proc = Proc(default_collector_args(*sets), env={"MESHTRACE_DATA_DIR": data})
        try:
            proc.wait_ready(*DEFAULT_LISTENERS.values())
            yield proc.proc.pid, {c: proc.address(c) for c in proc.listeners}
        finally:
            proc.stop(timeout=20)


def _mib(kib: int) -> str:
    return f"{kib / 1024:.0f} MiB"


@click.command()
@click.argument("scenarios", nargs=-1, type=click.Choice(["burst", "overload", "bombs", "canary"]))
@click.option("--limit-mib", default=200, show_default=True, help="memory_limiter limit_mib")
@click.option("--seconds", default=40.0, show_default=True, help="overload and canary duration")
def bounds(scenarios: tuple[str, ...], limit_mib: int, seconds: float) -> None:
    """Peak RSS under bursts, overload and gzip bombs; canary latency beside big OTLP/JSON bodies."""
    for scenario in scenarios or ("burst", "overload", "bombs", "canary"):
        with running_collector(f"processors.memory_limiter.limit_mib={limit_mib}") as (pid, at):
            start = vm_kib(pid, "VmRSS")
            if scenario == "burst":
                result: object = asyncio.run(grpc_burst(at["otlp-grpc"]))
            elif scenario == "overload":
                result = asyncio.run(grpc_overload(at["otlp-grpc"], seconds))
            elif scenario == "bombs":
                bomb = gzip_bomb()
                result = {
                    "zipkin": asyncio.run(
                        post_all(
                            f"http://{at['zipkin']}/api/v2/spans",
                            bomb,
                            {"Content-Type": "application/json", "Content-Encoding": "gzip"},
                            8,
                        )
                    ),
                    "import": asyncio.run(
                        post_all(
                            f"http://{at['query']}/api/import",
                            bomb,
                            {"Content-Type": "application/json", "Content-Encoding": "gzip"},
                            8,
                        )
                    ),
                }
            else:
                outcome = asyncio.run(canary(at["otlp-grpc"], at["otlp-http"], seconds))
                lat = outcome.latencies_ms
                result = (
                    f"canary n={len(lat)} p50={statistics.median(lat):.1f} ms "
                    f"p99={outcome.percentile(99):.1f} ms max={max(lat):.1f} ms; "
                    f"refused {dict(outcome.canary_refused)}; JSON {dict(outcome.json_statuses)}"
                )
            peak = vm_kib(pid, "VmHWM")
            click.echo(
                f"{scenario}: limit_mib={limit_mib} RSS at start {_mib(start)}, peak {_mib(peak)} "
                f"({peak / 1024 / limit_mib:.2f} x limit); {result}"
            )
