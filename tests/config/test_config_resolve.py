"""Telemetry resolution, table by table, from Istio's documented semantics (docs/upstream-behaviour.md §1,
pilot/pkg/model/telemetry.go, pilot/pkg/networking/core/tracing.go), including the traps."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from config_helpers import MESH, telemetry

from meshtrace.cel import mixer_to_cel
from meshtrace.config import Bundle, effective_config
from meshtrace.document import Document, DocumentError

Manifests = Callable[..., Bundle]

ROOT_OTEL = telemetry("mesh", "istio-system", "tracing: [{providers: [{name: otel}]}]")
DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata:
      labels: {app: web, version: v2}
      annotations: {ANNOTATIONS}
    spec:
      containers: [{name: web, image: web:1, ports: [{containerPort: 8080}]}]
"""


def deployment(annotations: str = "{}") -> str:
    return DEPLOYMENT.replace("{ANNOTATIONS}", annotations)


def mesh_config(body: str) -> str:
    """An IstioOperator with the given meshConfig (YAML flow mapping body) after MESH."""
    return (
        "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\n"
        f"metadata: {{name: extra, namespace: istio-system}}\nspec:\n  meshConfig: {body}\n"
    )


def resolve(bundle: Bundle, workload: str = "web", namespace: str = "shop", **kw: Any) -> dict[str, Any]:
    """effective_config, and every document it returns must follow the contract exactly."""
    labels = kw.pop("labels", {"app": workload})
    doc = effective_config(bundle, workload, namespace, labels=labels, **kw)
    assert Document.from_json(doc, strict=True).to_json() == doc
    return doc


def both(doc: dict[str, Any], key: str) -> tuple[Any, Any]:
    return doc["tracing"]["client"][key], doc["tracing"]["server"][key]


# -- sampling precedence ------------------------------------------------------------------------


def test_sampling_defaults_to_pilot_trace_sampling(manifests: Manifests) -> None:
    doc = resolve(manifests(ROOT_OTEL))
    assert both(doc, "random_sampling_percentage") == (1.0, 1.0)
    assert doc["sources"]["tracing.client.random_sampling_percentage"]["field"] == "PILOT_TRACE_SAMPLING=1.0"


@pytest.mark.parametrize(("env", "expected"), [("5", 5.0), ("150", 1.0), ("-1", 1.0), ("lots", 1.0)])
def test_pilot_trace_sampling_env(manifests: Manifests, env: str, expected: float) -> None:
    doc = resolve(manifests(ROOT_OTEL), env={"PILOT_TRACE_SAMPLING": env})
    assert both(doc, "random_sampling_percentage") == (expected, expected)


@pytest.mark.parametrize(
    ("sampling", "expected"),
    [(10.0, 10.0), (0.0, 1.0), (250.0, 1.0)],  # 0.0 counts as unset; out of range resets to 1.0
)
def test_mesh_default_config_sampling(manifests: Manifests, sampling: float, expected: float) -> None:
    bundle = manifests(ROOT_OTEL, mesh_config(f"{{defaultConfig: {{tracing: {{sampling: {sampling}}}}}}}"))
    doc = resolve(bundle)
    assert both(doc, "random_sampling_percentage") == (expected, expected)


def test_pod_annotation_beats_mesh_default_config(manifests: Manifests) -> None:
    annotations = "{proxy.istio.io/config: '{tracing: {sampling: 42}}'}"
    bundle = manifests(
        ROOT_OTEL, mesh_config("{defaultConfig: {tracing: {sampling: 10}}}"), deployment(annotations)
    )
    doc = effective_config(bundle, "web", "shop")
    assert both(doc, "random_sampling_percentage") == (42.0, 42.0)
    src = doc["sources"]["tracing.client.random_sampling_percentage"]
    assert src["resource"] == "Deployment shop/web"
    assert "proxy.istio.io/config" in src["field"]


def test_telemetry_beats_pod_annotation(manifests: Manifests) -> None:
    annotations = "{proxy.istio.io/config: '{tracing: {sampling: 42}}'}"
    root = telemetry(
        "mesh", "istio-system", "tracing: [{providers: [{name: otel}], randomSamplingPercentage: 7}]"
    )
    doc = effective_config(manifests(root, deployment(annotations)), "web", "shop")
    assert both(doc, "random_sampling_percentage") == (7.0, 7.0)


