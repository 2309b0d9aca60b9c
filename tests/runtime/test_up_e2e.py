"""`meshtrace up` end to end: the demo mesh (control plane, collector + store + UI, ingress
gateway, two frontend and two backend pods, each app + sidecar) as real processes, real HTTP.

Each run takes its own loopback /24, so Istio's fixed per-pod ports never clash with another
test or a running demo."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from meshtrace.runtime import ports
from tests.conftest import child_pids

UP_TIMEOUT = 180.0
GRPC_OPERATION = "meshtrace.demo.Users/Count"  # the demo's gRPC method (meshtrace/demo/users_api.py)
KILL_DEADLINE_S = 2.0  # children die this soon after `up` is SIGKILLed


def _get(url: str, headers: dict[str, str] | None = None, timeout: float = 10.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
    try:
        with opener.open(request, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class Mesh:
    def __init__(self, process: Any, host: str, network: str) -> None:
        self.process = process
        self.host = host
        self.network = network
        listeners = process.wait_for_listeners("ingress", "ui", timeout=UP_TIMEOUT)
        self.ingress = "http://{}:{}".format(*listeners["ingress"])
        self.ui = "http://{}:{}".format(*listeners["ui"])

    def trace(self, trace_id: str, min_spans: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        """The trace's spans once at least `min_spans` arrived and the count stopped growing."""
        deadline = time.monotonic() + timeout
        last: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            status, body = _get(f"{self.ui}/api/traces/{trace_id}")
            if status == 200:
                spans = json.loads(body)["data"][0]["spans"]
                if len(spans) >= min_spans and len(spans) == len(last):
                    return spans
                last = spans
            time.sleep(1.0)
        raise AssertionError(
            f"trace {trace_id}: {len(last)} spans after {timeout}s:\n" + self.process.output()
        )

    def processes(self, trace: dict[str, Any]) -> dict[str, str]:
        return {pid: p["serviceName"] for pid, p in trace["processes"].items()}


def up_args(tmp_path: Path, *extra: str) -> tuple[str, str, list[str]]:
    """(host, network, `up` arguments) with every address on a random loopback /25, so runs side
    by side do not collide, and the store in `tmp_path`."""
    a, b = random.randint(100, 250), random.randint(1, 250)
    host, network = f"127.{a}.{b}.200", f"127.{a}.{b}.0/25"
    args = ["up", *extra, "--host", host, "--network", network, "--ingress", f"{host}:8080"]
    return host, network, [*args, "--ui", f"{host}:16686", "--data-dir", str(tmp_path / "data")]


@pytest.fixture
def mesh(meshtrace_process: Any, tmp_path: Path) -> Mesh:
    host, network, args = up_args(tmp_path, "--prometheus")
    process = meshtrace_process(args, env={"MESHTRACE_DATA_DIR": str(tmp_path / "data")})
    return Mesh(process, host, network)


def _tag(span: dict[str, Any], key: str) -> Any:
    return next((t["value"] for t in span["tags"] if t["key"] == key), None)


def _kind(span: dict[str, Any]) -> str | None:
    return _tag(span, "span.kind")


def _chain(spans: list[dict[str, Any]], span: dict[str, Any]) -> list[dict[str, Any]]:
    """The span and its ancestors, leaf first."""
    by_id = {s["spanID"]: s for s in spans}
    out = [span]
    while out[-1]["references"]:
        parent = by_id.get(out[-1]["references"][0]["spanID"])
        if parent is None:
            break
        out.append(parent)
    return out


