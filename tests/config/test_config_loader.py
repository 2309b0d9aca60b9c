"""Loading YAML into the typed Bundle: the seed, merging, bad input, the CRD schema validator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from fuzzing import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshtrace.config import effective_config, load
from meshtrace.config.lint import lint
from meshtrace.config.schema import crd_schema, validate
from meshtrace.document import Document


def test_seed_loads_every_file(seed_manifests: Path) -> None:
    bundle = load([seed_manifests])
    assert len(bundle.files) == 13
    assert [p.as_dict() for p in bundle.problems if p.severity == "error"] == []
    assert sorted(d.name for d in bundle.deployments) == ["backend", "frontend", "otel-collector"]
    assert sorted(s.name for s in bundle.services) == ["backend", "frontend", "otel-collector"]
    assert len(bundle.telemetries) == 7
    assert [op.meta.name for op in bundle.istio_operators] == [
        "istio-performance",
        "istio-config",
    ]  # by file name
    assert [(h.target_kind, h.target_name, h.min_replicas, h.max_replicas) for h in bundle.hpas] == [
        ("Deployment", "otel-collector", 3, 10)
    ]
    assert [a.name for r in bundle.prometheus_rules for a in r.alerts] == [
        "HighTracingDropRate",
        "OtelCollectorDown",
    ]
    assert bundle.ignored == []
    assert {"default", "istio-system", "payment", "logging", "observability"} <= set(bundle.all_namespaces)


def test_seed_collector_deployment_is_merged_from_three_files(seed_manifests: Path) -> None:
    bundle = load([seed_manifests])
    dep = bundle.deployment("otel-collector", "istio-system")
    assert dep is not None
    # ha-deployment.yaml (3 replicas), then otel-collector.yaml (2, ports), then resource-limits.yaml
    assert dep.replicas == 2
    assert [p.container_port for p in dep.containers[0].ports] == [4317, 4318, 9411]
    assert dep.containers[0].args == ["--config=/conf/config.yaml"]
    assert dep.containers[0].resources["limits"]["memory"] == "1Gi"
    assert dep.meta.origin.file.endswith("ha-deployment.yaml")
    assert [Path(o.file).name for o in dep.meta.patches] == ["otel-collector.yaml", "resource-limits.yaml"]
    cm = bundle.config_map("otel-collector-config", "istio-system")
    assert cm is not None and cm.collector_config is not None
    assert "otlp/jaeger" in cm.collector_config["exporters"]  # otel-collector.yaml is read last
    frontend = bundle.deployment("frontend", "default")
    assert frontend is not None
    assert frontend.containers[0].env["BACKEND_URL"] == "http://backend:8080"
    assert frontend.pod_labels == {"app": "frontend", "version": "v1"}


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_kinds_lists_and_ignored(tmp_path: Path) -> None:
    write(
        tmp_path,
        "a.yaml",
        """
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata: {name: api, namespace: shop}
  spec:
    selector: {app: api}
    ports: [{name: grpc-api, port: 9000, targetPort: grpc, appProtocol: grpc}]
- apiVersion: policy/v1
  kind: PodDisruptionBudget
  metadata: {name: api, namespace: shop}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: api}
spec:
  template:
    metadata: {labels: {app: api}, annotations: {meshtrace.dev/command: "python -m api"}}
    spec:
      containers:
      - name: api
        image: api:1
        command: [python]
        env: [{name: A, value: "1"}, {name: B, valueFrom: {secretKeyRef: {name: s, key: k}}}]