def test_provider_sampler_forces_100(manifests: Manifests) -> None:
    sampler = mesh_config(
        "{extensionProviders: [{name: otel, opentelemetry: {service: dt.example, port: 443, "
        "http: {path: /api/v2/otlp/v1/traces}, dynatraceSampler: {tenant: t, clusterId: 1}}}]}"
    )
    root = telemetry(
        "mesh", "istio-system", "tracing: [{providers: [{name: otel}], randomSamplingPercentage: 5}]"
    )
    doc = resolve(manifests(root, sampler))
    assert both(doc, "random_sampling_percentage") == (100.0, 100.0)
    assert doc["sources"]["tracing.client.random_sampling_percentage"]["field"].endswith("dynatraceSampler")


def test_unknown_provider_field_is_not_a_sampler(manifests: Manifests) -> None:
    typo = mesh_config(
        "{extensionProviders: [{name: otel, opentelemetry: {service: a, port: 1, servce: b}}]}"
    )
    root = telemetry(
        "mesh", "istio-system", "tracing: [{providers: [{name: otel}], randomSamplingPercentage: 5}]"
    )
    doc = resolve(manifests(root, typo))
    assert both(doc, "random_sampling_percentage") == (5.0, 5.0)
    assert any("unknown opentelemetry field 'servce'" in w for w in doc["warnings"])


# -- providers ------------------------------------------------------------------------------------


def test_sampling_without_provider_is_tracing_off(manifests: Manifests) -> None:
    """The classic trap: a sampling rate, no provider anywhere -> no spans at all."""
    root = telemetry("mesh", "istio-system", "tracing: [{randomSamplingPercentage: 50}]")
    doc = resolve(manifests(root))
    assert both(doc, "enabled") == (False, False)
    assert both(doc, "provider") == (None, None)
    assert any("no tracing provider" in w for w in doc["warnings"])


def test_default_provider_without_telemetry(manifests: Manifests) -> None:
    bundle = manifests(mesh_config("{defaultProviders: {tracing: [otel]}}"))
    doc = resolve(bundle)
    assert both(doc, "enabled") == (True, True)
    assert doc["tracing"]["client"]["provider"]["name"] == "otel"
    assert (
        doc["sources"]["tracing.client.provider.name"]["field"] == "spec.meshConfig.defaultProviders.tracing"
    )


def test_default_provider_with_provider_less_telemetry(manifests: Manifests) -> None:
    bundle = manifests(
        mesh_config("{defaultProviders: {tracing: [otel]}}"),
        telemetry("ns", "shop", "tracing: [{randomSamplingPercentage: 20}]"),
    )
    doc = resolve(bundle)
    assert both(doc, "enabled") == (True, True)
    assert both(doc, "random_sampling_percentage") == (20.0, 20.0)


def test_unknown_provider_turns_tracing_off_even_over_a_good_one(manifests: Manifests) -> None:
    ns = telemetry("ns", "shop", "tracing: [{providers: [{name: otel-colector}]}]")
    doc = resolve(manifests(ROOT_OTEL, ns))
    assert both(doc, "enabled") == (False, False)
    assert any("'otel-colector' is not in meshConfig.extensionProviders" in w for w in doc["warnings"])


def test_short_service_name_finds_no_cluster(manifests: Manifests) -> None:
    """istiod's LookupCluster matches the full host name: `otel.istio-system` is not found."""
    svc = (
        "apiVersion: v1\nkind: Service\nmetadata: {name: otel, namespace: istio-system}\n"
        "spec: {selector: {app: otel}, ports: [{name: grpc, port: 4317}]}\n"
    )
    short = mesh_config(
        "{extensionProviders: [{name: otel, opentelemetry: {service: otel.istio-system, port: 4317}}]}"
    )
    doc = resolve(manifests(ROOT_OTEL, svc, short))
    assert both(doc, "enabled") == (False, False)
    assert any("not the full host name otel.istio-system.svc.cluster.local" in w for w in doc["warnings"])
    full = resolve(manifests(ROOT_OTEL, svc))  # MESH names the full host
    assert both(full, "enabled") == (True, True)
    qualified = mesh_config(
        "{extensionProviders: [{name: otel, opentelemetry: "
        "{service: istio-system/otel.istio-system.svc.cluster.local, port: 4317}}]}"
    )
    doc = resolve(manifests(ROOT_OTEL, svc, qualified))
    assert both(doc, "enabled") == (True, True)
    assert doc["tracing"]["client"]["provider"]["service"] == "otel.istio-system.svc.cluster.local"