def test_demo_mesh_end_to_end(mesh: Mesh) -> None:
    trace_id = os.urandom(16).hex()
    caller_span = os.urandom(8).hex()
    status, body = _get(
        mesh.ingress + "/api/data", headers={"traceparent": f"00-{trace_id}-{caller_span}-01"}
    )
    assert status == 200, body

    # ingress SERVER+CLIENT, frontend sidecar SERVER, frontend app spans, frontend sidecar
    # CLIENT, backend sidecar SERVER, backend app spans down to queryDatabase.
    spans = mesh.trace(trace_id, min_spans=8)
    _, raw = _get(f"{mesh.ui}/api/traces/{trace_id}")
    trace = json.loads(raw)["data"][0]
    services = mesh.processes(trace)
    by_service: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        by_service.setdefault(services[span["processID"]], []).append(span)

    query = next(s for s in spans if "queryDatabase" in s["operationName"])
    chain = _chain(spans, query)
    chain_services = [services[s["processID"]] for s in reversed(chain)]
    # The root of the chain is the gateway's SERVER span, child of the caller's span.
    root = chain[-1]
    assert root["references"][0]["spanID"] == caller_span
    assert chain_services[0] == "istio-ingressgateway.istio-system"
    assert _kind(root) == "server"
    # Every hop is there, in order: gateway -> frontend sidecar -> frontend app -> frontend
    # sidecar -> backend sidecar -> backend app.
    hops = [svc for i, svc in enumerate(chain_services) if i == 0 or chain_services[i - 1] != svc]
    assert hops == [
        "istio-ingressgateway.istio-system",
        "frontend.default",
        "frontend",
        "frontend.default",
        "backend.default",
        "backend",
    ], hops
    sidecar_spans = by_service["frontend.default"] + by_service["backend.default"]
    assert {_kind(s) for s in by_service["frontend.default"]} == {"server", "client"}
    assert {_kind(s) for s in by_service["backend.default"]} == {"server"}
    for span in sidecar_spans:
        assert _tag(span, "environment") == "development"  # the Telemetry custom tag
        assert _tag(span, "component") == "proxy"
    backend_server = next(s for s in by_service["backend.default"] if _kind(s) == "server")
    assert backend_server["operationName"] == "backend.default.svc.cluster.local:8080/*"
    # No span points at a parent that is not in the trace (except the caller's).
    ids = {s["spanID"] for s in spans} | {caller_span}
    assert all(r["spanID"] in ids for s in spans for r in s["references"])
    # The gRPC hop (the frontend calls the backend's gRPC API through the sidecars, a CONNECT
    # on its outbound listener): the apps' CLIENT and SERVER spans joined this trace.
    grpc_app = {(services[s["processID"]], _kind(s)) for s in spans if s["operationName"] == GRPC_OPERATION}
    assert grpc_app >= {("frontend", "client"), ("backend", "server")}, grpc_app

    # B3 from the caller is continued the same way.
    b3_trace = os.urandom(16).hex()
    status, _ = _get(
        mesh.ingress + "/api/data",
        headers={"x-b3-traceid": b3_trace, "x-b3-spanid": os.urandom(8).hex(), "x-b3-sampled": "1"},
    )
    assert status == 200
    b3_spans = mesh.trace(b3_trace, min_spans=8)
    assert any("queryDatabase" in s["operationName"] for s in b3_spans)

    # An unsampled caller: the first proxy honours it, nobody records anything.
    unsampled = os.urandom(16).hex()
    status, _ = _get(mesh.ingress + "/api/data", headers={"traceparent": f"00-{unsampled}-{caller_span}-00"})
    assert status == 200
    time.sleep(3)  # longer than the batch timeouts on the way (1 s each)
    assert _get(f"{mesh.ui}/api/traces/{unsampled}")[0] == 404

    # Istio's standard metrics, from both reporters, on the pods' 15090.
    network_prefix = mesh.network.rsplit(".", 1)[0]
    reporters: set[str] = set()
    inbound: list[str] = []
    tcp_opened: list[str] = []
    for i in range(1, 5):
        status, text = _get(f"http://{network_prefix}.{i}:15090/stats/prometheus")
        assert status == 200
        tcp_opened += [
            line
            for line in text.decode().splitlines()
            if line.startswith("istio_tcp_connections_opened_total{")
        ]
        lines = [line for line in text.decode().splitlines() if line.startswith("istio_requests_total{")]
        reporters |= {line.split('reporter="', 1)[1].split('"', 1)[0] for line in lines}
        inbound += [line for line in lines if 'reporter="destination"' in line]
    assert reporters == {"source", "destination"}
    if not any('grpc_response_status="0"' in line for line in inbound):
        # a sidecar without HTTP/2 carries the gRPC hop as TCP, between sidecars over mTLS too
        assert any(
            'reporter="destination"' in line
            and 'connection_security_policy="mutual_tls"' in line
            and 'destination_service="backend.default.svc.cluster.local"' in line
            for line in tcp_opened
        ), tcp_opened
    # Istio's defaults (PERMISSIVE + auto mTLS): every sidecar-to-sidecar hop is mutual TLS,
    # and the metrics name both principals
    assert inbound and all('connection_security_policy="mutual_tls"' in line for line in inbound), inbound
    assert all('source_principal="spiffe://cluster.local/ns/' in line for line in inbound)
    assert any(
        'source_principal="spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"'
        in line
        for line in inbound
    )

    # Debian's Prometheus, started by `up --prometheus`, scrapes both reporters and evaluates
    # the demo's alert rules (written against metrics the collector and sidecars really emit).
    prometheus = "http://{}:{}".format(*mesh.process.listeners["prometheus"])
    query = urllib.parse.quote('sum by (reporter) (istio_requests_total{destination_app="backend"})')
    seen: set[str] = set()
    deadline = time.monotonic() + 60
    while seen != {"source", "destination"} and time.monotonic() < deadline:
        status, body = _get(f"{prometheus}/api/v1/query?query={query}")
        if status == 200:
            seen = {r["metric"].get("reporter", "") for r in json.loads(body)["data"]["result"]}
        time.sleep(1)
    assert seen == {"source", "destination"}, seen
    _, body = _get(f"{prometheus}/api/v1/rules")
    rules = {r["name"]: r for g in json.loads(body)["data"]["groups"] for r in g["rules"]}
    assert {"OtelCollectorDown", "HighTracingDropRate", "IstioHigh5xxRate"} <= set(rules)
    assert all(r["health"] in ("ok", "unknown") for r in rules.values()), rules
    _, body = _get(f"{prometheus}/api/v1/query?query=" + urllib.parse.quote('up{job="otel-collector"}'))
    assert [r["value"][1] for r in json.loads(body)["data"]["result"]] == ["1"]
    # The collector answers, so OtelCollectorDown's expression (with its absent()) selects nothing.
    down = urllib.parse.quote(rules["OtelCollectorDown"]["query"])
    _, body = _get(f"{prometheus}/api/v1/query?query={down}")
    assert json.loads(body)["data"]["result"] == []

    # Kill one backend pod (app and sidecar): no request fails.
    backend_ip = f"{network_prefix}.3"
    victims = [ports.owner(backend_ip, 8080), ports.owner(backend_ip, 15006)]
    pids = [int(v.split()[1]) for v in victims if v and v.startswith("pid ")]
    assert len(pids) == 2, victims
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    failures = []
    for _ in range(20):
        status, body = _get(mesh.ingress + "/api/data")
        if status != 200:
            failures.append((status, body[:200]))
        time.sleep(0.1)
    assert not failures, failures

    # Ctrl-C: everything stops, nothing is left listening.
    assert mesh.process.stop(signal.SIGINT, timeout=60) == 0, mesh.process.output()
    for i in range(1, 5):
        for port in (8080, 15001, 15006, 15000, 15090):
            assert ports.is_free(f"{network_prefix}.{i}", port), (i, port)
    for port in (4317, 4318, 8080, 9090, 15010, 15012, 16686):
        assert ports.is_free(mesh.host, port), port