""",
    )
    write(tmp_path, "notes.txt", "not yaml at all: [")  # not a manifest suffix: skipped
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub", "b.yaml", "kind: [")  # folders are not recursive (like kubectl -f DIR)
    bundle = load([tmp_path])
    assert [Path(f).name for f in bundle.files] == ["a.yaml"]
    assert bundle.namespaces["shop"].injection is True
    svc = bundle.service("api", "shop")
    assert svc is not None
    assert (svc.ports[0].name, svc.ports[0].target_port, svc.ports[0].app_protocol) == (
        "grpc-api",
        "grpc",
        "grpc",
    )
    assert svc.host == "api.shop.svc.cluster.local"
    dep = bundle.deployment("api", "default")  # no namespace: kubectl's default
    assert dep is not None
    assert dep.replicas == 1
    assert dep.annotations == {"meshtrace.dev/command": "python -m api"}
    assert dep.containers[0].env == {"A": "1", "B": None}
    assert dep.containers[0].command == ["python"]
    assert [(i.kind, i.name, i.namespace) for i in bundle.ignored] == [("PodDisruptionBudget", "api", "shop")]
    assert bundle.problems == []


def test_bad_input_is_reported_with_file_document_and_path(tmp_path: Path) -> None:
    write(
        tmp_path,
        "bad.yaml",
        """
- just a list
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec: {replicas: many, template: {metadata: {labels: [x]}}}
---
apiVersion: v1
kind: Service
metadata: {}
---
kind: Telemetry
metadata: {name: x}
""",
    )
    bundle = load([tmp_path, tmp_path / "missing.yaml", tmp_path / "empty"])
    found = {(p.code, p.document, p.path) for p in bundle.problems}
    assert ("not-a-resource", 0, "") in found
    assert ("invalid-field", 1, "spec.replicas") in found
    assert ("invalid-field", 1, "spec.template.metadata.labels") in found
    assert ("invalid-field", 2, "metadata.name") in found
    assert ("invalid-field", 3, "apiVersion") in found
    assert any(p.code == "read-error" and p.file.endswith("missing.yaml") for p in bundle.problems)
    dep = bundle.deployment("web", "default")
    assert dep is not None and dep.replicas == 1  # the default, after the finding


def test_env_values_kubernetes_refuses_are_reported_not_turned_into_strings(tmp_path: Path) -> None:
    # Before: `on` (YAML 1.1 true) became the env value "True" and `value: null` became "None";
    # Kubernetes refuses a non-string env value and reads null as no value.
    write(
        tmp_path,
        "web.yaml",
        """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  template:
    spec:
      containers:
      - name: web
        env:
        - {name: DEBUG, value: on}
        - {name: RATIO, value: 0.5}
        - {name: EMPTY, value: null}
        - {name: MODE, value: "on"}