def test_provider_name_is_case_insensitive(manifests: Manifests) -> None:
    root = telemetry("mesh", "istio-system", "tracing: [{providers: [{name: OTEL}]}]")
    assert resolve(manifests(root))["tracing"]["server"]["provider"]["name"] == "otel"


def test_non_tracing_provider_is_tracing_off(manifests: Manifests) -> None:
    root = telemetry("mesh", "istio-system", "tracing: [{providers: [{name: prometheus}]}]")
    doc = resolve(manifests(root))
    assert both(doc, "enabled") == (False, False)
    assert any("does not support tracing" in w for w in doc["warnings"])


def test_only_first_provider_is_used(manifests: Manifests) -> None:
    extra = mesh_config(
        "{extensionProviders: [{name: otel, opentelemetry: {service: a, port: 1}}, "
        "{name: zip, zipkin: {service: z, port: 9411}}]}"
    )
    root = telemetry("mesh", "istio-system", "tracing: [{providers: [{name: zip}, {name: otel}]}]")
    assert resolve(manifests(root, extra))["tracing"]["client"]["provider"]["type"] == "zipkin"


def test_zipkin_provider_shape(manifests: Manifests) -> None:
    extra = mesh_config(
        "{extensionProviders: [{name: zip, zipkin: {service: zipkin.obs, port: 9411, "
        "traceContextOption: USE_B3_WITH_W3C_PROPAGATION}}]}"
    )
    root = telemetry("mesh", "istio-system", "tracing: [{providers: [{name: zip}]}]")
    provider = resolve(manifests(root, extra))["tracing"]["client"]["provider"]
    assert provider["protocol"] == "zipkin"
    assert provider["path"] == "/api/v2/spans"
    assert provider["trace_context"] == "b3+w3c"
    assert provider["timeout_s"] == 5.0  # tracing.go zipkinConfig's default, not the OTel 3 s


def test_opentelemetry_http_provider_shape(manifests: Manifests) -> None:
    extra = mesh_config(
        "{extensionProviders: [{name: otel, opentelemetry: {service: 127.0.0.1, port: 4318, "
        "maxTagLength: 99, http: {path: /v1/traces, timeout: 500ms, headers: [{name: x-token, value: abc}, "
        "{name: x-env, envName: TOKEN}]}}}]}"
    )
    doc = resolve(manifests(ROOT_OTEL, extra), env={"TOKEN": "from-env"})
    provider = doc["tracing"]["client"]["provider"]
    assert provider["protocol"] == "http"
    assert provider["path"] == "/v1/traces"
    assert provider["timeout_s"] == 0.5
    assert provider["headers"] == {"x-token": "abc", "x-env": "from-env"}
    assert provider["endpoint"] == "http://127.0.0.1:4318"  # an IP resolves without the registry
    assert provider["max_tag_length"] == 99
    assert doc["tracing"]["client"]["max_path_tag_length"] == 99


@pytest.mark.parametrize(
    ("timeout", "kind", "expected"), [("-1", "grpc", 3.0), (".inf", "http", 3.0), ("-2", "zipkin", 5.0)]
)
def test_provider_timeout_that_is_no_duration_is_the_default(
    manifests: Manifests, timeout: str, kind: str, expected: float
) -> None:
    # A negative or infinite number was copied into timeout_s, a document the contract refuses
    # (hypothesis found `timeout: -1.0`).
    body = (
        f"zipkin: {{service: z.obs, port: 9411, timeout: {timeout}}}"
        if kind == "zipkin"
        else (
            f"opentelemetry: {{service: o.obs, port: 4317, {kind}: {{path: /v1/traces, timeout: {timeout}}}}}"
        )
    )
    extra = mesh_config(f"{{extensionProviders: [{{name: p, {body}}}]}}")
    doc = resolve(manifests(telemetry("mesh", "istio-system", "tracing: [{providers: [{name: p}]}]"), extra))
    assert doc["tracing"]["client"]["provider"]["timeout_s"] == expected
    assert any("is not a duration" in w for w in doc["warnings"])