def test_the_grpc_hop_goes_through_the_sidecars_as_http2(meshtrace_process: Any, tmp_path: Path) -> None:
    """The demo's gRPC call is a proxied gRPC stream: both sidecars record a span for it (Envoy's
    gRPC tags) between the apps' gRPC spans."""
    host, network, args = up_args(tmp_path)
    mesh = Mesh(meshtrace_process(args, env={"MESHTRACE_DATA_DIR": str(tmp_path / "data")}), host, network)
    trace_id = os.urandom(16).hex()
    status, body = _get(
        mesh.ingress + "/api/data", headers={"traceparent": f"00-{trace_id}-{os.urandom(8).hex()}-01"}
    )
    assert status == 200, body
    spans = mesh.trace(trace_id, min_spans=12)
    _, raw = _get(f"{mesh.ui}/api/traces/{trace_id}")
    services = mesh.processes(json.loads(raw)["data"][0])
    server = next(
        s for s in spans if s["operationName"] == GRPC_OPERATION and services[s["processID"]] == "backend"
    )
    chain = [services[s["processID"]] for s in _chain(spans, server)]
    # backend app <- backend sidecar <- frontend sidecar <- frontend app
    assert chain[:4] == ["backend", "backend.default", "frontend.default", "frontend"], chain
    for hop in _chain(spans, server)[1:3]:
        assert _tag(hop, "grpc.path") == "/" + GRPC_OPERATION, hop
        assert str(_tag(hop, "grpc.status_code")) == "0", hop