""",
    )
    bundle = load([tmp_path])
    found = {(p.path, p.message) for p in bundle.problems}
    assert (
        "spec.template.spec.containers[0].env[0].value",
        "must be a string, got bool True: quote it",
    ) in found
    assert (
        "spec.template.spec.containers[0].env[1].value",
        "must be a string, got float 0.5: quote it",
    ) in found
    dep = bundle.deployment("web", "default")
    assert dep is not None and dep.containers[0].env == {"EMPTY": None, "MODE": "on"}


def test_bom_and_crlf(tmp_path: Path) -> None:
    text = "apiVersion: v1\r\nkind: Namespace\r\nmetadata: {name: shop}\r\n---\r\napiVersion: v1\r\n"
    (tmp_path / "win.yaml").write_bytes(
        b"\xef\xbb\xbf" + (text + "kind: Namespace\r\nmetadata: {name: b}\r\n").encode()
    )
    bundle = load([tmp_path])
    assert sorted(bundle.namespaces) == ["b", "shop"]
    assert bundle.problems == []


def test_targetrefs_telemetry_is_not_namespace_wide(tmp_path: Path) -> None:
    write(
        tmp_path,
        "t.yaml",
        "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: gw, namespace: shop}\n"
        "spec: {targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: gw}]}\n",
    )
    tel = load([tmp_path]).telemetries[0]
    assert not tel.namespace_wide and tel.valid
    assert tel.target_refs[0]["name"] == "gw"


# -- the schema validator ----------------------------------------------------------------------------


def telemetry_spec_schema() -> dict[str, Any]:
    schema: dict[str, Any] = crd_schema("telemetry.json")["versions"]["v1"]["properties"]["spec"]
    return schema


def messages(spec: Any) -> list[tuple[str, str, bool]]:
    return [(e.path, e.message, e.unknown_field) for e in validate(spec, telemetry_spec_schema(), "spec")]


def test_schema_accepts_a_full_telemetry() -> None:
    spec = {
        "selector": {"matchLabels": {"app": "a"}},
        "tracing": [
            {
                "match": {"mode": "CLIENT"},
                "providers": [{"name": "otel"}],
                "randomSamplingPercentage": 12.5,
                "disableSpanReporting": None,  # nullable
                "customTags": {"a": {"literal": {"value": "x"}}, "b": {"environment": {"name": "E"}}},
            }
        ],
        "metrics": [
            {"overrides": [{"match": {"metric": "REQUEST_COUNT"}, "tagOverrides": {"t": {"value": "x"}}}]}
        ],
    }
    assert messages(spec) == []


def test_schema_errors() -> None:
    assert messages({"tracing": [{"randomSamplingPercentage": "10"}]}) == [
        ("spec.tracing[0].randomSamplingPercentage", "must be of type number, got str", False)
    ]
    assert messages({"tracing": [{"match": {"mode": "BOTH"}}]})[0][1].startswith("unsupported value 'BOTH'")
    assert messages({"tracing": [{"providers": [{}]}]}) == [
        ("spec.tracing[0].providers[0].name", "required field is missing", False)
    ]
    assert messages({"tracing": [{"providers": [{"name": ""}]}]})[0][1] == "must be at least 1 characters"
    assert messages(
        {"tracing": [{"customTags": {"a": {"literal": {"value": "x"}, "header": {"name": "h"}}}}]}
    )[0][1].startswith("exactly one of")
    unknown = messages({"tracing": [{"sampling": 10}]})
    assert unknown[0][0] == "spec.tracing[0].sampling" and unknown[0][2] is True
    assert messages({"selector": {"matchLabels": {"app": 1}}})[0][0] == "spec.selector.matchLabels.app"
    assert messages({"tracing": [{"randomSamplingPercentage": True}]})[0][1].startswith(
        "must be of type number"
    )


# -- fuzz: never a crash ---------------------------------------------------------------------------

_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 200), st.floats(-1, 150, allow_nan=False), st.text(max_size=8)
)
_keys = st.sampled_from(
    ["tracing", "metrics", "providers", "name", "match", "mode", "randomSamplingPercentage",
     "customTags", "literal", "value", "selector", "matchLabels", "app", "overrides", "tagOverrides",
     "operation", "disableSpanReporting", "metric", "x", "extensionProviders", "opentelemetry",
     "zipkin", "service", "port", "http", "grpc", "defaultProviders", "defaultConfig", "sampling",
     "enableTracing", "proxyMetadata", "ports", "targetPort", "containers", "template", "spec",
     "metadata", "labels", "annotations", "env", "replicas", "rootNamespace", "headers", "timeout",
     "maxTagLength", "maxPathTagLength", "address"]
)  # fmt: skip
_tree = st.recursive(
    _leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=4),
    max_leaves=12,
)


@settings(
    max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(spec=_tree, mesh=_tree, text=st.text(max_size=60))
def test_fuzz_load_resolve_lint_never_crash(tmp_path: Path, spec: Any, mesh: Any, text: str) -> None:
    docs = [
        {"apiVersion": "telemetry.istio.io/v1", "kind": "Telemetry",
         "metadata": {"name": "t", "namespace": "s"}, "spec": spec},
        {"apiVersion": "install.istio.io/v1alpha1", "kind": "IstioOperator", "metadata": {"name": "o"},
         "spec": {"meshConfig": mesh}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "w", "namespace": "s"},
         "spec": spec},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "w", "namespace": "s"},
         "spec": mesh},
    ]  # fmt: skip
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump_all(docs) + "---\n" + text, encoding="utf-8")
    bundle = load([path])
    doc = effective_config(bundle, "w", "s")
    assert Document.from_json(doc, strict=True).to_json() == doc
    for finding in lint(bundle):
        assert finding.severity in ("error", "warning", "info")


_anything = st.one_of(
    _leaf, st.lists(_leaf, max_size=2), st.dictionaries(st.sampled_from(["a", "value"]), _leaf, max_size=2)
)
_PROVIDER_KEYS = ["service", "port", "maxTagLength", "http", "grpc", "path", "traceContextOption", "timeout",
                  "headers", "dynatraceSampler", "resourceDetectors"]  # fmt: skip
_TRANSPORT_KEYS = ["path", "timeout", "headers", "initialMetadata"]
_provider_body = st.dictionaries(
    st.sampled_from(_PROVIDER_KEYS),
    st.one_of(_anything, st.dictionaries(st.sampled_from(_TRANSPORT_KEYS), _anything, max_size=3)),
    max_size=6,
)
_provider = st.builds(
    lambda name, kind, body: {"name": name, kind: body},
    st.sampled_from(["otel", "zip", "OTEL", "prometheus"]),
    st.sampled_from(["opentelemetry", "zipkin", "datadog", "prometheus"]),
    _provider_body,
)
_names = st.lists(st.sampled_from(["otel", "zip", "nope", "prometheus"]), max_size=2)
_proxy_tracing = st.dictionaries(
    st.sampled_from(["sampling", "max_path_tag_length", "customTags", "zipkin", "enableIstioTags"]),
    _anything,
    max_size=4,
)
_mesh = st.fixed_dictionaries(
    {},
    optional={
        "extensionProviders": st.lists(_provider, max_size=3),
        "defaultProviders": st.fixed_dictionaries({}, optional={"tracing": _names}),
        "defaultConfig": st.fixed_dictionaries({}, optional={"tracing": _proxy_tracing}),
        "enableTracing": _leaf,
        "rootNamespace": st.sampled_from(["istio-system", "s", ""]),
    },
)
_literal = st.fixed_dictionaries(
    {"literal": st.fixed_dictionaries({"value": st.text(min_size=1, max_size=4)})}
)
_entry = st.fixed_dictionaries(
    {},
    optional={
        "providers": _names.map(lambda names: [{"name": n} for n in names]),
        "randomSamplingPercentage": st.floats(0, 100),
        "match": st.fixed_dictionaries({"mode": st.sampled_from(["CLIENT", "SERVER", "CLIENT_AND_SERVER"])}),
        "customTags": st.dictionaries(st.sampled_from(["a", "b"]), _literal, max_size=2),
        "disableSpanReporting": st.booleans(),
    },
)


@settings(
    max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    mesh=_mesh, root=st.lists(_entry, max_size=3), ns=st.lists(_entry, max_size=3), env=st.text(max_size=5)
)
def test_fuzz_structured_documents_follow_the_contract(
    tmp_path: Path, mesh: dict[str, Any], root: list[Any], ns: list[Any], env: str
) -> None:
    docs = [
        {"apiVersion": "install.istio.io/v1alpha1", "kind": "IstioOperator", "metadata": {"name": "o"},
         "spec": {"meshConfig": mesh}},
        {"apiVersion": "telemetry.istio.io/v1", "kind": "Telemetry",
         "metadata": {"name": "root", "namespace": "istio-system"}, "spec": {"tracing": root}},
        {"apiVersion": "telemetry.istio.io/v1", "kind": "Telemetry",
         "metadata": {"name": "ns", "namespace": "s"}, "spec": {"tracing": ns}},
    ]  # fmt: skip
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump_all(docs), encoding="utf-8")
    bundle = load([path])
    doc = effective_config(bundle, "w", "s", env={"PILOT_TRACE_SAMPLING": env})
    assert Document.from_json(doc, strict=True).to_json() == doc
    for direction in ("client", "server"):
        block = doc["tracing"][direction]
        assert 0.0 <= block["random_sampling_percentage"] <= 100.0
        assert block["enabled"] == (block["provider"] is not None and not block["disable_span_reporting"])
    lint(bundle)


def test_packaged_telemetry_schema_matches_istio_crds(seed_manifests: Path) -> None:
    """The schema shipped in the package is the one in Istio's CRD bundle (re-extract if not)."""
    from meshtrace.config.extract_schemas import extract

    crds = seed_manifests.parent.parent / "schemas" / "istio-crds.yaml"
    with open(crds, encoding="utf-8") as f:
        extracted = extract(list(yaml.safe_load_all(f)))
    assert extracted["telemetry.json"] == crd_schema("telemetry.json")