def test_grpc_provider_endpoint_left_to_the_control_plane(manifests: Manifests) -> None:
    provider = resolve(manifests(ROOT_OTEL))["tracing"]["client"]["provider"]
    assert (provider["protocol"], provider["endpoint"], provider["trace_context"]) == ("grpc", None, "w3c")


# -- which resources apply, and how fields override -----------------------------------------------


def test_namespace_overrides_field_wise(manifests: Manifests) -> None:
    root = telemetry(
        "mesh",
        "istio-system",
        "tracing: [{providers: [{name: otel}], randomSamplingPercentage: 100, "
        "customTags: {env: {literal: {value: prod}}}}]",
    )
    ns = telemetry("ns", "shop", "tracing: [{randomSamplingPercentage: 5}]")
    doc = resolve(manifests(root, ns))
    assert both(doc, "random_sampling_percentage") == (5.0, 5.0)
    # unset fields are inherited from the root
    assert doc["tracing"]["client"]["provider"]["name"] == "otel"
    assert doc["tracing"]["client"]["custom_tags"] == {"env": {"literal": {"value": "prod"}}}
    assert doc["sources"]["tracing.client.custom_tags"]["resource"] == "Telemetry istio-system/mesh"


def test_custom_tags_are_replaced_whole(manifests: Manifests) -> None:
    root = telemetry(
        "mesh",
        "istio-system",
        "tracing: [{providers: [{name: otel}], customTags: {a: {literal: {value: '1'}}, "
        "b: {literal: {value: '2'}}}}]",
    )
    workload = telemetry(
        "w",
        "shop",
        "selector: {matchLabels: {app: web}}\ntracing: [{customTags: {c: {header: {name: x-c}}}}]",
    )
    doc = resolve(manifests(root, workload))
    assert doc["tracing"]["server"]["custom_tags"] == {"c": {"header": {"name": "x-c"}}}


def test_formatter_custom_tags_are_kept_like_istiod_1_29(manifests: Manifests) -> None:
    root = telemetry(
        "mesh",
        "istio-system",
        "tracing: [{providers: [{name: otel}], customTags: {f: {formatter: {value: '%REQ(x)%'}}, "
        "g: {formatter: {value: '%START_TIME%'}}, l: {literal: {value: v}}}}]",
    )
    doc = resolve(manifests(root))
    assert doc["tracing"]["client"]["custom_tags"] == {
        "f": {"formatter": {"value": "%REQ(x)%"}},
        "g": {"formatter": {"value": "%START_TIME%"}},
        "l": {"literal": {"value": "v"}},
    }
    assert not any("custom tag 'f'" in w for w in doc["warnings"])
    assert any("custom tag 'g'" in w and "START_TIME" in w for w in doc["warnings"])


def test_legacy_custom_tags_when_telemetry_sets_none(manifests: Manifests) -> None:
    extra = mesh_config(
        "{defaultConfig: {tracing: {custom_tags: {cluster_id: {environment: {name: CLUSTER_ID, "
        "default_value: unknown}}}}}}"
    )
    doc = resolve(manifests(ROOT_OTEL, extra))
    assert doc["tracing"]["client"]["custom_tags"] == {
        "cluster_id": {"environment": {"name": "CLUSTER_ID", "default_value": "unknown"}}
    }
    assert any("custom_tags" in w for w in doc["warnings"])  # seed-era spelling noted


@pytest.mark.parametrize(
    ("mode", "client", "server"),
    [("CLIENT", 3.0, 100.0), ("SERVER", 100.0, 3.0), ("CLIENT_AND_SERVER", 3.0, 3.0)],
)
def test_match_mode_splits_directions(manifests: Manifests, mode: str, client: float, server: float) -> None:
    root = telemetry(
        "mesh", "istio-system", "tracing: [{providers: [{name: otel}], randomSamplingPercentage: 100}]"
    )
    ns = telemetry("ns", "shop", f"tracing: [{{match: {{mode: {mode}}}, randomSamplingPercentage: 3}}]")
    doc = resolve(manifests(root, ns))
    assert both(doc, "random_sampling_percentage") == (client, server)


