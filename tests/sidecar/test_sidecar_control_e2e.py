"""The sidecar with the real control plane (register, long-poll, ACK, live change) and the real
collector (OTLP gRPC export, file exporter), behind a gateway that is the first proxy."""

from __future__ import annotations

import json
import socket
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from sidecar_helpers import get_json, spans_in, spans_settled

from meshtrace.control import identity

COLLECTOR = "otel-collector.istio-system.svc.cluster.local"


def bearer(key: bytes, pod: str, namespace: str = "default") -> dict[str, str]:
    token = identity.mint(key, identity.Claims(namespace, "default", pod))
    return {"Authorization": f"Bearer {token}"}


def test_gateway_and_sidecar_with_control_plane_and_collector(
    meshtrace_process: Any,
    tmp_path: Path,
    harness: Any,
    servers: Any,
    mesh_yaml: Callable[..., str],
    wait_until: Callable[..., Any],
) -> None:
    out = tmp_path / "spans.jsonl"
    collector_cfg = {
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": "127.0.0.1:0"}}}},
        "exporters": {"file": {"path": str(out), "flush_interval": "0s"}},
        "service": {
            "pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["file"]}},
            "telemetry": {"metrics": {"address": "127.0.0.1:0"}},
        },
    }
    (tmp_path / "collector.yaml").write_text(yaml.safe_dump(collector_cfg))
    collector = meshtrace_process(["collector", "--config", str(tmp_path / "collector.yaml")])
    grpc_port = collector.wait_for_listeners("otlp-grpc")["otlp-grpc"][1]

    manifests = tmp_path / "mesh.yaml"
    manifests.write_text(mesh_yaml(COLLECTOR, 100, literal_tags={"environment": "e2e"}))
    key = identity.load_or_create_key(tmp_path / "control-data")
    tokens = {}
    for ns, pod in (("default", "backend-0"), ("istio-system", "istio-ingressgateway-0")):
        tokens[pod] = tmp_path / f"{pod}.token"
        identity.write_token(tokens[pod], identity.mint(key, identity.Claims(ns, "default", pod)))
    control = meshtrace_process(
        ["control", "-f", str(manifests), "--listen", "127.0.0.1:0", "--heartbeat", "0.5", "--poll", "0.1",
         "--endpoint", f"{COLLECTOR}=127.0.0.1:{grpc_port}", "--data-dir", str(tmp_path / "control-data")]
    )  # fmt: skip
    control.wait_for_listeners("control")
    control_url = f"http://{control.address('control')}"

    be_ip, gw_ip = harness.loopback(), harness.loopback()
    app = servers(harness.backend_app(be_ip))
    backend = meshtrace_process(
        ["sidecar", "--workload", "backend", "--pod", "backend-0", "--ip", be_ip,
         "--labels", "app=backend,version=v1", "--app-port", str(app.port), "--control", control_url,
         "--token-file", str(tokens["backend-0"]),
         "--inbound-port", "0", "--outbound-port", "0",
         "--admin-port", "0", "--stats-port", "0", "--health-port", "0"]
    )  # fmt: skip
    backend.wait_for_listeners("inbound", "outbound", "admin", "stats", "health")
    gateway = meshtrace_process(
        ["sidecar", "--mode", "gateway", "--workload", "istio-ingressgateway", "--namespace", "istio-system",
         "--labels", "app=istio-ingressgateway", "--ip", gw_ip, "--app-port", "8080",
         "--control", control_url, "--token-file", str(tokens["istio-ingressgateway-0"]),
         "--gateway-port", "0", "--admin-port", "0", "--stats-port", "0", "--health-port", "0",
         "--default-service", "backend.default"]
    )  # fmt: skip
    gateway.wait_for_listeners("gateway", "admin", "stats", "health")
    admin = gateway.address("admin")

    def backend_known() -> bool:
        svc = get_json(f"http://{admin}/config_dump")["config"].get("services", {})
        eps = svc.get("backend.default.svc.cluster.local", {}).get("endpoints", [])
        return any(e["ip"] == be_ip for e in eps)

    wait_until(backend_known, "the gateway to learn the backend endpoint", timeout=20.0)

    req = urllib.request.Request(
        f"http://{gateway.address('gateway')}/hello", headers={"host": "anything.example"}
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200
        seen = json.loads(r.read())
    assert seen["x-forwarded-for"] == "127.0.0.1"

    spans = wait_until(
        lambda: len(spans_in(out)) >= 3 and spans_in(out), "spans at the collector", timeout=20.0
    )
    by = {(svc, s["kind"]): s for svc, s in spans}
    gw_server = by[("istio-ingressgateway.istio-system", 2)]
    gw_client = by[("istio-ingressgateway.istio-system", 3)]
    be_server = by[("backend.default", 2)]
    assert gw_server["traceId"] == gw_client["traceId"] == be_server["traceId"]
    assert gw_client["parentSpanId"] == gw_server["spanId"]
    assert be_server["parentSpanId"] == gw_client["spanId"]
    assert be_server["name"] == gw_client["name"] == "backend.default.svc.cluster.local:8080/*"
    tags = {a["key"]: a["value"]["stringValue"] for a in be_server["attributes"]}
    assert tags["environment"] == "e2e"
    # live change through the control plane: 0 % at the mesh level; the gateway ACKs the new version
    version = get_json(f"http://{admin}/config_dump")["version"]
    manifests.write_text(mesh_yaml(COLLECTOR, 0, literal_tags={"environment": "e2e"}))
    wait_until(
        lambda: get_json(f"http://{admin}/config_dump")["version"] != version, "a config push", timeout=20.0
    )
    status = get_json(f"{control_url}/v1/status")
    assert status
    before = len(spans_in(out))
    exported = spans_settled(gateway, backend)
    with urllib.request.urlopen(req, timeout=10) as r:
        assert json.loads(r.read())["traceparent"].endswith("-00")
    # neither sidecar queued a span for it, so none can reach the collector
    assert spans_settled(gateway, backend) == exported
    assert len(spans_in(out)) == before

    # Issue 12, the hijack: a local process registers as backend-0 at its own address, then
    # re-registers the real backend-0 with its own port; both refused, the gateway keeps reaching
    # the real pod.
    attacker = socket.create_server((harness.loopback(), 0))
    attacker.setblocking(False)
    attacker_ip, attacker_port = attacker.getsockname()[:2]
    for ip, port in ((attacker_ip, attacker_port), (be_ip, attacker_port)):
        body = {"workload": "backend", "namespace": "default", "pod": "backend-0", "ip": ip,
                "labels": {"app": "backend", "version": "v1"}, "ports": {"inbound": port}}  # fmt: skip
        for headers, status in [({}, 401), (bearer(key, "istio-ingressgateway-0", "istio-system"), 403)]:
            answer = requests.post(f"{control_url}/v1/register", json=body, headers=headers, timeout=5)
            assert answer.status_code == status, answer.text
    for _ in range(20):
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200
    with pytest.raises(BlockingIOError):  # no connection ever reached the attacker
        attacker.accept()
    attacker.close()
    eps = get_json(f"http://{admin}/config_dump")["config"]["services"]["backend.default.svc.cluster.local"]
    assert [(e["ip"], e["port"]) for e in eps["endpoints"]] == [tuple(backend.listeners["inbound"])]
