"""Time from `meshtrace up --traffic 5` to the first joined trace in the store, and a Chromium
screenshot of that trace in the web UI (docs/up.md quotes the numbers).

    .venv/bin/python bench/first_trace.py [--runs 3] [--screenshot docs/img/up-trace-view.png]

Runs `up` on its own loopback addresses (127.77.x.0/25), so a running demo is not disturbed.
Every wait is bounded; `up` is stopped with SIGINT at the end of each run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from meshtrace import ready

NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _get_json(url: str) -> Any:
    try:
        with NO_PROXY.open(url, timeout=5) as resp:
            return json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _joined(trace: dict[str, Any]) -> bool:
    """A trace that went gateway -> frontend -> backend -> the database span."""
    services = {p["serviceName"] for p in trace["processes"].values()}
    names = {s["operationName"] for s in trace["spans"]}
    return "queryDatabase" in names and {"istio-ingressgateway.istio-system", "backend.default"} <= services


def run_once(run: int, screenshot: Path | None) -> tuple[float, float]:
    host_net = f"127.77.{10 + run}"
    host = f"{host_net}.200"
    with tempfile.TemporaryDirectory() as data:
        start = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "meshtrace", "up", "--traffic", "5", "--host", host,
             "--network", f"{host_net}.0/25", "--ingress", f"{host}:8080", "--ui", f"{host}:16686",
             "--data-dir", data],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            ui = ""
            for line in proc.stdout:
                parsed = ready.parse(line)
                if parsed and parsed[0] == "ui":
                    ui = f"http://{parsed[1]}:{parsed[2]}"
                if parsed and parsed[0] == "ingress":
                    break
                if time.monotonic() - start > 180:
                    raise TimeoutError("up not ready in 180 s")
            ready_s = time.monotonic() - start
            trace_id = None
            while trace_id is None and time.monotonic() - start < 240:
                found = _get_json(f"{ui}/api/traces?service=frontend&limit=20&lookback=1h") or {}
                for trace in found.get("data") or []:
                    if _joined(trace):
                        trace_id = trace["traceID"]
                        break
                else:
                    time.sleep(0.2)
            if trace_id is None:
                raise TimeoutError("no joined trace in 240 s")
            first_trace_s = time.monotonic() - start
            if screenshot is not None:
                _screenshot(f"{ui}/trace/{trace_id}", screenshot)
            return ready_s, first_trace_s
        finally:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def _screenshot(url: str, path: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(url)
        page.wait_for_timeout(1500)
        path.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(path), full_page=False)
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--screenshot", type=Path)
    args = parser.parse_args()
    results = [run_once(i, args.screenshot if i == 0 else None) for i in range(max(1, min(args.runs, 10)))]
    print("| run | up ready (s) | first joined trace stored (s) |")
    print("|---|---|---|")
    for i, (ready_s, trace_s) in enumerate(results):
        print(f"| {i + 1} | {ready_s:.1f} | {trace_s:.1f} |")
    ready_median = statistics.median(r for r, _ in results)
    trace_median = statistics.median(t for _, t in results)
    print(f"| median | {ready_median:.1f} | {trace_median:.1f} |")


if __name__ == "__main__":
    main()
