"""Push latency of the control plane: time from a file edit to the answer of a parked long-poll.

    python -m meshtrace.control.latency [--edits 20] [--poll 0.25]

Starts `meshtrace control` on a temporary folder (port 0), registers one node, and for each edit
parks `GET /v1/config/{node}?version=V&wait=10`, rewrites the workload's Telemetry with a new
sampling percentage and measures until the 200 arrives. Prints min / median / p95 / max."""

from __future__ import annotations

import json
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import click

from meshtrace import ready
from meshtrace.control import identity

MESH = """\
apiVersion: install.istio.io/v1alpha1
kind: IstioOperator
metadata: {name: control-plane, namespace: istio-system}
spec:
  meshConfig:
    extensionProviders:
    - name: otel
      opentelemetry: {service: otel-collector.istio-system.svc.cluster.local, port: 4317}
    defaultProviders: {tracing: [otel]}
"""

TELEMETRY = """\
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: bench, namespace: default}
spec:
  selector: {matchLabels: {app: bench}}
  tracing:
  - randomSamplingPercentage: %s
"""


def _request(
    url: str, token: str, body: dict[str, Any] | None = None, timeout: float = 30.0
) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    headers = {"content-type": "application/json", "authorization": f"Bearer {token}"}
    req = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, None


def measure(edits: int, poll_s: float) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "mesh.yaml").write_text(MESH)
        telemetry = folder / "telemetry.yaml"
        telemetry.write_text(TELEMETRY % 1)
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "meshtrace",
                "control",
                "-f",
                str(folder),
                "--listen",
                "127.0.0.1:0",
                "--poll",
                str(poll_s),
                "--data-dir",
                str(folder / "control"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert proc.stdout is not None
            parsed = None
            while parsed is None:
                line = proc.stdout.readline()
                if not line:
                    raise click.ClickException("meshtrace control exited before its ready line")
                parsed = ready.parse(line)
            base = f"http://{parsed[1]}:{parsed[2]}"
            registration = {
                "workload": "bench",
                "namespace": "default",
                "pod": "bench-0",
                "ip": "127.0.1.1",
                "labels": {"app": "bench"},
                "ports": {"inbound": 15006, "app": 8080},
            }
            key = identity.load_or_create_key(folder / "control")
            token = identity.mint(key, identity.Claims("default", "default", "bench-0"))
            _, answer = _request(f"{base}/v1/register", token, registration)
            node = answer["node_id"]
            _, answer = _request(f"{base}/v1/config/{node}", token)
            version = answer["version"]
            out = []
            for i in range(edits):
                result: dict[str, Any] = {}

                def long_poll(v: str = version, box: dict[str, Any] = result) -> None:
                    box["answer"] = _request(f"{base}/v1/config/{node}?version={v}&wait=10", token)
                    box["at"] = time.perf_counter()

                waiter = threading.Thread(target=long_poll)
                waiter.start()
                # parked on the server; the random part samples every phase of the poll loop
                time.sleep(0.3 + random.uniform(0, poll_s))
                edited = time.perf_counter()
                telemetry.write_text(TELEMETRY % (2 + i))
                waiter.join(timeout=15)
                status, answer = result.get("answer", (0, None))
                if status != 200:
                    raise click.ClickException(f"edit {i}: long-poll answered {status}, not 200")
                pushed = answer["config"]["tracing"]["client"]["random_sampling_percentage"]
                if pushed != 2 + i:  # a half-written file must never be pushed
                    raise click.ClickException(f"edit {i}: pushed sampling {pushed}, expected {2 + i}")
                version = answer["version"]
                out.append(result["at"] - edited)
            return out
        finally:
            proc.terminate()
            proc.wait(timeout=20)


@click.command()
@click.option("--edits", default=20, show_default=True, type=click.IntRange(1, 1000))
@click.option("--poll", "poll_s", default=0.25, show_default=True, type=float, help="control --poll")
def main(edits: int, poll_s: float) -> None:
    samples = sorted(measure(edits, poll_s))
    p95 = samples[min(len(samples) - 1, int(len(samples) * 0.95))]
    click.echo(f"push latency over {edits} edits (--poll {poll_s}s), file edit -> long-poll answer:")
    click.echo(
        f"  min {samples[0] * 1000:.0f} ms  median {statistics.median(samples) * 1000:.0f} ms  "
        f"p95 {p95 * 1000:.0f} ms  max {samples[-1] * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