def test_server_only_provider(manifests: Manifests) -> None:
    root = telemetry("mesh", "istio-system", "tracing: [{match: {mode: SERVER}, providers: [{name: otel}]}]")
    doc = resolve(manifests(root))
    assert both(doc, "enabled") == (False, True)


@pytest.mark.parametrize(
    ("first", "second", "winner"),
    [
        # no timestamps: by name
        (("b-mesh", None, 20), ("a-mesh", None, 30), 30.0),
        # creationTimestamp decides before the name
        (("a-mesh", "2024-02-01T00:00:00Z", 20), ("z-mesh", "2024-01-01T00:00:00Z", 30), 30.0),
    ],
)
def test_oldest_selectorless_wins(manifests: Manifests, first: tuple, second: tuple, winner: float) -> None:  # type: ignore[type-arg]
    docs = [
        telemetry(
            name,
            "istio-system",
            f"tracing: [{{providers: [{{name: otel}}], randomSamplingPercentage: {rate}}}]",
            stamp,
        )
        for name, stamp, rate in (first, second)
    ]
    doc = resolve(manifests(*docs))
    assert both(doc, "random_sampling_percentage") == (winner, winner)
    assert len(doc["telemetry"]["ignored"]) == 1


def test_root_selector_only_matches_root_workloads(manifests: Manifests) -> None:
    sel = telemetry(
        "sel",
        "istio-system",
        "selector: {matchLabels: {app: web}}\n"
        "tracing: [{providers: [{name: otel}], randomSamplingPercentage: 60}]",
    )
    in_shop = resolve(manifests(ROOT_OTEL, sel))
    assert both(in_shop, "random_sampling_percentage") == (1.0, 1.0)
    in_root = resolve(manifests(ROOT_OTEL, sel), namespace="istio-system")
    assert both(in_root, "random_sampling_percentage") == (60.0, 60.0)


def test_every_matching_workload_telemetry_applies_oldest_first(manifests: Manifests) -> None:
    a = telemetry(
        "a", "shop", "selector: {matchLabels: {app: web}}\ntracing: [{randomSamplingPercentage: 11}]"
    )
    b = telemetry(
        "b", "shop", "selector: {matchLabels: {app: web}}\ntracing: [{randomSamplingPercentage: 22}]"
    )
    doc = resolve(manifests(ROOT_OTEL, b, a))
    assert both(doc, "random_sampling_percentage") == (22.0, 22.0)  # a then b: b's value last
    assert doc["telemetry"]["ignored"] == []
    assert [(i["scope"], i["resource"]) for i in doc["telemetry"]["applied"]][-2:] == [
        ("workload", "Telemetry shop/a"),
        ("workload", "Telemetry shop/b"),
    ]
    assert doc["sources"]["tracing.client.random_sampling_percentage"]["resource"] == "Telemetry shop/b"


def test_selector_must_be_a_subset_of_the_labels(manifests: Manifests) -> None:
    w = telemetry(
        "w",
        "shop",
        "selector: {matchLabels: {app: web, tier: gold}}\ntracing: [{randomSamplingPercentage: 9}]",
    )
    assert both(resolve(manifests(ROOT_OTEL, w)), "random_sampling_percentage") == (1.0, 1.0)
    gold = resolve(manifests(ROOT_OTEL, w), labels={"app": "web", "tier": "gold", "x": "y"})
    assert both(gold, "random_sampling_percentage") == (9.0, 9.0)


def test_other_namespace_telemetry_does_not_apply(manifests: Manifests) -> None:
    other = telemetry("ns", "billing", "tracing: [{randomSamplingPercentage: 77}]")
    assert both(resolve(manifests(ROOT_OTEL, other)), "random_sampling_percentage") == (1.0, 1.0)


def test_schema_invalid_telemetry_is_not_applied(manifests: Manifests) -> None:
    bad = telemetry("ns", "shop", "tracing: [{randomSamplingPercentage: 150}]")
    doc = resolve(manifests(ROOT_OTEL, bad))
    assert both(doc, "random_sampling_percentage") == (1.0, 1.0)
    assert doc["telemetry"]["ignored"][0]["reason"] == "rejected by the Telemetry CRD schema"


