"""`up`'s planning (manifests -> processes) and its command-line failures, without a mesh."""

from __future__ import annotations

import ipaddress
import os
import random
import socket
import subprocess
import sys
from pathlib import Path

from meshtrace.runtime.collector_config import localize
from meshtrace.runtime.plan import DEFAULT_MANIFESTS, make_plan

NET = ipaddress.ip_network("127.0.1.0/24")


def _plan(paths: list[Path]):  # type: ignore[no-untyped-def]
    return make_plan(paths, "127.0.0.1", NET, ("127.0.0.1", 8080), ("127.0.0.1", 16686), None)


def test_demo_plan_gives_each_replica_a_pod_address_and_a_sidecar_proxy() -> None:
    plan = _plan([DEFAULT_MANIFESTS])
    assert [(p.name, p.ip) for p in plan.pods] == [
        ("frontend-0", "127.0.1.1"),
        ("frontend-1", "127.0.1.2"),
        ("backend-0", "127.0.1.3"),
        ("backend-1", "127.0.1.4"),
    ]
    frontend = plan.pods[0]
    assert frontend.app_argv == [sys.executable, "-m", "meshtrace.demo.frontend"]
    assert frontend.app_env["HTTP_PROXY"] == "http://127.0.1.1:15001"
    assert frontend.app_env["POD_IP"] == "127.0.1.1" and frontend.app_env["PORT"] == "8080"
    # The manifest's collector Service name becomes the local collector, with a scheme.
    assert frontend.app_env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:4317"
    assert "127.0.0.1" in frontend.app_env["no_grpc_proxy"].split(",")
    assert frontend.app_env["BACKEND_URL"] == "http://backend:8080"
    assert plan.default_service == "frontend.default.svc.cluster.local"
    assert "otel-collector.istio-system.svc.cluster.local=127.0.0.1:4317" in plan.static_endpoints
    assert plan.reports == []  # the demo's manifests are clean
    sidecar = frontend.sidecar_spec("http://127.0.0.1:15010", Path("/run/tokens"))
    assert sidecar.argv[-6:] == [
        "--control",
        "http://127.0.0.1:15010",
        "--service-account",
        "default",
        "--token-file",
        "/run/tokens/default.frontend-0.token",
    ]
    assert "app=frontend,version=v1" in sidecar.argv


def test_seed_plan_reports_what_cannot_run_as_written(seed_manifests: Path) -> None:
    plan = _plan([seed_manifests])
    reports = "\n".join(plan.reports)
    assert "jaeger-collector.observability" in reports  # undefined host -> local store
    assert "replicas -> 1 locally" in reports
    assert "lint error [multiple-namespace-telemetry]" in reports
    assert [p.deployment for p in plan.pods] == ["frontend", "frontend", "backend", "backend"]
    # The seed's scheme-less endpoint is made local and explicit.
    assert plan.pods[0].app_env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:4317"
    exporters = plan.collector.config["service"]["pipelines"]["traces"]["exporters"]
    assert exporters == ["logging", "store"]


def test_unknown_image_is_reported_and_an_annotation_runs_it(tmp_path: Path) -> None:
    deployment = """apiVersion: apps/v1
kind: Deployment
metadata: {name: %s, namespace: default}
spec:
  replicas: 1
  selector: {matchLabels: {app: %s}}
  template:
    metadata:
      labels: {app: %s}
      %s
    spec:
      containers: [{name: c, image: example/%s:1, ports: [{containerPort: 9000}]}]
"""
    annotations = "annotations: {meshtrace.dev/command: 'python3 -m http.server 9000'}"
    (tmp_path / "apps.yaml").write_text(
        deployment % ("mystery", "mystery", "mystery", "", "mystery")
        + "---\n"
        + deployment % ("web", "web", "web", annotations, "web")
    )
    plan = _plan([tmp_path])
    assert any("mystery" in r and "meshtrace.dev/command" in r for r in plan.reports)
    assert [(p.name, p.app_argv, p.app_port) for p in plan.pods] == [
        ("web-0", ["python3", "-m", "http.server", "9000"], 9000)
    ]
    assert "no OpenTelemetry Collector Deployment" in "\n".join(plan.reports)


def test_localize_keeps_the_config_but_listens_locally_and_stores() -> None:
    config = {
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": "0.0.0.0:4317"}}}},
        "exporters": {
            "otlp/jaeger": {"endpoint": "jaeger.obs:4317"},
            "otlp/kept": {"endpoint": "tempo:4317"},
        },
        "service": {
            "pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["otlp/jaeger", "otlp/kept"]}}
        },
    }
    out, reports = localize(config, "127.9.9.9", ("127.0.0.1", 16686), {}, lambda host: host == "tempo")
    assert out["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"] == "127.9.9.9:4317"
    assert out["service"]["pipelines"]["traces"]["exporters"] == ["otlp/kept", "store"]
    assert "otlp/jaeger" not in out["exporters"]
    assert out["extensions"]["query"] == {"endpoint": "127.0.0.1:16686", "store": "store"}
    assert out["service"]["extensions"] == ["health_check", "query"]
    assert len(reports) == 1 and "jaeger.obs" in reports[0]
    assert config["exporters"]["otlp/jaeger"]  # the input is not changed


def test_localize_takes_batch_out_of_store_pipelines_so_acknowledged_means_committed() -> None:
    config = {
        "receivers": {"otlp": {"protocols": {"grpc": {}}}},
        "processors": {"memory_limiter": {"limit_mib": 512}, "batch": {}, "batch/big": {}},
        "exporters": {"debug": {}},
        "service": {
            "pipelines": {
                "traces": {
                    "receivers": ["otlp"],
                    "processors": ["memory_limiter", "batch", "batch/big"],
                    "exporters": ["debug"],
                }
            }
        },
    }
    out, _ = localize(config, "127.0.0.1", ("127.0.0.1", 16686), {}, lambda host: False)
    assert out["service"]["pipelines"]["traces"]["processors"] == ["memory_limiter"]
    default, _ = localize(None, "127.0.0.1", ("127.0.0.1", 16686), {}, lambda host: False)
    assert default["service"]["pipelines"]["traces"]["processors"] == ["memory_limiter"]


def _up(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meshtrace", "up", *args], capture_output=True, text=True, timeout=60
    )


def test_up_refuses_a_folder_without_manifests(tmp_path: Path) -> None:
    result = _up("-f", str(tmp_path))
    assert result.returncode == 2
    assert "cannot run these manifests" in result.stdout


def test_up_names_the_process_holding_a_port() -> None:
    host = f"127.{random.randint(100, 250)}.{random.randint(1, 250)}.200"
    with socket.socket() as s:
        s.bind((host, 0))
        s.listen()
        port = s.getsockname()[1]
        result = _up("--host", host, "--network", "127.199.0.0/25", "--ingress", f"{host}:{port}")
    assert result.returncode == 2
    assert f"{host}:{port} is in use by pid {os.getpid()} " in result.stdout
