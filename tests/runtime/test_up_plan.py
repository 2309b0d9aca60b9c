"""`up`'s planning (manifests -> processes) and its command-line failures, without a mesh."""

from __future__ import annotations

import ipaddress
import os
import random
import socket
import subprocess
import sys
from pathlib import Path

import pytest

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


@pytest.mark.e2e
def test_up_refuses_a_folder_without_manifests(tmp_path: Path) -> None:
    result = _up("-f", str(tmp_path))
    assert result.returncode == 2
    assert "cannot run these manifests" in result.stdout


@pytest.mark.e2e
def test_up_names_the_process_holding_a_port() -> None:
    host = f"127.{random.randint(100, 250)}.{random.randint(1, 250)}.200"
    with socket.socket() as s:
        s.bind((host, 0))
        s.listen()
        port = s.getsockname()[1]
        result = _up("--host", host, "--network", "127.199.0.0/25", "--ingress", f"{host}:{port}")
    assert result.returncode == 2
    assert f"{host}:{port} is in use by pid {os.getpid()} " in result.stdout


def test_apps_learn_their_pod_as_the_downward_api_would_tell_them() -> None:
    """Each replica knows its pod (POD_NAME, POD_NAMESPACE) and its spans carry k8s.pod.name and
    k8s.namespace.name through OTEL_RESOURCE_ATTRIBUTES, so two replicas can be told apart."""
    from meshtrace.sdk.resource import build_resource

    plan = _plan([DEFAULT_MANIFESTS])
    envs = {p.name: p.app_env for p in plan.pods}
    assert envs["frontend-1"]["POD_NAME"] == "frontend-1"
    assert envs["frontend-1"]["POD_NAMESPACE"] == "default"
    resources = {name: build_resource(env, detectors=[]).attributes for name, env in envs.items()}
    assert resources["frontend-0"]["k8s.pod.name"] == "frontend-0"
    assert resources["frontend-1"]["k8s.pod.name"] == "frontend-1"
    assert resources["backend-0"]["k8s.namespace.name"] == "default"


def test_pod_identity_keeps_what_the_manifest_declares(tmp_path: Path) -> None:
    manifest = tmp_path / "app.yaml"
    manifest.write_text(
        """apiVersion: apps/v1
kind: Deployment
metadata: {name: shop, namespace: store}
spec:
  replicas: 1
  selector: {matchLabels: {app: shop}}
  template:
    metadata:
      labels: {app: shop}
      annotations: {meshtrace.dev/command: "python -m http.server"}
    spec:
      containers:
        - name: shop
          image: shop:1
          env:
            - {name: MY_POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
            - {name: OTEL_RESOURCE_ATTRIBUTES, value: "team=cart,k8s.pod.name=given"}
"""
    )
    env = _plan([manifest]).pods[0].app_env
    assert env["MY_POD_NAME"] == "shop-0"
    assert env["OTEL_RESOURCE_ATTRIBUTES"] == "team=cart,k8s.pod.name=given,k8s.namespace.name=store"


def test_a_workload_istio_would_not_inject_runs_plain(demo_without_backend_sidecar: Path) -> None:
    plan = _plan([demo_without_backend_sidecar])
    sidecars = {p.name: p.sidecar for p in plan.pods}
    assert sidecars == {"frontend-0": True, "frontend-1": True, "backend-0": False, "backend-1": False}
    backend = plan.pods[2]
    assert "HTTP_PROXY" not in backend.app_env  # its own calls go direct
    # Its Service reaches the app directly, and `up` says why it has no sidecar.
    assert "backend.default.svc.cluster.local=127.0.1.3:8080" in plan.static_endpoints
    assert any(
        "backend: no sidecar (pod annotation sidecar.istio.io/inject=false)" in r for r in plan.reports
    )
    # Its sidecar ports are free for others: not checked before the start.
    assert ("127.0.1.3", 15001) not in plan.fixed_addresses()


