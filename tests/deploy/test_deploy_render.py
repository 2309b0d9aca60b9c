"""`meshtrace render` end to end: the seed's manifests and the built-in examples rendered by the
real command, every file parsed, every fix asserted, Istio resources checked against the CRD
schema, Kubernetes resources against their basic shape, the collector config through
`meshtrace collector validate` (monitoring: test_deploy_monitoring.py)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import yaml
from deploy_helpers import documents, one, render, run_meshtrace
from k8s_shapes import SHAPES

from meshtrace.cel import check, mixer_to_cel
from meshtrace.config import schema
from meshtrace.config.lint import lint
from meshtrace.config.loader import load

FILES = {
    "README.md",
    "namespaces.yaml",
    "istio/mesh-config.yaml",
    "istio/telemetry.yaml",
    "otel-collector/configmap.yaml",
    "otel-collector/deployment.yaml",
    "otel-collector/service.yaml",
    "otel-collector/pdb.yaml",
    "otel-collector/hpa.yaml",
    "monitoring/prometheus-rules.yaml",
    "monitoring/service-monitor.yaml",
    "monitoring/grafana-dashboard.yaml",
}
CLUSTER_SCOPED = {"Namespace"}
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
PORT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")  # IANA_SVC_NAME, at most 15 characters


def yaml_files(out: Path) -> list[Path]:
    return sorted(out.rglob("*.yaml"))


def collector_config(out: Path) -> dict[str, Any]:
    cm = one(out / "otel-collector" / "configmap.yaml", "ConfigMap")
    config: dict[str, Any] = yaml.safe_load(cm["data"]["config.yaml"])
    return config


# -- every file -------------------------------------------------------------------------------------


def test_all_files_written_each_with_comments(out: Path) -> None:
    written = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert written == FILES
    for path in yaml_files(out):
        text = path.read_text()
        assert text.startswith("# Rendered by `meshtrace render` from "), path
        for chunk in text.split("\n---\n")[1:]:
            assert chunk.startswith("# - "), f"{path}: a document without notes"


def test_every_document_has_a_kubernetes_shape(out: Path) -> None:
    for path in yaml_files(out):
        docs = documents(path)
        assert docs, path
        for doc in docs:
            assert set(doc) >= {"apiVersion", "kind", "metadata"}, path
            meta = doc["metadata"]
            assert DNS_LABEL.match(meta["name"]) and len(meta["name"]) <= 63, (path, meta)
            if doc["kind"] in CLUSTER_SCOPED:
                assert "namespace" not in meta
            else:
                assert DNS_LABEL.match(meta["namespace"]), (path, meta)
            for key, value in (meta.get("labels") or {}).items():
                assert isinstance(value, str), (path, key)
            assert "creationTimestamp" not in meta


def test_every_document_matches_its_api_schema(out: Path) -> None:
    for path in yaml_files(out):
        for doc in documents(path):
            shape = SHAPES.get((doc["apiVersion"], doc["kind"]))
            assert shape is not None, f"{path}: unexpected {doc['apiVersion']} {doc['kind']}"
            assert schema.validate(doc, shape) == [], path


def test_rendering_is_deterministic(seed_manifests: Path, seed_out: Path, tmp_path: Path) -> None:
    # Same input from another folder: byte-identical output (no clock, no absolute paths).
    copy = tmp_path / "input"
    shutil.copytree(seed_manifests, copy)
    again = render(copy, tmp_path / "again")
    for rel in FILES:
        assert (again / rel).read_bytes() == (seed_out / rel).read_bytes(), rel


def test_namespaces_cover_every_namespaced_resource(out: Path) -> None:
    created = {d["metadata"]["name"] for d in documents(out / "namespaces.yaml")}
    for path in yaml_files(out):
        for doc in documents(path):
            ns = doc["metadata"].get("namespace")
            assert ns is None or ns in created | {"default", "istio-system"}, (path, ns)


def test_readme_lists_files_and_apply_order(out: Path) -> None:
    readme = (out / "README.md").read_text()
    for rel in FILES - {"README.md"}:
        assert f"`{rel}`" in readme
    order = [
        "kubectl apply -f namespaces.yaml",
        "istioctl install -f istio/mesh-config.yaml",
        "kubectl apply -f otel-collector/",
        "kubectl apply -f istio/telemetry.yaml",
        "kubectl apply -f monitoring/",
    ]
    positions = [readme.index(step) for step in order]
    assert positions == sorted(positions)


# -- Istio ------------------------------------------------------------------------------------------


def test_mesh_config_fixes_the_seed(seed_out: Path) -> None:
    path = seed_out / "istio" / "mesh-config.yaml"
    op = one(path, "IstioOperator")
    mesh = op["spec"]["meshConfig"]
    assert op["apiVersion"] == "install.istio.io/v1alpha1"
    assert op["spec"]["profile"] == "default"
    # No Zipkin tracer beside the opentelemetry provider.
    assert any("opentelemetry" in p for p in mesh["extensionProviders"])
    assert "zipkin" not in mesh["defaultConfig"].get("tracing", {})
    # proxyMetadata where proxies read it.
    assert "proxyMetadata" not in mesh
    assert mesh["defaultConfig"]["proxyMetadata"] == {
        "ISTIO_META_DNS_CAPTURE": "false",
        "ISTIO_META_DNS_AUTO_ALLOCATE": "false",
    }
    # camelCase proxy tracing keys; user-named custom tags are left alone.
    tracing = mesh["defaultConfig"]["tracing"]
    assert tracing["maxPathTagLength"] == 256
    assert "cluster_id" in tracing["customTags"]
    assert not [k for k in tracing if "_" in k]
    # Later IstioOperator wins, as with istioctl install -f a -f b.
    assert tracing["sampling"] == 100.0
    assert "tracing" not in mesh.get("defaultProviders", {})
    text = path.read_text()
    assert "istio#49557" in text
    assert "defaultConfig.tracing.zipkin (otel-collector.istio-system:9411) removed" in text


def test_telemetries_are_v1_valid_and_free_of_mixer_syntax(out: Path) -> None:
    spec_schema = schema.version_schema("telemetry.json", "v1")
    assert spec_schema is not None
    telemetries = documents(out / "istio" / "telemetry.yaml")
    assert telemetries
    for tel in telemetries:
        assert tel["apiVersion"] == "telemetry.istio.io/v1"
        assert tel["kind"] == "Telemetry"
        assert schema.validate(tel["spec"], spec_schema["properties"]["spec"], "spec") == []
        for metrics in tel["spec"].get("metrics", []):
            for override in metrics.get("overrides", []):
                for tag in override.get("tagOverrides", {}).values():
                    assert mixer_to_cel(tag.get("value", "")) is None, tag
                    assert tag.get("operation") == "REMOVE" or check(tag["value"]) is None, tag
    assert "v1alpha1" not in yaml.safe_dump(telemetries)


def test_ignored_duplicate_telemetries_are_left_out_and_named(seed_out: Path) -> None:
    path = seed_out / "istio" / "telemetry.yaml"
    names = {(t["metadata"]["namespace"], t["metadata"]["name"]) for t in documents(path)}
    # Three selector-less Telemetries in istio-system: Istio applies only the oldest (by name here).
    assert ("istio-system", "mesh-default") in names
    assert ("istio-system", "mesh-metrics") not in names
    assert ("istio-system", "sampling-policy") not in names
    assert {("default", "frontend-tracing"), ("default", "backend-tracing")} <= names
    assert {("payment", "high-priority-tracing"), ("logging", "low-priority-tracing")} <= names
    text = path.read_text()
    assert "# Left out: Telemetry istio-system/mesh-metrics (metrics-config.yaml)" in text
    assert "# Left out: Telemetry istio-system/sampling-policy (sampling-config.yaml)" in text
    # Meaning is kept; what lint says about it is repeated on the resource.
    assert "# - Kept as written, but (production-full-sampling): mesh-wide sampling 100%" in text
    # The left-out metrics Telemetry is shown with the Mixer value already in CEL, for merging.
    assert "has(destination.workload.name) ? destination.workload.name : ''unknown''" in text


# -- OpenTelemetry Collector ---------------------------------------------------------------------------


def test_collector_config_uses_current_names_and_pod_address(out: Path) -> None:
    config = collector_config(out)
    types = {e.split("/", 1)[0] for e in config["exporters"]}
    assert not types & {"logging", "otlp", "otlphttp"}
    for exporter in config["exporters"].values():
        assert "loglevel" not in (exporter or {})
    for pipeline in config["service"]["pipelines"].values():
        assert pipeline["processors"][0].split("/", 1)[0] == "memory_limiter"
        assert set(pipeline["exporters"]) <= set(config["exporters"])
    endpoints = re.findall(r"endpoint: (\S+)", yaml.safe_dump(config["receivers"]))
    assert endpoints and all(e.startswith("${env:MY_POD_IP}:") for e in endpoints)
    assert config["extensions"]["health_check"]["endpoint"] == "${env:MY_POD_IP}:13133"
    assert "health_check" in config["service"]["extensions"]
    prometheus = config["service"]["telemetry"]["metrics"]["readers"][0]["pull"]["exporter"]["prometheus"]
    assert prometheus["host"] == "${env:MY_POD_IP}" and prometheus["port"] == 8888
    assert "address" not in config["service"]["telemetry"]["metrics"]


def test_seed_collector_config_renames(seed_out: Path) -> None:
    config = collector_config(seed_out)
    # Finding 6: the logging exporter mapped `loglevel: info` to `normal`, not `basic`.
    assert config["exporters"]["debug"] == {"verbosity": "normal"}
    assert config["exporters"]["otlp_grpc/jaeger"]["endpoint"] == "jaeger-collector.observability:4317"
    assert config["service"]["pipelines"]["traces"]["exporters"] == ["otlp_grpc/jaeger", "debug"]
    # The seed defines the ConfigMap twice: the later file wins, and what that loses is named.
    text = (seed_out / "otel-collector" / "configmap.yaml").read_text()
    notes = " ".join(ln[1:].strip() for ln in text.splitlines() if ln.startswith("#"))
    assert "not in effect: exporters.otlp.endpoint," in notes
    assert "processors.probabilistic_sampler.sampling_percentage" in notes


def test_collector_config_passes_meshtrace_collector_validate(out: Path) -> None:
    proc = run_meshtrace(
        "collector", "validate", "--config", str(out / "otel-collector" / "configmap.yaml"),
        env={"MY_POD_IP": "127.0.0.1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "valid (0 warning(s))" in proc.stdout


def test_deployment_is_highly_available(seed_out: Path) -> None:
    dep = one(seed_out / "otel-collector" / "deployment.yaml", "Deployment")
    assert dep["apiVersion"] == "apps/v1"
    assert "replicas" not in dep["spec"]  # the HPA owns it
    selector = dep["spec"]["selector"]["matchLabels"]
    assert selector.items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    spec = dep["spec"]["template"]["spec"]
    term = spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    (container,) = spec["containers"]
    assert container["image"] == "otel/opentelemetry-collector-contrib:0.156.0"
    # resources: the seed's resource-limits.yaml patch merged into the Deployment.
    assert container["resources"] == {
        "requests": {"memory": "512Mi", "cpu": "500m"},
        "limits": {"memory": "1Gi", "cpu": "1000m"},
    }
    env = {e["name"]: e for e in container["env"]}
    assert env["MY_POD_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert env["GOMEMLIMIT"]["value"] == "819MiB"  # 80% of 1Gi
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/", "port": 13133}
    mount = container["volumeMounts"][0]
    assert container["args"] == [f"--config={mount['mountPath']}/config.yaml"]
    cm = one(seed_out / "otel-collector" / "configmap.yaml", "ConfigMap")
    assert spec["volumes"][0]["configMap"]["name"] == cm["metadata"]["name"]
    for port in container["ports"]:
        assert "name" not in port or (PORT_NAME.match(port["name"]) and len(port["name"]) <= 15)


def test_service_ports_are_named_for_istio(out: Path) -> None:
    svc = one(out / "otel-collector" / "service.yaml", "Service")
    ports = {p["port"]: p for p in svc["spec"]["ports"]}
    assert ports[4317]["name"] == "grpc-otlp" and ports[4317]["appProtocol"] == "grpc"
    assert ports[4318]["name"] == "http-otlp"
    assert ports[9411]["name"] == "http-zipkin"
    assert ports[8888]["name"] == "http-metrics"
    for port in ports.values():
        assert DNS_LABEL.match(port["name"]) and 0 < port["targetPort"] < 65536
    dep = one(out / "otel-collector" / "deployment.yaml", "Deployment")
    assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    # The mesh's provider points at this Service's gRPC port.
    mesh = one(out / "istio" / "mesh-config.yaml", "IstioOperator")["spec"]["meshConfig"]
    provider = next(p["opentelemetry"] for p in mesh["extensionProviders"] if "opentelemetry" in p)
    meta = svc["metadata"]
    assert provider["service"] == f"{meta['name']}.{meta['namespace']}.svc.cluster.local"
    assert ports[provider["port"]]["name"] == "grpc-otlp"


def test_pdb_and_hpa(seed_out: Path, examples_out: Path) -> None:
    for out, minimum in ((seed_out, 3), (examples_out, 2)):
        dep = one(out / "otel-collector" / "deployment.yaml", "Deployment")
        labels = dep["spec"]["template"]["metadata"]["labels"]
        pdb = one(out / "otel-collector" / "pdb.yaml", "PodDisruptionBudget")
        assert pdb["apiVersion"] == "policy/v1"
        assert pdb["spec"]["maxUnavailable"] == 1
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
        hpa = one(out / "otel-collector" / "hpa.yaml", "HorizontalPodAutoscaler")
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": "otel-collector",
        }
        assert hpa["spec"]["minReplicas"] == minimum  # seed: its HPA; examples: 1 replica raised to 2
        assert hpa["spec"]["maxReplicas"] == 10
        names = {m["resource"]["name"] for m in hpa["spec"]["metrics"]}
        assert names == {"cpu", "memory"}


def test_rendered_output_lints_clean_of_what_render_fixes(out: Path) -> None:
    bundle = load([out / "istio", out / "otel-collector", out / "monitoring"])
    codes = {f.code for f in lint(bundle)}
    fixed = {
        "telemetry-deprecated-version",
        "multiple-namespace-telemetry",
        "mixer-tag-override",
        "mesh-proxy-metadata",
        "legacy-zipkin-tracing",
        "proxy-config-snake-case",
        "default-providers-tracing",
        "collector-port-protocol",
        "collector-memory-limiter-order",
        "collector-logging-exporter",
        "collector-loglevel",
        "collector-config",
        "alert-removed-metric",
        "schema",
        "schema-unknown-field",
    }
    assert not codes & fixed, codes & fixed
