"""Table tests of render's builders, one Kubernetes object or one setting each: the shared objects
(`kube`), the collector's Deployment settings, the sampling tier, RBAC, the backends and the
dashboard panels. Pure functions on small inputs: no process, no cluster. Every Kubernetes object
built here must pass kubernetes-validate in strict mode."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from meshtrace.config.loader import Bundle, load
from meshtrace.deploy import backend, collector, kube, monitoring, topology
from meshtrace.deploy.collector_check import qualified_names, service_hosts
from meshtrace.deploy.collector_config import (
    Listening,
    Port,
    collector_config,
    component_type,
    dig,
    pipelines,
    soft_limit_mib,
)
from meshtrace.deploy.manifest import Manifest

K8S_VERSION = "1.30.0"


def valid(data: dict[str, Any]) -> dict[str, Any]:
    kubernetes_validate.validate(data, K8S_VERSION, strict=True)
    return data


def bundle_of(tmp_path: Path, *docs: str) -> Bundle:
    folder = tmp_path / "in"
    folder.mkdir()
    for i, doc in enumerate(docs):
        (folder / f"{i:02d}.yaml").write_text(textwrap.dedent(doc).strip() + "\n")
    return load([folder])


def collector_deployment(replicas: int = 1, resources: str = "", env: str = "") -> str:
    return f"""
    apiVersion: apps/v1
    kind: Deployment
    metadata: {{name: otel-collector, namespace: istio-system}}
    spec:
      replicas: {replicas}
      selector: {{matchLabels: {{app: otel-collector}}}}
      template:
        metadata: {{labels: {{app: otel-collector}}}}
        spec:
          containers:
          - name: otel-collector
            image: otel/opentelemetry-collector-contrib:0.140.0
            resources: {resources or "{}"}
            env: {env or "[]"}
    """


HPA = """
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: otel-collector-hpa, namespace: istio-system}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: otel-collector}
  minReplicas: 4
  maxReplicas: 8