def test_disable_span_reporting_keeps_provider(manifests: Manifests) -> None:
    ns = telemetry("ns", "shop", "tracing: [{disableSpanReporting: true}]")
    doc = resolve(manifests(ROOT_OTEL, ns))
    assert both(doc, "enabled") == (False, False)
    assert doc["tracing"]["client"]["provider"]["name"] == "otel"
    assert both(doc, "disable_span_reporting") == (True, True)


def test_disable_context_propagation_stops_writing(manifests: Manifests) -> None:
    ns = telemetry("ns", "shop", "tracing: [{disableContextPropagation: true}]")
    assert resolve(manifests(ROOT_OTEL, ns))["tracing"]["client"]["propagation"]["write"] == []


# -- legacy path (no Telemetry tracing, no default provider) ---------------------------------------


def test_legacy_enable_tracing_uses_zipkin_address(manifests: Manifests) -> None:
    doc = resolve(manifests())
    provider = doc["tracing"]["client"]["provider"]
    assert (provider["type"], provider["service"], provider["port"]) == (
        "zipkin",
        "zipkin.istio-system",
        9411,
    )
    assert both(doc, "random_sampling_percentage") == (1.0, 1.0)


def test_legacy_enable_tracing_false_is_off(manifests: Manifests) -> None:
    doc = resolve(manifests(mesh_config("{enableTracing: false}")))
    assert both(doc, "enabled") == (False, False)


def test_enable_tracing_false_does_not_matter_with_telemetry(manifests: Manifests) -> None:
    doc = resolve(manifests(ROOT_OTEL, mesh_config("{enableTracing: false}")))
    assert both(doc, "enabled") == (True, True)


# -- metrics --------------------------------------------------------------------------------------


def test_metric_overrides_merge_key_by_key(manifests: Manifests) -> None:
    root = telemetry(
        "mesh",
        "istio-system",
        "metrics: [{providers: [{name: prometheus}], overrides: [{match: {metric: ALL_METRICS}, "
        "tagOverrides: {a: {value: request.host}}}]}]",
    )
    ns = telemetry(
        "ns",
        "shop",
        "metrics: [{overrides: [{match: {metric: REQUEST_COUNT}, tagOverrides: {b: {operation: REMOVE}}}]}]",
    )
    wl = telemetry(
        "wl",
        "shop",
        "selector: {matchLabels: {app: web}}\n"
        "metrics: [{overrides: [{match: {metric: REQUEST_COUNT, mode: CLIENT}, "
        "tagOverrides: {a: {value: request.protocol}}}]}]",
    )
    doc = resolve(manifests(root, ns, wl))
    metrics = doc["metrics"]
    assert metrics["enabled"] is True
    assert metrics["client"]["REQUEST_COUNT"]["tag_overrides"] == {
        "a": {"operation": "UPSERT", "value": "request.protocol"},
        "b": {"operation": "REMOVE"},
    }
    assert metrics["server"]["REQUEST_COUNT"]["tag_overrides"] == {
        "a": {"operation": "UPSERT", "value": "request.host"},
        "b": {"operation": "REMOVE"},
    }
    assert metrics["server"]["TCP_SENT_BYTES"]["tag_overrides"] == {
        "a": {"operation": "UPSERT", "value": "request.host"}
    }
    src = doc["sources"]["metrics.client.REQUEST_COUNT.tag_overrides.a"]
    assert src["resource"] == "Telemetry shop/wl"


def test_all_metrics_disabled_turns_metrics_off(manifests: Manifests) -> None:
    root = telemetry(
        "mesh", "istio-system", "metrics: [{providers: [{name: prometheus}], overrides: [{disabled: true}]}]"
    )
    # No match selects every metric: it disables like ALL_METRICS (isAllMetrics).
    assert resolve(manifests(root))["metrics"]["enabled"] is False
    ns = telemetry("ns", "shop", "metrics: [{overrides: [{match: {metric: REQUEST_COUNT}}]}]")
    metrics = resolve(manifests(root, ns))["metrics"]
    assert (metrics["client_enabled"], metrics["server_enabled"]) == (True, True)  # a namespace re-enables
    root = telemetry(
        "mesh",
        "istio-system",
        "metrics: [{providers: [{name: prometheus}], "
        "overrides: [{match: {metric: ALL_METRICS}, disabled: true}]}]",
    )
    assert resolve(manifests(root))["metrics"]["enabled"] is False
    ns = telemetry(
        "ns", "shop", "metrics: [{overrides: [{match: {metric: REQUEST_COUNT}, disabled: false}]}]"
    )
    assert resolve(manifests(root, ns))["metrics"]["enabled"] is True  # a namespace re-enables


