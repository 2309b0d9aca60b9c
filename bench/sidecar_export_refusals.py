"""Many sidecars exporting at once to a collector whose admission control refuses (docs/
reliability.md, "Sidecar to collector"): how many of the spans the sidecars made reach the store.

A default collector with `spike_limit_mib` small enough that one sidecar batch at a time is in
flight (more get RESOURCE_EXHAUSTED / 429 with RetryInfo / Retry-After), N sidecars, each sent R
requests through its outbound listener to a dead address (every request is a traced CLIENT span,
`503 UF`, no app needed). Then the sidecars are given time to export and are stopped (SIGTERM).

    .venv/bin/python bench/sidecar_export_refusals.py [--sidecars 8] [--requests 1500] [--protocol grpc]
        [--code DIR]   # run the sidecars from another checkout's package (git archive REV meshtrace)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from meshtrace import ready


def start(
    args: list[str], env: dict[str, str], want: set[str]
) -> tuple[subprocess.Popen[str], dict[str, str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "meshtrace", *args],
        cwd=env["MESHTRACE_DATA_DIR"],  # not the checkout: PYTHONPATH (--code) decides the package
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    found: dict[str, str] = {}
    deadline = time.monotonic() + 60
    while not want <= found.keys() and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if (parsed := ready.parse(line)) is not None:
            found[parsed[0]] = f"{parsed[1]}:{parsed[2]}"
    if not want <= found.keys():
        raise RuntimeError(f"{args[0]} did not start: {found}")
    # keep draining its output so that it never blocks on a full pipe
    threading.Thread(target=lambda: [None for _ in proc.stdout or ()], daemon=True).start()
    return proc, found


def metric(address: str, name: str) -> float:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sidecar_doc(name: str, protocol: str, endpoint: str) -> dict[str, object]:
    provider = {"name": "otel", "type": "opentelemetry", "protocol": protocol, "path": "/v1/traces",
                "endpoint": f"http://{endpoint}", "timeout_s": 5.0, "max_tag_length": 256}  # fmt: skip
    tracing = {"enabled": True, "provider": provider, "random_sampling_percentage": 100.0}
    return {
        "schema": 1,
        "workload": {"name": name, "namespace": "default", "labels": {"app": name, "version": "v1"}},
        "mesh": {"mesh_id": "cluster.local", "cluster_id": "Kubernetes"},
        "tracing": {"client": tracing, "server": tracing},
        "metrics": {"enabled": True, "client": {}, "server": {}},
        "services": {},
    }


def load(outbound: str, target: int, n: int) -> None:
    host, port = outbound.rsplit(":", 1)
    request = f"GET http://127.0.0.1:{target}/ HTTP/1.1\r\nHost: 127.0.0.1:{target}\r\n\r\n".encode()
    with socket.create_connection((host, int(port)), timeout=30) as s:
        for _ in range(n):
            s.sendall(request)
            answer = b""
            while b"\r\n\r\n" not in answer:
                answer += s.recv(65536)
            head, _, body = answer.partition(b"\r\n\r\n")
            length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))  # type: ignore[union-attr]
            while len(body) < length:
                body += s.recv(65536)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sidecars", type=int, default=8)
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--protocol", choices=["grpc", "http"], default="grpc")
    parser.add_argument("--spike-mib", type=int, default=2)
    parser.add_argument("--settle", type=float, default=20.0, help="Seconds for exports after the load.")
    parser.add_argument("--code", default=None, help="A checkout's folder holding the sidecars' meshtrace.")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        env = {**os.environ, "MESHTRACE_DATA_DIR": folder}
        sets = [
            "receivers.otlp.protocols.grpc.endpoint=127.0.0.1:0",
            "receivers.otlp.protocols.http.endpoint=127.0.0.1:0",
            "receivers.zipkin.endpoint=127.0.0.1:0",
            "extensions.health_check.endpoint=127.0.0.1:0",
            "extensions.query.endpoint=127.0.0.1:0",
            "service.telemetry.metrics.address=127.0.0.1:0",
            "processors.memory_limiter.limit_mib=4000",
            f"processors.memory_limiter.spike_limit_mib={opts.spike_mib}",
        ]
        collector, found = start(
            ["collector", *(a for s in sets for a in ("--set", s))],
            env,
            {"otlp-grpc", "otlp-http", "metrics"},
        )
        endpoint = found[f"otlp-{opts.protocol}"]
        side_env = {**env, "PYTHONPATH": opts.code} if opts.code else env
        sidecars = []
        try:
            for i in range(opts.sidecars):
                path = Path(folder) / f"sidecar-{i}.json"
                path.write_text(json.dumps(sidecar_doc(f"app{i}", opts.protocol, endpoint)))
                ports = [
                    a
                    for p in ("inbound", "outbound", "admin", "stats", "health")
                    for a in (f"--{p}-port", "0")
                ]
                sidecars.append(
                    start(
                        ["sidecar", "--workload", f"app{i}", "--ip", "127.0.0.1", "--config", str(path),
                         "--no-access-log", *ports],
                        side_env,
                        {"outbound", "admin"},
                    )
                )  # fmt: skip
            target = dead_port()
            threads = [
                threading.Thread(target=load, args=(found_s["outbound"], target, opts.requests))
                for _, found_s in sidecars
            ]
            started = time.monotonic()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            load_s = time.monotonic() - started
            time.sleep(opts.settle)
            dropped = exported = retries = 0
            for _, found_s in sidecars:
                with urllib.request.urlopen(f"http://{found_s['admin']}/stats", timeout=10) as r:
                    stats = dict(line.split(": ", 1) for line in r.read().decode().splitlines())
                dropped += int(stats.get("tracing.spans_dropped", 0))
                exported += int(stats.get("tracing.spans_exported", 0))
                retries += int(stats.get("tracing.export_retries", 0))
            made = opts.sidecars * opts.requests
            accepted = metric(found["metrics"], "otelcol_receiver_accepted_spans")
            print(
                f"{opts.sidecars} sidecars x {opts.requests} spans over {opts.protocol} in {load_s:.1f}s, "
                f"spike_limit_mib={opts.spike_mib}: made {made}, stored {accepted:.0f}, "
                f"lost {made - accepted:.0f}; sidecars: exported {exported}, dropped {dropped}, "
                f"retries {retries}"
            )
        finally:
            for proc, _ in sidecars:
                proc.send_signal(signal.SIGTERM)
            for proc, _ in sidecars:
                proc.wait(20)
            collector.send_signal(signal.SIGTERM)
            collector.wait(30)


if __name__ == "__main__":
    main()
