"""Issue 10, findings 4-6, against a real collector process (the default config): peak RSS
(VmHWM) bounds under a gRPC burst and gzip bombs, and a small export that is never stuck behind
a large OTLP/JSON body. Bounds and ordering only; the timings are `meshtrace bench bounds`."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import requests

from meshtrace.bench.bounds import (
    BURST_REQUEST,
    JSON_HEADERS,
    big_json_body,
    grpc_burst,
    gzip_bomb,
    post_all,
    request_of_size,
    vm_kib,
)
from meshtrace.bench.collector import EXPORT, make_request
from meshtrace.model.otlp_wire import count_spans
from tests.conftest import child_pids

LIMIT_MIB = 200
BURST_MIB = LIMIT_MIB // 5  # spike_limit_mib's default: 20% of the limit


def start(meshtrace_process: Any, default_collector_args: list[str], tmp_path: Path, *sets: str) -> Any:
    args = [*default_collector_args, "--set", f"processors.memory_limiter.limit_mib={LIMIT_MIB}"]
    for item in sets:
        args += ["--set", item]
    proc = meshtrace_process(args, env={"MESHTRACE_DATA_DIR": str(tmp_path)})
    proc.wait_for_listeners("otlp-grpc", "otlp-http", "zipkin", "query", "metrics")
    return proc


def test_sixty_concurrent_4mib_exports_stay_within_limit_plus_burst(
    meshtrace_process: Any, default_collector_args: list[str], tmp_path: Path, collector_metric: Any
) -> None:
    """Was 746 MiB at limit_mib 200: every message was taken and decoded at once. Every refusal
    carries RetryInfo; those made after the message was read count in the refused spans (calls
    refused before it is read have no known span count)."""
    proc = start(meshtrace_process, default_collector_args, tmp_path)
    statuses = asyncio.run(grpc_burst(proc.address("otlp-grpc")))
    assert set(statuses) <= {"OK", "RESOURCE_EXHAUSTED", "UNAVAILABLE"}, statuses
    assert statuses["OK"] >= 1
    assert vm_kib(proc.proc.pid, "VmHWM") <= (LIMIT_MIB + BURST_MIB) * 1024
    spans_per_request = count_spans(request_of_size(BURST_REQUEST))
    assert spans_per_request
    refused = collector_metric(proc, "otelcol_receiver_refused_spans", transport="grpc")
    assert refused % spans_per_request == 0
    assert refused <= (statuses["RESOURCE_EXHAUSTED"] + statuses["UNAVAILABLE"]) * spans_per_request


def test_gzip_bombs_cost_at_most_one_limit_each(
    meshtrace_process: Any, default_collector_args: list[str], tmp_path: Path
) -> None:
    """8 concurrent 1 MB bodies unpacking to 1 GiB: Zipkin took 561 MiB and /api/import 1.24 GiB.
    Now each stops at its decompressed limit (20 MiB, 64 MiB) with a 413 naming it, Zipkin within
    the burst allowance, and imports one at a time."""
    proc = start(meshtrace_process, default_collector_args, tmp_path)
    bomb = gzip_bomb()
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    zipkin = asyncio.run(post_all(f"http://{proc.address('zipkin')}/api/v2/spans", bomb, headers, 8))
    imports = asyncio.run(post_all(f"http://{proc.address('query')}/api/import", bomb, headers, 8))
    assert set(zipkin) <= {413, 429} and zipkin[413] >= 1, zipkin
    assert imports == {413: 8}, imports
    # Start RSS (~65 MiB) + one 64 MiB import body + its chunks being joined: far under 561 MiB.
    assert vm_kib(proc.proc.pid, "VmHWM") <= 260 * 1024


def test_a_small_grpc_export_is_not_stuck_behind_a_big_json_body(
    meshtrace_process: Any, default_collector_args: list[str], tmp_path: Path
) -> None:
    """A 120k-span OTLP/JSON body took ~1.3 s of the event loop: a gRPC export started after it
    finished after it. Decoded off the loop, the export started later finishes first. (batch
    only buffers here, so the JSON request never waits for the store after decoding.)"""
    proc = start(
        meshtrace_process,
        default_collector_args,
        tmp_path,
        "processors.memory_limiter.limit_mib=512",
        "processors.batch.send_batch_size=10000000",
    )
    body = big_json_body()
    small = make_request(spans=1, attributes=2)
    url = f"http://{proc.address('otlp-http')}/v1/traces"

    async def main() -> list[str]:
        done: list[str] = []
        async with grpc.aio.insecure_channel(proc.address("otlp-grpc")) as channel:
            export = channel.unary_unary(EXPORT)
            await export(small, timeout=30)  # warm: connected, decoding process started below
            async with aiohttp.ClientSession() as session:
                async with session.post(url, data=body, headers=JSON_HEADERS) as warm:
                    assert warm.status == 200, await warm.text()

                async def big() -> None:
                    async with session.post(url, data=body, headers=JSON_HEADERS) as response:
                        assert response.status == 200
                    done.append("json")

                async def canary() -> None:
                    await asyncio.sleep(0.2)  # the JSON body is being decoded by now
                    await export(small, timeout=30)
                    done.append("canary")

                await asyncio.gather(big(), canary())
        return done

    assert asyncio.run(main()) == ["canary", "json"]


def test_the_decoding_process_dies_with_a_killed_collector(
    meshtrace_process: Any, default_collector_args: list[str], tmp_path: Path, wait_until: Any
) -> None:
    proc = start(meshtrace_process, default_collector_args, tmp_path)
    url = f"http://{proc.address('otlp-http')}/v1/traces"
    assert requests.post(url, data=big_json_body(10), headers=JSON_HEADERS, timeout=30).status_code == 200
    spawned = child_pids(proc.proc.pid)
    assert spawned  # the decoding process (and multiprocessing's resource tracker)
    proc.stop(signal.SIGKILL)
    wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in spawned), "children gone")


def test_a_killed_decoding_process_costs_one_retryable_answer(
    meshtrace_process: Any, default_collector_args: list[str], tmp_path: Path, wait_until: Any
) -> None:
    proc = start(meshtrace_process, default_collector_args, tmp_path)
    url = f"http://{proc.address('otlp-http')}/v1/traces"

    def post() -> requests.Response:
        return requests.post(url, data=big_json_body(10), headers=JSON_HEADERS, timeout=30)

    assert post().status_code == 200
    (worker,) = [
        pid for pid in child_pids(proc.proc.pid) if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    os.kill(worker, signal.SIGKILL)
    wait_until(
        lambda: (
            not Path(f"/proc/{worker}").exists() or "Z" in Path(f"/proc/{worker}/stat").read_text().split()[2]
        ),
        "worker dead",
    )
    first = post()
    assert first.status_code in (200, 503), first.text
    if first.status_code == 503:
        assert "decoding process died" in first.text and first.headers["Retry-After"] == "1"
    assert post().status_code == 200