"""


# -- kube: the objects several modules write ----------------------------------------------------------


@pytest.mark.parametrize(
    ("built", "expected"),
    [
        (
            kube.service_port("grpc-otlp", 4317, "grpc"),
            {"name": "grpc-otlp", "port": 4317, "targetPort": 4317, "protocol": "TCP", "appProtocol": "grpc"},
        ),
        (
            kube.service_port("tcp-x", 9000),
            {"name": "tcp-x", "port": 9000, "targetPort": 9000, "protocol": "TCP"},
        ),
        (
            kube.service("tempo", "observability", {"app": "tempo"}, []),
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "tempo", "namespace": "observability"},
                "spec": {"selector": {"app": "tempo"}, "ports": []},
            },
        ),
        (
            kube.service("s", "ns", {"app": "s"}, [], labels={"app": "c"}, headless=True),
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "s", "namespace": "ns", "labels": {"app": "c"}},
                "spec": {"clusterIP": "None", "selector": {"app": "s"}, "ports": []},
            },
        ),
        (
            kube.pod_disruption_budget("c", "ns", {"app": "c"}),
            {
                "apiVersion": "policy/v1",
                "kind": "PodDisruptionBudget",
                "metadata": {"name": "c", "namespace": "ns"},
                "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "c"}}},
            },
        ),
        (
            kube.config_map("c-config", "ns", {"app": "c"}, {"config.yaml": "a: 1\n"}),
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "c-config", "namespace": "ns", "labels": {"app": "c"}},
                "data": {"config.yaml": "a: 1\n"},
            },
        ),
    ],
)
def test_kube_builders(built: dict[str, Any], expected: dict[str, Any]) -> None:
    # Key order is part of the output (the files must stay byte-identical): compare it too.
    assert built == expected
    assert list(built) == list(expected)
    if "spec" in built:
        assert list(built["spec"]) == list(expected["spec"])
    if "kind" in built:
        valid(built)


def test_kube_builders_copy_their_labels() -> None:
    labels = {"app": "c"}
    built = kube.service("c", "ns", labels, [], labels=labels)
    built["metadata"]["labels"]["extra"] = "x"
    assert built["spec"]["selector"] == labels == {"app": "c"}
    assert kube.pod_security() is not kube.pod_security()  # callers add fsGroup to their own copy


def test_input_lookups(tmp_path: Path) -> None:
    bundle = bundle_of(tmp_path, collector_deployment(), collector_deployment(replicas=3), HPA)
    docs = list(kube.definitions(bundle, "Deployment", "otel-collector", "istio-system"))
    assert [d.origin.file for d in docs] == [str(tmp_path / "in" / f) for f in ("00.yaml", "01.yaml")]
    assert list(kube.definitions(bundle, "Deployment", "otel-collector", "default")) == []
    assert kube.input_ref(bundle.deployments[0].meta) == "Deployment istio-system/otel-collector (00.yaml)"


def collector_config_map(config: str) -> str:
    return (
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: otel-collector-config, namespace: istio-system}\n"
        f"data:\n  config.yaml: {config!r}\n"
    )


def test_config_definitions_parse_each_definition(tmp_path: Path) -> None:
    bundle = bundle_of(
        tmp_path,
        collector_config_map("receivers: {otlp: {}}"),
        collector_config_map("receivers: [unclosed"),  # the loader reports it; skipped here
        collector_config_map("exporters: {debug: {}}"),
    )
    found = collector.config_definitions(bundle, bundle.config_maps[0])
    assert [(Path(doc.origin.file).name, config) for doc, config in found] == [
        ("00.yaml", {"receivers": {"otlp": {}}}),
        ("02.yaml", {"exporters": {"debug": {}}}),
    ]


# -- collector config helpers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limit", "mib"), [(512 * 2**20, 409), (2**30, 819), (10**9, 762), (100 * 2**20, 80)]
)
def test_soft_limit_is_80_percent_in_mib(limit: int, mib: int) -> None:
    assert soft_limit_mib(limit) == mib


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({}, {}),
        ({"service": None}, {}),
        ({"service": {"pipelines": None}}, {}),
        ({"service": {"pipelines": {"traces": {}}}}, {"traces": {}}),
    ],
)
def test_pipelines_never_creates_a_section(config: dict[str, Any], expected: dict[str, Any]) -> None:
    before = repr(config)
    assert pipelines(config) == expected
    assert repr(config) == before


def test_component_ids_and_dig() -> None:
    assert [component_type(c) for c in ("otlp", "otlp/in", "otlp_grpc/backend/x")] == [
        "otlp",
        "otlp",
        "otlp_grpc",
    ]
    assert dig({"a": {"b": {"c": 1}}}, "a", "b", "c") == 1
    assert dig({"a": ["b"]}, "a", "b") is None


@pytest.mark.parametrize(
    ("limit", "limit_mib", "note"),
    [
        (None, 2048, False),  # no container limit known: nothing to compare with
        (4 * 2**30, 2048, False),  # below the limit: kept
        (2**30, 819, True),  # above: lowered to GOMEMLIMIT's share
    ],
)
def test_memory_limiter_follows_the_container_limit(limit: int | None, limit_mib: int, note: bool) -> None:
    raw = {
        "receivers": {"otlp": {"protocols": {"grpc": {}}}},
        "processors": {"memory_limiter": {"check_interval": "1s", "limit_mib": 2048, "spike_limit_mib": 100}},
        "exporters": {"debug": {}},
        "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["debug"]}}},
    }
    config, notes, _ = collector_config(raw, limit)
    assert config["processors"]["memory_limiter"]["limit_mib"] == limit_mib
    assert ("spike_limit_mib" not in config["processors"]["memory_limiter"]) is note
    assert any("limit_mib 2048 ->" in n for n in notes) is note
    assert notes[-1].startswith("processors.memory_limiter.limit_mib") is note  # after the other rewrites


def test_qualified_names_and_service_hosts(tmp_path: Path) -> None:
    assert qualified_names("c", "ns") == {"c.ns", "c.ns.svc", "c.ns.svc.cluster.local"}
    hosts = service_hosts(bundle_of(tmp_path, collector_deployment()), "ns", {"c": "ns", "d": "other"})
    assert hosts == {"c"} | qualified_names("c", "ns") | qualified_names("d", "other")


# -- collector: one builder per object -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("replicas_flag", "docs", "count", "note"),
    [
        (3, [collector_deployment()], 3, "3 replicas from --collector-replicas."),
        (1, [collector_deployment()], 1, "One replica is not highly available"),
        (None, [collector_deployment(), HPA], 4, "4 replicas: minReplicas of HorizontalPodAutoscaler"),
        (None, [collector_deployment(replicas=1)], 2, "2 replicas instead of 1"),
        (None, [collector_deployment(replicas=3)], 3, "3 replicas from the input Deployment."),
    ],
)
def test_replicas(tmp_path: Path, replicas_flag: int | None, docs: list[str], count: int, note: str) -> None:
    source = collector._source(bundle_of(tmp_path, *docs))
    assert source is not None
    got, notes = collector._replicas(source, collector.Options(replicas=replicas_flag))
    assert got == count
    assert notes[0].startswith("From Deployment istio-system/otel-collector (00.yaml")
    assert note in notes[-1]


@pytest.mark.parametrize(
    ("given", "expected", "defaulted"),
    [
        ({}, collector.DEFAULT_RESOURCES, ["requests", "limits"]),
        (
            {"requests": {"cpu": "1"}},
            {"requests": {"cpu": "1"}, "limits": collector.DEFAULT_RESOURCES["limits"]},
            ["limits"],
        ),
        ({"requests": {"cpu": "1"}, "limits": {"memory": "2Gi"}}, None, []),
    ],
)
def test_resources(
    tmp_path: Path, given: dict[str, Any], expected: dict[str, Any] | None, defaulted: list[str]
) -> None:
    source = collector._source(bundle_of(tmp_path, collector_deployment(resources=str(given))))
    assert source is not None
    notes: list[str] = []
    assert collector._resources(source.container, notes) == (expected or given)
    assert [n.split(" ", 1)[0] for n in notes] == [f"resources.{part}" for part in defaulted]


@pytest.mark.parametrize(("memory", "gomemlimit"), [("512Mi", "409MiB"), ("1Gi", "819MiB"), ("a lot", None)])
def test_env(tmp_path: Path, memory: str, gomemlimit: str | None) -> None:
    env = "[{name: MY_POD_IP, value: x}, {name: GOMEMLIMIT, value: 1MiB}, {name: FEATURE, value: beta}]"
    source = collector._source(bundle_of(tmp_path, collector_deployment(env=env)))
    assert source is not None
    notes: list[str] = []
    got = collector._env(source.container, {"limits": {"memory": memory}}, notes)
    assert got[0] == {"name": "MY_POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
    assert got[-1] == {"name": "FEATURE", "value": "beta"}  # the input's own, after ours
    limits = [e["value"] for e in got if e["name"] == "GOMEMLIMIT"]
    assert limits == ([gomemlimit] if gomemlimit else [])
    assert len(notes) == (1 if gomemlimit else 0)


def test_deployment_builders(tmp_path: Path) -> None:
    bundle = bundle_of(tmp_path, collector_deployment())
    source = collector._source(bundle)
    assert source is not None
    notes: list[str] = []
    ports = [Port("grpc-otlp", 4317, "grpc"), Port("http-a-very-long-name", 9000)]
    resources = collector._resources(source.container, notes)
    listening = Listening("/h", 13134)
    container = collector._container(source, collector.Options(), ports, listening, resources, notes)
    # A container port name is at most 15 characters: a longer one stays unnamed.
    assert container["ports"] == [
        {"name": "grpc-otlp", "containerPort": 4317, "protocol": "TCP"},
        {"containerPort": 9000, "protocol": "TCP"},
        {"name": "health", "containerPort": 13134, "protocol": "TCP"},
    ]
    assert container["readinessProbe"]["httpGet"] == {"path": "/h", "port": 13134}
    assert container["args"] == ["--config=/conf/config.yaml"]
    pod = collector._pod_spec(bundle, source, container, notes)
    assert pod["volumes"] == [{"name": "config", "configMap": {"name": "otel-collector-config"}}]
    dep = collector._deployment(bundle, source, pod, "a: 1\n", 2, listening, notes)
    valid(dep.data)
    assert "replicas" not in dep.data["spec"]  # the HPA owns the count
    assert dep.data["spec"]["template"]["metadata"]["annotations"] == {kube.CHECKSUM: kube.checksum("a: 1\n")}
    assert [n.split(" ", 1)[0] for n in dep.notes[-4:]] == ["image", "podAntiAffinity", "No", "Probes"]
    assert "13134" in dep.notes[-1]


def test_service_pdb_and_hpa_builders(tmp_path: Path) -> None:
    source = collector._source(bundle_of(tmp_path, collector_deployment(), HPA))
    assert source is not None
    out = collector.Rendered(namespace="istio-system", service="otel-collector")
    out.service_labels = {"app": "otel-collector"}
    out.ports = [Port("grpc-otlp", 4317, "grpc"), Port("http-metrics", 8888, "http")]
    service = collector._service(out, source.selector, None)
    assert [p["appProtocol"] for p in valid(service.data)["spec"]["ports"]] == ["grpc", "http"]
    assert service.notes == ["Added: the sidecars and apps send here."]
    assert valid(collector._pdb(source).data)["spec"]["maxUnavailable"] == 1
    hpa = collector._hpa(source.name, source.namespace, 6, source.hpa)
    assert (valid(hpa.data)["spec"]["minReplicas"], hpa.data["spec"]["maxReplicas"]) == (6, 8)
    assert hpa.data["metadata"]["name"] == "otel-collector-hpa"
    assert collector._hpa("c", "ns", 2, None).data["spec"]["maxReplicas"] == collector.DEFAULT_MAX_REPLICAS


# -- topology: RBAC and the sampling tier ------------------------------------------------------------------


def test_rbac_builders() -> None:
    account = valid(topology._service_account("c", "ns").data)
    role = valid(topology._cluster_role("c").data)
    binding = valid(topology._cluster_role_binding("c", "ns").data)
    assert account["metadata"] == {"name": "c", "namespace": "ns"}
    assert {v for rule in role["rules"] for v in rule["verbs"]} == {"get", "list", "watch"}
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "c", "namespace": "ns"}]


def test_sampling_tier_builders(tmp_path: Path) -> None:
    rendered = collector.render(bundle_of(tmp_path, collector_deployment()), collector.Options())
    assert rendered is not None
    front = rendered.files["deployment.yaml"][0]
    dep = topology._sampling_deployment(front, "c-sampling", "istio-system", 3)
    pod = valid(dep.data)["spec"]["template"]["spec"]
    assert dep.data["spec"]["replicas"] == 3
    assert dep.data["spec"]["selector"] == {"matchLabels": {"app": "c-sampling"}}
    assert pod["volumes"] == [{"name": "config", "configMap": {"name": "c-sampling-config"}}]
    assert [p.get("name") for p in pod["containers"][0]["ports"]] == ["grpc-otlp", "http-metrics", "health"]
    assert (
        front.data["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"] == "otel-collector-config"
    )
    service = valid(topology._sampling_service(rendered, "c-sampling").data)
    assert service["spec"]["clusterIP"] == "None"
    assert service["metadata"]["labels"] == rendered.service_labels
    assert [p["name"] for p in service["spec"]["ports"]] == ["grpc-otlp", "http-metrics"]
    cm = topology._sampling_config_map(rendered.files["configmap.yaml"][0], "c-sampling")
    assert cm.data["metadata"]["name"] == "c-sampling-config"


# -- backend -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "files", "endpoint", "warning"),
    [
        ("external=traces.example.com:4317", [], "traces.example.com:4317", "backend-external"),
        (
            "jaeger",
            ["backend/jaeger.yaml", "backend/grafana-datasource.yaml"],
            "jaeger-collector.observability.svc.cluster.local:4317",
            "backend-storage-external",
        ),
        (
            "tempo",
            ["backend/tempo.yaml", "backend/grafana-datasource.yaml"],
            "tempo.observability.svc.cluster.local:4317",
            "backend-single-binary",
        ),
    ],
)
def test_backends(value: str, files: list[str], endpoint: str, warning: str) -> None:
    chosen = backend.render(value, "elasticsearch")
    assert list(chosen.files) == files
    assert chosen.endpoint == endpoint
    assert [code for code, _ in chosen.warnings] == [warning]
    for docs in chosen.files.values():
        for doc in docs:
            valid(doc.data)


def test_backend_builders() -> None:
    dep = backend._deployment("tempo", backend.TEMPO_IMAGE, [], [4317], {"httpGet": {"path": "/", "port": 1}})
    backend._mount_tempo_data(dep)
    pod = valid(dep.data)["spec"]["template"]["spec"]
    assert pod["securityContext"]["fsGroup"] == backend.TEMPO_UID
    assert [v["name"] for v in pod["volumes"]] == ["config", "data"]
    assert [m["mountPath"] for m in pod["containers"][0]["volumeMounts"]] == ["/conf", "/var/tempo"]
    assert valid(backend._tempo_volume_claim().data)["spec"]["resources"] == {"requests": {"storage": "50Gi"}}
    source = valid(backend._datasource("tempo", "http://tempo:3200").data)
    assert source["metadata"]["labels"] == {"grafana_datasource": "1"}


# -- monitoring ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", "_total"])
def test_dashboard_panels(suffix: str) -> None:
    panels = monitoring._istio_panels() + monitoring._collector_panels(suffix)
    assert [p["id"] for p in panels] == list(range(1, 8))
    cells = [(p["gridPos"]["x"], p["gridPos"]["y"]) for p in panels]
    assert len(set(cells)) == len(cells)  # no panel drawn over another
    collector_exprs = [t["expr"] for p in panels[4:] for t in p["targets"]]
    assert all("istio_" not in e for e in collector_exprs)
    assert ("otelcol_receiver_accepted_spans" + suffix + "[") in collector_exprs[0]
    istio_exprs = [t["expr"] for p in panels[:4] for t in p["targets"]]
    assert all("otelcol" not in e and "_total_total" not in e for e in istio_exprs)
    assert monitoring.dashboard_model("t", "u", suffix)["panels"] == panels


def test_monitor_builders() -> None:
    rendered = collector.Rendered(namespace="ns", service="c", service_labels={"app": "c"})
    selector = ({"release": "x"}, "why")
    service_monitor = monitoring._service_monitor(rendered, selector)
    pod_monitor = monitoring._pod_monitor("istio-system", selector)
    assert service_monitor.data["spec"]["selector"] == {"matchLabels": {"app": "c"}}
    assert pod_monitor.data["metadata"]["namespace"] == "istio-system"
    for monitor in (service_monitor, pod_monitor):
        assert monitor.data["metadata"]["labels"] == {"release": "x"}
        assert "(why)" in monitor.notes[-1]
    assert monitoring.scrape_targets(None, "istio-system", selector)[0].data["kind"] == "PodMonitor"


def test_manifest_notes_are_lists_of_their_own() -> None:
    # Builders return fresh Manifests: a note added to one never shows up on another.
    first, second = backend._service("a", "a", []), backend._service("b", "b", [])
    first.notes.append("x")
    assert second.notes == [] and isinstance(first, Manifest)


@pytest.mark.parametrize(
    ("image", "release"),
    [
        ("otel/opentelemetry-collector-contrib:0.156.0", (0, 156)),
        ("otel/opentelemetry-collector-contrib:v0.146", (0, 146)),
        ("registry.example:5000/otel/collector:0.150.0-amd64", (0, 150)),
        ("otel/opentelemetry-collector-contrib:0.150.0@sha256:abc", (0, 150)),
        ("otel/opentelemetry-collector-contrib:latest", None),
        ("otel/opentelemetry-collector-contrib@sha256:abc", None),
        ("otel/opentelemetry-collector-contrib:0.150.0rc1", None),  # no release: not judged
    ],
)
def test_one_reading_of_an_image_tag_for_every_version_check(
    image: str, release: tuple[int, int] | None
) -> None:
    # Before: topology read `:0.150.0rc1` as 0.150 and renamed k8sattributes, while the image
    # check read it as no release; both now ask image_release.
    assert collector.image_release(image) == release