@pytest.mark.parametrize(("mode", "client", "server"), [("CLIENT", False, True), ("SERVER", True, False)])
def test_all_metrics_disabled_for_one_direction(
    manifests: Manifests, mode: str, client: bool, server: bool
) -> None:
    root = telemetry(
        "mesh",
        "istio-system",
        f"metrics: [{{providers: [{{name: prometheus}}], "
        f"overrides: [{{match: {{metric: ALL_METRICS, mode: {mode}}}, disabled: true}}]}}]",
    )
    metrics = resolve(manifests(root))["metrics"]
    assert (metrics["enabled"], metrics["client_enabled"], metrics["server_enabled"]) == (
        True,
        client,
        server,
    )


def test_metrics_off_when_prometheus_not_in_scope(manifests: Manifests) -> None:
    extra = mesh_config("{extensionProviders: [{name: sd, stackdriver: {}}]}")
    root = telemetry("mesh", "istio-system", "metrics: [{providers: [{name: sd}]}]")
    assert resolve(manifests(root, extra))["metrics"]["enabled"] is False


def test_mixer_tag_override_is_evaluated_as_cel(manifests: Manifests) -> None:
    root = telemetry(
        "mesh",
        "istio-system",
        "metrics: [{overrides: [{tagOverrides: "
        "{destination_version: {value: 'destination.workload.name | unknown'}}}]}]",
    )
    doc = resolve(manifests(root))
    value = doc["metrics"]["client"]["REQUEST_COUNT"]["tag_overrides"]["destination_version"]["value"]
    assert value == "has(destination.workload.name) ? destination.workload.name : 'unknown'"
    assert any("Mixer" in w for w in doc["warnings"])


def test_tag_override_outside_the_cel_subset_is_noted(manifests: Manifests) -> None:
    root = telemetry(
        "mesh",
        "istio-system",
        "metrics: [{overrides: [{tagOverrides: {a: {value: 'request.host +'}, "
        "b: {value: 'request.host | destination.service.name'}}}]}]",
    )
    doc = resolve(manifests(root))
    tags = doc["metrics"]["client"]["REQUEST_COUNT"]["tag_overrides"]
    assert tags["b"]["value"] == "has(request.host) ? request.host : destination.service.name"
    assert [w for w in doc["warnings"] if "drops this label" in w] == [
        next(w for w in doc["warnings"] if "tagOverrides.a" in w)
    ]


@pytest.mark.parametrize(
    ("expr", "cel"),
    [
        ("request.host", None),
        ("a || b", None),
        ("a.b | 'x'", "has(a.b) ? a.b : 'x'"),
        ('a.b | c.d | "z"', "has(a.b) ? a.b : (has(c.d) ? c.d : 'z')"),
        ("a.b | unknown | c.d", "has(a.b) ? a.b : 'unknown'"),
    ],
)
def test_mixer_to_cel(expr: str, cel: str | None) -> None:
    assert mixer_to_cel(expr) == cel


# -- identity and mesh ----------------------------------------------------------------------------


def test_workload_identity_from_deployment(manifests: Manifests) -> None:
    doc = effective_config(manifests(ROOT_OTEL, deployment()), "web", "shop")
    w = doc["workload"]
    assert w["labels"] == {"app": "web", "version": "v2"}
    assert (w["service_name"], w["canonical_service"], w["canonical_revision"]) == ("web.shop", "web", "v2")
    assert doc["sources"]["workload.labels"]["resource"] == "Deployment shop/web"


def test_explain_notes_a_workload_without_sidecar(manifests: Manifests) -> None:
    ns = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {istio-injection: disabled}}\n"
    doc = resolve(manifests(ROOT_OTEL, ns))
    assert any(
        "no sidecar would be injected (Namespace shop has istio-injection=disabled)" in w
        for w in doc["warnings"]
    )


