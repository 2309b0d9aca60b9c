"""Request helpers shared by the sidecar tests (importable because conftest.py puts this folder
on sys.path)."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from pathlib import Path
from typing import Any

Mesh = Any


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def via_proxy(mesh: Mesh, url: str, headers: dict[str, str] | None = None, data: bytes | None = None) -> Any:
    """A request as an app with HTTP_PROXY set makes it: absolute-form, to the outbound listener."""
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({"http": f"http://{mesh.frontend.address('outbound')}"})
    )
    req = urllib.request.Request(url, headers=headers or {}, data=data)
    try:
        resp = opener.open(req, timeout=10)
    except urllib.error.HTTPError as err:
        return err.code, err.read(), dict(err.headers)
    with resp:
        return resp.status, resp.read(), dict(resp.headers)


def raw(address: str, data: bytes, timeout: float = 5.0, *pieces: tuple[float, bytes]) -> bytes:
    """Send bytes (then optional delayed pieces) and read until the server closes."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(data)
        for delay, piece in pieces:
            time.sleep(delay)
            s.sendall(piece)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except TimeoutError:
            pass
        return out


def via_proxy_direct(mesh: Mesh, path: str, headers: dict[str, str] | None = None) -> Any:
    req = urllib.request.Request(f"http://{mesh.backend.address('inbound')}{path}", headers=headers or {})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status, resp.read(), dict(resp.headers)


def admin_stats(sidecar: Any) -> dict[str, str]:
    """A sidecar's Envoy-style /stats (`name: value` lines) from its admin listener."""
    with urllib.request.urlopen(f"http://{sidecar.address('admin')}/stats", timeout=5) as r:
        return dict(line.split(": ", 1) for line in r.read().decode().splitlines())


def spans_settled(*sidecars: Any, timeout: float = 20.0) -> int:
    """Wait until no sidecar holds a span not yet exported (each span a request made is queued
    before its answer reaches the client, and leaves the queue only once exported or dropped):
    then nothing more will arrive at the collector. Returns the spans the sidecars exported."""
    deadline = time.monotonic() + timeout
    while True:
        stats = [admin_stats(p) for p in sidecars]
        if all(int(s["tracing.spans_pending"]) == 0 for s in stats):
            return sum(int(s["tracing.spans_exported"]) for s in stats)
        if time.monotonic() > deadline:
            raise TimeoutError(f"spans still pending after {timeout}s")
        time.sleep(0.02)


def spans_in(out: Path) -> list[tuple[str, dict[str, Any]]]:
    found = []
    if out.exists():
        for line in out.read_text().splitlines():
            for rs in json.loads(line).get("resourceSpans", []) if line.strip() else []:
                svc = next(
                    a["value"]["stringValue"]
                    for a in rs["resource"]["attributes"]
                    if a["key"] == "service.name"
                )
                for ss in rs.get("scopeSpans", []):
                    found.extend((svc, s) for s in ss.get("spans", []))
    return found


def scrape(proc: Any) -> dict[str, list[Any]]:
    """A sidecar's :15090 page, samples by metric family."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://{proc.address('stats')}/stats/prometheus", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, list[Any]] = {}
    for fam in text_string_to_metric_families(text):
        out.setdefault(fam.name, []).extend(fam.samples)
    return out