def test_the_demo_namespaces_are_labelled_so_every_demo_workload_gets_a_sidecar() -> None:
    plan = _plan([DEFAULT_MANIFESTS])
    assert plan.pods and all(p.sidecar for p in plan.pods)


def test_a_guide_folder_with_manifests_one_level_down_is_read(tmp_path: Path) -> None:
    guide = tmp_path / "guide"
    (guide / "manifests").mkdir(parents=True)
    (guide / "README.txt").write_text("the guide's text")
    for manifest in DEFAULT_MANIFESTS.iterdir():
        (guide / "manifests" / manifest.name).write_text(manifest.read_text())
    plan = _plan([guide])
    assert len(plan.pods) == 4
    read = f"{guide}: no manifests in the folder itself: read the 6 in {guide / 'manifests'}"
    assert plan.reports == [read]


@pytest.mark.e2e
def test_the_readmes_examples_path_exists() -> None:
    # README and docs/up.md name examples/seed: the repository's link to the built-in demo.
    root = Path(__file__).resolve().parents[2]
    assert (root / "examples" / "seed").resolve() == DEFAULT_MANIFESTS


@pytest.mark.e2e
def test_up_says_when_it_cannot_create_its_run_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = _up("--data-dir", str(blocker / "data"))
    assert result.returncode == 2
    assert "cannot create the run folder" in result.stdout and "Traceback" not in result.stderr


def test_up_says_which_upstream_components_the_local_collector_skips(tmp_path: Path) -> None:
    # Issue 11: known upstream, not run by meshtrace: accepted, and `up` says so before starting.
    (tmp_path / "collector.yaml").write_text(
        """apiVersion: apps/v1
kind: Deployment
metadata: {name: otel-collector, namespace: obs}
spec:
  replicas: 1
  selector: {matchLabels: {app: otel}}
  template:
    metadata: {labels: {app: otel}}
    spec:
      containers: [{name: c, image: otel/opentelemetry-collector-contrib:0.156.0}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: otel-collector-config, namespace: obs}
data:
  config.yaml: |
    receivers: {otlp: {protocols: {grpc: {}}}}
    processors: {k8s_attributes: {}}
    exporters: {debug: {}}
    service:
      pipelines: {traces: {receivers: [otlp], processors: [k8s_attributes], exporters: [debug]}}
"""
    )
    reports = [r for r in _plan([tmp_path]).reports if r.startswith("collector: ")]
    assert len(reports) == 1
    assert "processors.k8s_attributes" in reports[0] and reports[0].endswith("[COL006]")


def test_otlp_via_sidecar_points_apps_at_the_collector_service() -> None:
    """`up --otlp-via-sidecar`: apps export to the collector Service's gRPC port by name, so
    grpcio reaches it through HTTP_PROXY (the sidecar); by default they export to it directly."""
    args = ("127.0.0.1", NET, ("127.0.0.1", 8080), ("127.0.0.1", 16686), None)
    direct = make_plan([DEFAULT_MANIFESTS], *args)
    via = make_plan([DEFAULT_MANIFESTS], *args, otlp_via_sidecar=True)
    for plain, meshed in zip(direct.pods, via.pods, strict=True):
        assert plain.app_env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:4317"
        assert (
            meshed.app_env["OTEL_EXPORTER_OTLP_ENDPOINT"]
            == "http://otel-collector.istio-system.svc.cluster.local:4317"
        )
        host = "otel-collector.istio-system.svc.cluster.local"
        assert host not in meshed.app_env["no_grpc_proxy"] and meshed.app_env["HTTP_PROXY"].endswith(":15001")


def test_the_demo_backend_serves_grpc_on_its_second_port() -> None:
    plan = _plan([DEFAULT_MANIFESTS])
    backend = next(p for p in plan.pods if p.deployment == "backend")
    frontend = next(p for p in plan.pods if p.deployment == "frontend")
    assert backend.app_port == 8080 and backend.app_env["GRPC_PORT"] == "9090"
    assert frontend.app_env["BACKEND_GRPC"] == "backend:9090"
