"""Render decisions on small inputs: the pure core (`meshtrace.deploy.render.render`) called
directly, and the CLI's exit codes and messages as a real process."""

from __future__ import annotations

import copy
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_helpers import documents, one, run_meshtrace
from fuzzing import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from meshtrace.config.loader import load
from meshtrace.deploy.collector import Options, memory_bytes
from meshtrace.deploy.collector_check import validate_config
from meshtrace.deploy.collector_config import collector_config, service_ports
from meshtrace.deploy.istio import RenderError, rewrite_mixer
from meshtrace.deploy.render import Result, render

MESH = """
apiVersion: install.istio.io/v1alpha1
kind: IstioOperator
metadata: {name: mesh, namespace: istio-system}
spec:
  meshConfig:
    extensionProviders:
    - name: otel
      opentelemetry: {service: otel-collector.istio-system.svc.cluster.local, port: 4317}
"""

COLLECTOR = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: otel-collector, namespace: istio-system}
spec:
  replicas: 1
  selector: {matchLabels: {app: otel-collector}}
  template:
    metadata: {labels: {app: otel-collector}}
    spec:
      containers:
      - name: otel-collector
        image: otel/opentelemetry-collector-contrib:0.140.0
"""


def write(tmp_path: Path, *docs: str) -> Path:
    folder = tmp_path / "in"
    folder.mkdir(exist_ok=True)
    for i, doc in enumerate(docs):
        (folder / f"{i:02d}.yaml").write_text(textwrap.dedent(doc).strip() + "\n")
    return folder


def render_docs(tmp_path: Path, *docs: str, options: Options | None = None) -> Result:
    return render(load([write(tmp_path, *docs)]), options or Options())


def parsed(result: Result, path: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(result.files[path]) if d is not None]


def prose(text: str) -> str:
    """The comments of a rendered file as one line (notes are wrapped at 100 columns)."""
    return " ".join(ln[1:].strip() for ln in text.splitlines() if ln.startswith("#"))


def config_map(config: str) -> str:
    body = textwrap.indent(textwrap.dedent(config).strip(), "    ")
    return (
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: otel-collector-config, namespace: istio-system}\n"
        f"data:\n  config.yaml: |\n{body}\n"
    )


# -- collector config ------------------------------------------------------------------------------


def test_bare_config_gets_everything_production_needs() -> None:
    raw = {
        "receivers": {"otlp": {"protocols": {"grpc": None}}, "zipkin": None},
        "exporters": {"logging": {"loglevel": "debug"}},
        "service": {
            "pipelines": {"traces": {"receivers": ["otlp", "zipkin"], "exporters": ["logging"]}},
            "telemetry": {"metrics": {"address": "0.0.0.0:9999"}},
        },
    }
    config, notes, listening = collector_config(raw)
    assert config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"] == "${env:MY_POD_IP}:4317"
    assert config["receivers"]["zipkin"]["endpoint"] == "${env:MY_POD_IP}:9411"
    assert config["exporters"] == {"debug": {"verbosity": "detailed"}}
    pipeline = config["service"]["pipelines"]["traces"]
    assert pipeline["processors"] == ["memory_limiter", "batch"]
    assert pipeline["exporters"] == ["debug"]
    assert config["processors"]["memory_limiter"]["limit_percentage"] == 80
    assert config["extensions"]["health_check"]["endpoint"] == "${env:MY_POD_IP}:13133"
    assert (listening.health_path, listening.health_port, listening.metrics_port) == ("/", 13133, 9999)
    reader = config["service"]["telemetry"]["metrics"]["readers"][0]["pull"]["exporter"]["prometheus"]
    assert reader["port"] == 9999
    assert any("loglevel debug -> verbosity detailed" in n for n in notes)
    assert [p.code for p in validate_config(config)] == ["COL012"]  # debug only: reported
    assert raw["exporters"] == {"logging": {"loglevel": "debug"}}  # the input is not modified


def test_memory_limiter_moved_first_and_batch_kept() -> None:
    raw = {
        "receivers": {"otlp": {"protocols": {"http": {"endpoint": "localhost:4318"}}}},
        "processors": {"batch/big": {}, "memory_limiter/x": {"check_interval": "1s", "limit_mib": 100}},
        "exporters": {"otlphttp": {"endpoint": "http://backend:4318"}},
        "service": {
            "pipelines": {
                "traces": {
                    "receivers": ["otlp"],
                    "processors": ["batch/big", "memory_limiter/x"],
                    "exporters": ["otlphttp"],
                }
            }
        },
    }
    config, _notes, _listening = collector_config(raw)
    assert config["service"]["pipelines"]["traces"]["processors"] == ["memory_limiter/x", "batch/big"]
    assert config["service"]["pipelines"]["traces"]["exporters"] == ["otlp_http"]
    assert config["receivers"]["otlp"]["protocols"]["http"]["endpoint"] == "${env:MY_POD_IP}:4318"


def test_components_meshtrace_lacks_are_listed_not_fatal(tmp_path: Path) -> None:
    result = render_docs(
        tmp_path,
        MESH,
        COLLECTOR,
        config_map(
            """
            receivers: {otlp: {protocols: {grpc: {endpoint: 0.0.0.0:4317}}}}
            processors: {k8sattributes: {}}
            exporters: {debug: {}}
            service:
              pipelines: {traces: {receivers: [otlp], processors: [k8sattributes], exporters: [debug]}}
            """
        ),
    )
    # Known upstream (checked against the catalogue) under its deprecated name: render writes the
    # current one, so the output draws no COL007 warning.
    assert "COL007" not in result.files["README.md"]
    assert "k8s_attributes" in parsed(result, "otel-collector/configmap.yaml")[0]["data"]["config.yaml"]
    assert "Collector v0.156.0 catalogue" in result.files["otel-collector/configmap.yaml"]


def test_invalid_collector_config_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RenderError, match="send_batch_size"):
        render_docs(
            tmp_path,
            COLLECTOR,
            config_map(
                """
                receivers: {otlp: {protocols: {grpc: {}}}}
                processors: {batch: {send_batch_size: lots}}
                exporters: {debug: {}}
                service: {pipelines: {traces: {receivers: [otlp], processors: [batch], exporters: [debug]}}}
                """
            ),
        )


def test_limiter_above_the_container_limit_is_lowered(tmp_path: Path) -> None:
    patch = """
    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: otel-collector, namespace: istio-system}
    spec:
      template:
        spec:
          containers:
          - name: otel-collector
            resources: {requests: {memory: 1G, cpu: 500m}, limits: {memory: 1G, cpu: "1"}}
    """
    result = render_docs(
        tmp_path,
        COLLECTOR,
        patch,
        config_map(
            """
            receivers: {otlp: {protocols: {grpc: {}}}}
            processors: {memory_limiter: {check_interval: 1s, limit_mib: 2048, spike_limit_mib: 512}}
            exporters: {debug: {}}
            service:
              pipelines: {traces: {receivers: [otlp], processors: [memory_limiter], exporters: [debug]}}
            """
        ),
    )
    config = yaml.safe_load(parsed(result, "otel-collector/configmap.yaml")[0]["data"]["config.yaml"])
    assert config["processors"]["memory_limiter"] == {"check_interval": "1s", "limit_mib": 762}
    dep = parsed(result, "otel-collector/deployment.yaml")[0]
    env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["GOMEMLIMIT"] == "762MiB"  # 80% of 10^9 bytes


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [
        ("512Mi", 512 * 2**20),
        ("1Gi", 2**30),
        ("1G", 10**9),
        ("1048576", 2**20),
        ("1.5Gi", 3 * 2**29),
        ("lots", None),
    ],
)
def test_memory_quantities(quantity: str, expected: int | None) -> None:
    assert memory_bytes(quantity) == expected


# -- Kubernetes resources --------------------------------------------------------------------------


def test_without_a_config_map_a_minimal_config_and_two_replicas(tmp_path: Path) -> None:
    result = render_docs(tmp_path, MESH, COLLECTOR)
    config = yaml.safe_load(parsed(result, "otel-collector/configmap.yaml")[0]["data"]["config.yaml"])
    assert config["exporters"] == {"debug": {"verbosity": "basic"}}
    hpa = parsed(result, "otel-collector/hpa.yaml")[0]
    assert (hpa["metadata"]["name"], hpa["spec"]["minReplicas"]) == ("otel-collector-hpa", 2)
    assert "2 replicas instead of 1" in prose(result.files["otel-collector/deployment.yaml"])
    svc = parsed(result, "otel-collector/service.yaml")[0]
    assert [p["name"] for p in svc["spec"]["ports"]] == ["grpc-otlp", "http-otlp", "http-metrics"]
    assert [w.code for w in result.warnings] == ["COL012"]  # spans go nowhere: said once


def test_a_second_collector_deployment_is_listed_as_not_rendered(tmp_path: Path) -> None:
    second = COLLECTOR.replace("name: otel-collector, namespace", "name: otel-collector-b, namespace")
    readme = render_docs(tmp_path, MESH, COLLECTOR, second).files["README.md"]
    section = readme.split("## Not rendered\n", 1)[1]
    assert "only Deployment istio-system/otel-collector is rendered; not: " in section
    assert "otel-collector-b" in section.split("\n## ", 1)[0]


def test_collector_replicas_option_sets_the_hpa(tmp_path: Path) -> None:
    result = render_docs(tmp_path, MESH, COLLECTOR, options=Options(replicas=12))
    hpa = parsed(result, "otel-collector/hpa.yaml")[0]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (12, 12)


def test_no_collector_in_the_input(tmp_path: Path) -> None:
    result = render_docs(tmp_path, MESH)
    assert not [p for p in result.files if p.startswith("otel-collector/")]
    assert "kubectl apply -f otel-collector/" not in result.files["README.md"]
    monitors = parsed(result, "monitoring/service-monitor.yaml")
    assert [m["kind"] for m in monitors] == ["PodMonitor"]


def test_provider_on_a_port_the_collector_does_not_serve_is_reported(tmp_path: Path) -> None:
    mesh = MESH.replace("port: 4317", "port: 4318")  # gRPC (no `http`) on the OTLP/HTTP port
    result = render_docs(tmp_path, mesh, COLLECTOR)
    provider = [w for w in result.warnings if w.code == "provider-port"]
    assert len(provider) == 1
    assert (
        "'otel' sends opentelemetry to otel-collector.istio-system.svc.cluster.local:4318"
        in provider[0].message
    )
    assert provider[0].message in result.files["README.md"]


# -- Istio -----------------------------------------------------------------------------------------


def test_default_providers_tracing_kept_with_the_reason(tmp_path: Path) -> None:
    mesh = MESH + "    defaultProviders: {tracing: [otel]}\n"
    result = render_docs(tmp_path, mesh)
    op = parsed(result, "istio/mesh-config.yaml")[0]
    assert op["spec"]["meshConfig"]["defaultProviders"] == {"tracing": ["otel"]}
    assert "istio#49557" in prose(result.files["istio/mesh-config.yaml"])


def test_proxy_metadata_conflict_keeps_the_value_in_effect(tmp_path: Path) -> None:
    mesh = MESH + (
        "    proxyMetadata: {A: moved, B: top}\n    defaultConfig: {proxyMetadata: {B: in-effect}}\n"
    )
    result = render_docs(tmp_path, mesh)
    config = parsed(result, "istio/mesh-config.yaml")[0]["spec"]["meshConfig"]
    assert config["defaultConfig"]["proxyMetadata"] == {"B": "in-effect", "A": "moved"}
    assert "proxyMetadata.B: kept defaultConfig's 'in-effect'" in prose(
        result.files["istio/mesh-config.yaml"]
    )


def test_zipkin_kept_without_an_opentelemetry_provider(tmp_path: Path) -> None:
    mesh = """
    apiVersion: install.istio.io/v1alpha1
    kind: IstioOperator
    metadata: {name: mesh, namespace: istio-system}
    spec:
      meshConfig:
        defaultConfig: {tracing: {zipkin: {address: zipkin.istio-system:9411}}}
    """
    result = render_docs(tmp_path, mesh)
    config = parsed(result, "istio/mesh-config.yaml")[0]["spec"]["meshConfig"]
    assert config["defaultConfig"]["tracing"]["zipkin"] == {"address": "zipkin.istio-system:9411"}


def test_unknown_telemetry_fields_pruned_and_rejected_ones_left_out(tmp_path: Path) -> None:
    pruned = """
    apiVersion: telemetry.istio.io/v1
    kind: Telemetry
    metadata: {name: extra, namespace: default}
    spec:
      tracing:
      - providers: [{name: otel}]
        randomSamplingPercentage: 5
        samplingRate: 5
    """
    rejected = """
    apiVersion: telemetry.istio.io/v1
    kind: Telemetry
    metadata: {name: both, namespace: default}
    spec:
      selector: {matchLabels: {app: a}}
      targetRefs: [{kind: Service, name: a}]
      tracing: [{providers: [{name: otel}]}]
    """
    result = render_docs(tmp_path, MESH, pruned, rejected)
    (tel,) = parsed(result, "istio/telemetry.yaml")
    assert tel["metadata"]["name"] == "extra"
    assert tel["spec"]["tracing"] == [{"providers": [{"name": "otel"}], "randomSamplingPercentage": 5}]
    text = prose(result.files["istio/telemetry.yaml"])
    assert "spec.tracing[0].samplingRate removed" in text
    assert "Left out: Telemetry default/both" in text and "only one of targetRefs or selector" in text


def test_alerts_from_the_input_kept_unless_they_use_removed_metrics(tmp_path: Path) -> None:
    rule = """
    apiVersion: monitoring.coreos.com/v1
    kind: PrometheusRule
    metadata: {name: mine, namespace: monitoring, labels: {release: prom}}
    spec:
      groups:
      - name: mine
        rules:
        - {alert: Custom, expr: 'up == 0'}
        - {alert: Old, expr: 'rate(otelcol_processor_dropped_spans_total[5m]) > 1'}
    """
    result = render_docs(tmp_path, MESH, rule)
    doc = parsed(result, "monitoring/prometheus-rules.yaml")[0]
    assert doc["metadata"] == {"name": "mine", "namespace": "monitoring", "labels": {"release": "prom"}}
    groups = {g["name"]: [r["alert"] for r in g["rules"]] for g in doc["spec"]["groups"]}
    assert groups["mine"] == ["Custom"]
    assert "Old" not in str(groups)
    assert "Old from PrometheusRule monitoring/mine (01.yaml) left out" in prose(
        result.files["monitoring/prometheus-rules.yaml"]
    )


# -- the command -----------------------------------------------------------------------------------


@pytest.mark.e2e
def test_cli_missing_input_exits_2(tmp_path: Path) -> None:
    proc = run_meshtrace("render", "-f", str(tmp_path / "nope"), "-o", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert "no such file or folder" in proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.e2e
def test_cli_rejects_an_image_too_old_for_the_config(tmp_path: Path) -> None:
    folder = write(tmp_path, MESH, COLLECTOR)
    proc = run_meshtrace(
        "render", "-f", str(folder), "-o", str(tmp_path / "out"),
        "--collector-image", "otel/opentelemetry-collector-contrib:0.112.0",
    )  # fmt: skip
    assert proc.returncode == 2
    assert "--collector-image" in proc.stderr and "v0.144.0" in proc.stderr


@pytest.mark.e2e
def test_cli_invalid_collector_config_exits_1(tmp_path: Path) -> None:
    bad = config_map("receivers: {}\nservice: {pipelines: {traces: {receivers: [otlp], exporters: [debug]}}}")
    folder = write(tmp_path, COLLECTOR, bad)
    proc = run_meshtrace("render", "-f", str(folder), "-o", str(tmp_path / "out"))
    assert proc.returncode == 1
    assert "refused by the Collector it deploys" in proc.stderr and "'otlp' is not defined" in proc.stderr


@pytest.mark.e2e
def test_cli_options_and_warnings(tmp_path: Path) -> None:
    folder = write(tmp_path, MESH.replace("port: 4317", "port: 9411"), COLLECTOR)
    out = tmp_path / "out"
    proc = run_meshtrace(
        "render", "-f", str(folder), "-o", str(out),
        "--collector-image", "registry.example/otelcol-contrib:0.160.1", "--collector-replicas", "4",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "warning: extension provider 'otel'" in proc.stderr
    assert f"wrote {out / 'README.md'}" in proc.stdout
    dep = one(out / "otel-collector" / "deployment.yaml", "Deployment")
    assert (
        dep["spec"]["template"]["spec"]["containers"][0]["image"]
        == "registry.example/otelcol-contrib:0.160.1"
    )
    assert one(out / "otel-collector" / "hpa.yaml", "HorizontalPodAutoscaler")["spec"]["minReplicas"] == 4
    assert documents(out / "istio" / "mesh-config.yaml")


def test_probes_follow_a_custom_health_check(tmp_path: Path) -> None:
    result = render_docs(
        tmp_path,
        COLLECTOR,
        config_map(
            """
            receivers: {otlp: {protocols: {grpc: {}}}}
            exporters: {debug: {}}
            extensions: {health_check/k8s: {endpoint: "0.0.0.0:13999", path: /health}}
            service:
              extensions: [health_check/k8s]
              pipelines: {traces: {receivers: [otlp], exporters: [debug]}}
            """
        ),
    )
    config = yaml.safe_load(parsed(result, "otel-collector/configmap.yaml")[0]["data"]["config.yaml"])
    assert config["extensions"] == {
        "health_check/k8s": {"endpoint": "${env:MY_POD_IP}:13999", "path": "/health"}
    }
    assert config["service"]["extensions"] == ["health_check/k8s"]
    (container,) = parsed(result, "otel-collector/deployment.yaml")[0]["spec"]["template"]["spec"][
        "containers"
    ]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": 13999}
    assert {"name": "health", "containerPort": 13999, "protocol": "TCP"} in container["ports"]


def test_mixer_rewrite_means_what_the_seed_meant(seed_manifests: Path) -> None:
    # The CEL evaluator meshtrace's own proxies run gives the Mixer fallback.
    from meshtrace.cel import evaluate

    bundle = load([seed_manifests])
    tel = next(t for t in bundle.telemetries if t.name == "mesh-metrics")
    spec = copy.deepcopy(tel.spec)
    assert rewrite_mixer(spec)
    value = spec["metrics"][0]["overrides"][0]["tagOverrides"]["destination_version"]["value"]
    assert evaluate(value, {}) == "unknown"
    assert evaluate(value, {"destination.workload.name": "backend-v1"}) == "backend-v1"
    assert rewrite_mixer(spec) == []  # CEL stays CEL


def test_render_writes_only_cel_that_parses() -> None:
    # Finding 9: the fallback to a dotted path was rewritten to '... ? destination.service.name : )'.
    from meshtrace.cel import check

    tags = {
        "host": {"value": "request.host | destination.service.name"},
        "bad": {"value": "request.host +"},
        "gone": {"operation": "REMOVE"},
    }
    spec: dict[str, Any] = {"metrics": [{"overrides": [{"tagOverrides": tags}]}]}
    notes = rewrite_mixer(spec)
    assert tags["host"]["value"] == "has(request.host) ? request.host : destination.service.name"
    assert check(tags["host"]["value"]) is None
    assert any("tagOverrides.bad" in n and "drops this label" in n for n in notes), notes
    assert not any("tagOverrides.gone" in n for n in notes)


def test_input_flags_annotations_and_labels_are_kept(tmp_path: Path) -> None:
    dep = COLLECTOR.replace(
        "metadata: {labels: {app: otel-collector}}",
        "metadata: {labels: {app: otel-collector}, annotations: {team: obs}}",
    )
    dep = dep.replace(
        "image: otel/", "args: [--config=/etc/otel/x.yaml, --feature-gates=-foo]\n        image: otel/"
    )
    dep = dep.replace(
        "metadata: {name: otel-collector, namespace: istio-system}",
        "metadata: {name: otel-collector, namespace: istio-system, labels: {tier: obs}}",
    )
    result = render_docs(tmp_path, dep)
    out = parsed(result, "otel-collector/deployment.yaml")[0]
    assert out["metadata"]["labels"] == {"tier": "obs", "app": "otel-collector"}
    template = out["spec"]["template"]
    assert template["metadata"]["annotations"]["team"] == "obs"
    assert "checksum/config" in template["metadata"]["annotations"]
    assert template["spec"]["containers"][0]["args"] == ["--config=/conf/config.yaml", "--feature-gates=-foo"]


# Collector configs built from the words a config uses, in any shape: render either gives a
# config the collector check accepts or says why not (RenderError), never another exception.
_WORDS = st.sampled_from(
    ["otlp", "zipkin", "grpc", "http", "endpoint", "0.0.0.0:4317", "memory_limiter", "batch", "debug",
     "logging", "otlp/jaeger", "health_check", "readers", "pull", "exporter", "prometheus", "address",
     "metrics", "loglevel", "limit_mib", "check_interval", "1s", "traces", "protocols", "port"]
)  # fmt: skip
_VALUES = st.recursive(
    st.none() | st.integers(-2, 70000) | _WORDS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_WORDS, inner, max_size=4),
    max_leaves=12,
)
_CONFIGS = st.fixed_dictionaries(
    {},
    optional={
        "receivers": st.dictionaries(_WORDS, _VALUES, max_size=3) | _VALUES,
        "processors": st.dictionaries(_WORDS, _VALUES, max_size=3),
        "exporters": st.dictionaries(_WORDS, _VALUES, max_size=3),
        "extensions": st.dictionaries(_WORDS, _VALUES, max_size=2),
        "service": st.fixed_dictionaries(
            {},
            optional={
                "pipelines": st.dictionaries(_WORDS, _VALUES, max_size=2) | _VALUES,
                "extensions": _VALUES,
                "telemetry": _VALUES,
            },
        ),
    },
)


@settings(max_examples=examples(200), deadline=None)
@given(_CONFIGS)
def test_any_collector_config_renders_or_is_refused(raw: dict[str, Any]) -> None:
    try:
        config, _notes, _listening = collector_config(raw)
        validate_config(config)
    except RenderError:
        return
    service_ports(config, 8888)


def test_telemetry_that_cannot_be_made_valid_is_left_out(tmp_path: Path) -> None:
    odd = """
    apiVersion: telemetry.istio.io/v1
    kind: Telemetry
    metadata: {name: odd, namespace: default}
    spec:
      tracing:
      - providers: [{name: otel}]
        customTags: {"my.tag": {literal: {value: x}, bogus: 1}}
    """
    result = render_docs(tmp_path, MESH, odd)
    assert parsed(result, "istio/telemetry.yaml") == []
    assert "Left out: Telemetry default/odd (01.yaml): it would still fail the CRD schema" in prose(
        result.files["istio/telemetry.yaml"]
    )