def test_unknown_workload_assumes_app_label(manifests: Manifests) -> None:
    doc = effective_config(manifests(ROOT_OTEL), "ghost", "shop")
    assert doc["workload"]["labels"] == {"app": "ghost"}
    assert doc["workload"]["canonical_revision"] == "latest"
    assert any("assuming labels app=ghost" in w for w in doc["warnings"])
    elsewhere = effective_config(manifests(ROOT_OTEL, deployment()), "web", "default")
    assert any("a Deployment web exists in: shop" in w for w in elsewhere["warnings"])


def test_operator_overlay_and_istio_configmap(manifests: Manifests) -> None:
    first = mesh_config(
        "{rootNamespace: mesh-root, defaultConfig: {tracing: {sampling: 10, maxPathTagLength: 99}}}"
    )
    second = first.replace("name: extra", "name: extra2").replace(
        "{rootNamespace: mesh-root, defaultConfig: {tracing: {sampling: 10, maxPathTagLength: 99}}}",
        "{defaultConfig: {tracing: {sampling: 20}}, "
        "extensionProviders: [{name: other, zipkin: {service: z, port: 1}}]}",
    )
    cm = (
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: mesh-root}\n"
        "data:\n  mesh: |\n    defaultConfig:\n      tracing:\n        sampling: 30\n"
    )
    bundle = manifests(first, second, cm)
    mesh = bundle.mesh
    assert mesh.root_namespace == "mesh-root"
    assert mesh.get("defaultConfig.tracing.sampling") == 30  # the ConfigMap is read last
    assert mesh.get("defaultConfig.tracing.maxPathTagLength") == 99  # maps merge
    assert [p["name"] for p in mesh.config["extensionProviders"]] == ["other"]  # lists are replaced
    assert mesh.source("defaultConfig.tracing.sampling").resource == "ConfigMap mesh-root/istio"
    assert mesh.source("extensionProviders[0].zipkin").field == "spec.meshConfig.extensionProviders[0].zipkin"


@pytest.mark.parametrize(
    ("drift", "path"),
    [
        (lambda d: d["tracing"]["client"]["provider"].update(port="4317"), "tracing.client.provider.port"),
        (lambda d: d["tracing"]["server"].update(sampling=5), "tracing.server.sampling"),
        (lambda d: d["workload"].pop("service_name"), "workload.service_name"),
    ],
)
def test_contract_catches_drift(
    manifests: Manifests, drift: Callable[[dict[str, Any]], Any], path: str
) -> None:
    doc = resolve(manifests(ROOT_OTEL))
    drift(doc)
    with pytest.raises(DocumentError) as err:
        Document.from_json(doc, strict=True)
    assert err.value.path == path


def test_document_shape_is_json_and_complete(manifests: Manifests) -> None:
    import json

    doc = resolve(manifests(ROOT_OTEL, MESH))
    assert json.loads(json.dumps(doc)) == doc
    assert set(doc) == {
        "schema",
        "workload",
        "mesh",
        "telemetry",
        "tracing",
        "metrics",
        "security",
        "sources",
        "warnings",
    }
    keys = {
        "enabled", "provider", "random_sampling_percentage", "disable_span_reporting",
        "use_request_id_for_trace_sampling", "enable_istio_tags", "max_path_tag_length", "custom_tags",
        "propagation",
    }  # fmt: skip
    assert set(doc["tracing"]["client"]) == keys
    assert set(doc["tracing"]["client"]["provider"]) == {
        "name", "type", "service", "port", "protocol", "path", "endpoint", "timeout_s", "headers",
        "max_tag_length", "trace_context",
    }  # fmt: skip


def test_timestamps_compare_as_times_not_text(manifests: Manifests) -> None:
    """An unquoted timestamp is a YAML datetime, a quoted one a string; offsets count."""
    older = telemetry(
        "z-older", "istio-system", "tracing: [{providers: [{name: otel}], randomSamplingPercentage: 40}]",
        "2024-01-01T02:00:00+03:00",  # 2023-12-31T23:00Z
    )  # fmt: skip
    newer = telemetry(
        "a-newer", "istio-system", "tracing: [{providers: [{name: otel}], randomSamplingPercentage: 60}]"
    ).replace("namespace: istio-system}", "namespace: istio-system, creationTimestamp: 2024-01-01T00:00:00Z}")
    doc = resolve(manifests(newer, older))
    assert both(doc, "random_sampling_percentage") == (40.0, 40.0)
    assert doc["telemetry"]["ignored"][0]["resource"] == "Telemetry istio-system/a-newer"