def test_up_runs_the_seed_manifests(meshtrace_process: Any, seed_manifests: Path, tmp_path: Path) -> None:
    # The guide's folder itself: its manifests sit one level down, in manifests/.
    guide = seed_manifests.parent
    process = meshtrace_process(up_args(tmp_path, "-f", str(guide), "--access-log")[2])
    listeners = process.wait_for_listeners("ingress", "ui", timeout=UP_TIMEOUT)
    out = process.output()
    assert f"no manifests in the folder itself: read the 13 in {seed_manifests}" in out
    assert "jaeger-collector.observability" in out  # reported and pointed at the local store
    status, _ = _get("http://{}:{}/api/data".format(*listeners["ingress"]))
    assert status == 200
    # --access-log: the proxies' access log lines reach the terminal too.
    process.wait_for_line('"GET /api/data HTTP/1.1" 200', timeout=30)
    assert process.stop(signal.SIGINT, timeout=60) == 0


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# No orphans: every child of `up` dies with it even when `up` is SIGKILLed and cannot stop them.


def test_sigkill_of_up_leaves_no_child_running(meshtrace_process: Any, tmp_path: Path) -> None:
    _, _, args = up_args(tmp_path)
    process = meshtrace_process(args)
    listeners = process.wait_for_listeners("ingress", timeout=UP_TIMEOUT)
    # Spans waiting in the apps' batch processors: a child that only got SIGTERM would try to
    # flush them to a collector that is gone, retrying for a minute.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    for _ in range(3):
        with opener.open("http://{}:{}/api/data".format(*listeners["ingress"]), timeout=10) as resp:
            assert resp.status == 200
    children = child_pids(process.proc.pid)
    assert len(children) >= 10, children  # collector, istiod, gateway, 4 apps, 4 sidecars

    os.kill(process.proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + KILL_DEADLINE_S
    while time.monotonic() < deadline and any(_alive(p) for p in children):
        time.sleep(0.05)
    survivors = {p: Path(f"/proc/{p}/cmdline").read_bytes() for p in children if _alive(p)}
    for pid in survivors:  # do not leave them to the next test
        os.kill(pid, signal.SIGKILL)
    assert not survivors, survivors


def test_up_keeps_the_terminal_calm_and_logs_every_pod(meshtrace_process: Any, tmp_path: Path) -> None:
    host, _, args = up_args(tmp_path, "--fresh")
    process = meshtrace_process(args)
    listeners = process.wait_for_listeners("ingress", "ui", timeout=UP_TIMEOUT)
    ingress = "http://{}:{}".format(*listeners["ingress"])
    for _ in range(5):
        assert _get(ingress + "/api/data")[0] == 200
    assert _get(ingress + "/api/data?fail=1")[0] >= 500
    runs = list((tmp_path / "data" / "runs").iterdir())
    assert len(runs) == 1
    logs = runs[0] / "logs"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and '"GET /api/data' not in _read(logs / "frontend-0.log"):
        time.sleep(0.2)
    assert "sidecar | [" in _read(logs / "frontend-0.log") + _read(logs / "frontend-1.log")
    # The store's trace count, which the table shows, counts the stored traces.
    stored = 0.0
    while time.monotonic() < deadline and stored < 1:
        metrics = _get(f"http://{host}:8888/metrics")[1].decode()
        stored = sum(float(m) for m in re.findall(r"^meshtrace_store_traces\{[^}]*\} (\S+)$", metrics, re.M))
        time.sleep(0.5)
    assert stored >= 1
    # `meshtrace logs` follows a pod's file by name.
    shown = subprocess.run(
        [
            sys.executable,
            "-m",
            "meshtrace",
            "logs",
            "--data-dir",
            str(tmp_path / "data"),
            "istio-ingressgateway",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert '"GET /api/data' in shown.stdout
    assert process.stop(signal.SIGINT, timeout=60) == 0
    out = process.output()
    # No access log line and no debug exporter line reached the terminal ...
    assert '"GET /' not in out and "debug: Traces" not in out, out
    # ... but the table did, with the gateway's random admin/stats/health ports, and the numbers.
    assert re.search(r"admin :\d+, stats :\d+, health :\d+", out), out
    summary = re.search(r"status: (\d+) requests through the gateway, (\d+) errors, (\d+) traces stored", out)
    assert summary is not None, out
    assert int(summary[1]) >= 6 and int(summary[2]) >= 1 and int(summary[3]) >= 1
    # --fresh: this run's traces are in its own store, not in the shared traces.db.
    assert (runs[0] / "data" / "traces.db").is_file()
    assert not (tmp_path / "data" / "traces.db").exists()
    assert f"logs kept in {logs}" in out


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def test_a_workload_without_a_sidecar_runs_plain_behind_its_service(
    meshtrace_process: Any, demo_without_backend_sidecar: Path, tmp_path: Path
) -> None:
    _, network, args = up_args(tmp_path, "-f", str(demo_without_backend_sidecar))
    process = meshtrace_process(args)
    listeners = process.wait_for_listeners("ingress", timeout=UP_TIMEOUT)
    assert "backend: no sidecar (pod annotation sidecar.istio.io/inject=false)" in process.output()
    # The frontend's sidecar reaches the backend's app directly, through its Service.
    status, body = _get("http://{}:{}/api/data".format(*listeners["ingress"]))
    assert status == 200 and b"Alice" in body, body
    backend_ip = network.rsplit(".", 1)[0] + ".3"
    assert not ports.is_free(backend_ip, 8080)
    assert ports.is_free(backend_ip, 15006)  # no sidecar there
    assert process.stop(signal.SIGINT, timeout=60) == 0


def test_on_a_terminal_the_status_table_is_redrawn_in_place(meshtrace_process: Any, tmp_path: Path) -> None:
    # FORCE_COLOR makes rich treat the pipe as a terminal, as `make demo` in a shell is.
    process = meshtrace_process(up_args(tmp_path)[2], env={"FORCE_COLOR": "1", "COLUMNS": "150"})
    process.wait_for_listeners("ingress", timeout=UP_TIMEOUT)
    time.sleep(5)  # two refreshes at least
    assert process.stop(signal.SIGINT, timeout=60) == 0
    out = process.output()
    assert out.count("ingress gateway") >= 2, out  # drawn, then redrawn ...
    assert "\x1b[2K" in out  # ... over itself (erase line), not scrolled
    assert "status: 0 requests through the gateway" in out


def test_apps_export_otlp_through_their_sidecars(meshtrace_process: Any, tmp_path: Path) -> None:
    """`up --otlp-via-sidecar`: the apps' spans reach the collector through their sidecars (a
    CONNECT for the collector Service; TCP until the sidecar speaks HTTP/2, a gRPC request
    after), and those sidecars count the exports to the collector Service."""
    host, network, args = up_args(tmp_path, "--otlp-via-sidecar")
    mesh = Mesh(meshtrace_process(args, env={"MESHTRACE_DATA_DIR": str(tmp_path / "data")}), host, network)
    trace_id = os.urandom(16).hex()
    headers = {"traceparent": f"00-{trace_id}-{os.urandom(8).hex()}-01"}
    status, body = _get(mesh.ingress + "/api/data", headers=headers)
    assert status == 200, body
    spans = mesh.trace(trace_id, min_spans=8)
    assert {"handleData", "queryDatabase"} <= {s["operationName"] for s in spans}  # the apps' own spans
    collector = 'destination_service="otel-collector.istio-system.svc.cluster.local"'
    network_prefix = mesh.network.rsplit(".", 1)[0]
    exports = []
    for i in range(1, 5):
        _, text = _get(f"http://{network_prefix}.{i}:15090/stats/prometheus")
        exports += [
            line
            for line in text.decode().splitlines()
            if collector in line and 'reporter="source"' in line
            and line.startswith(("istio_tcp_connections_opened_total{", "istio_requests_total{"))
        ]  # fmt: skip
    assert exports, "no sidecar carried an export to the collector"
