"""Istio's Telemetry tables (tracing, metrics merge, tracing config) run against meshtrace's
resolution (`meshtrace.config.effective_config`). The tables are data beside this file; how each
was read from upstream: tests/conformance/istio/README.md."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from conformance_rows import Row, load

from meshtrace.config import load as load_manifests
from meshtrace.config.resolve import STANDARD_METRICS, effective_config
from meshtrace.document import Document

HERE = Path(__file__).resolve().parent
TRACING_DOC, TRACING_ROWS = load(HERE / "telemetry_tracing.yaml")
METRICS_DOC, METRICS_ROWS = load(HERE / "telemetry_metrics.yaml")
CONFIG_DOC, CONFIG_ROWS = load(HERE / "tracing_config.yaml")
ROOT = "istio-system"

Resolve = Callable[..., dict[str, Any]]


def _telemetry(item: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": item.get("name", "default"), "namespace": item["namespace"]}
    if item.get("created"):
        meta["creationTimestamp"] = item["created"]
    body = copy.deepcopy(spec)
    if item.get("selector"):
        body["selector"] = {"matchLabels": item["selector"]}
    return {"apiVersion": "telemetry.istio.io/v1", "kind": "Telemetry", "metadata": meta, "spec": body}


def _deployment(workload: dict[str, Any], proxy_config: dict[str, Any] | None) -> dict[str, Any]:
    annotations = {"proxy.istio.io/config": yaml.safe_dump(proxy_config)} if proxy_config is not None else {}
    labels = workload["labels"]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": workload["name"], "namespace": workload["namespace"]},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels, "annotations": annotations},
                "spec": {"containers": [{"name": "app", "image": "app"}]},
            },
        },
    }


@pytest.fixture
def resolve(tmp_path: Path) -> Resolve:
    """`resolve(mesh, telemetries, workload, proxy_config=None, env=None)`: the config document
    of the workload with these manifests (an IstioOperator holding `mesh`)."""

    def run(
        mesh: dict[str, Any],
        telemetries: list[dict[str, Any]],
        workload: dict[str, Any],
        proxy_config: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        operator = {
            "apiVersion": "install.istio.io/v1alpha1",
            "kind": "IstioOperator",
            "metadata": {"name": "mesh", "namespace": ROOT},
            "spec": {"meshConfig": mesh},
        }
        docs = [operator, _deployment(workload, proxy_config), *telemetries]
        (tmp_path / "manifests.yaml").write_text(yaml.safe_dump_all(docs), encoding="utf-8")
        bundle = load_manifests([tmp_path])
        assert not [p for p in bundle.problems if p.severity == "error"], bundle.problems
        doc = effective_config(bundle, workload["name"], workload["namespace"], env=env)
        assert Document.from_json(doc, strict=True).to_json() == doc
        return doc

    return run


def _params(rows: list[Row]) -> list[Any]:
    return [pytest.param(row, id=row.id) for row in rows]


def _skip_out_of_scope(row: Row) -> None:
    if row.status == "out_of_scope":
        pytest.skip(f"out of scope: {row.case['reason']}")


# -- TestTracing (pilot/pkg/model/telemetry_test.go) and source rows ---------------------------


def _tracing_actual(doc: dict[str, Any], direction: str) -> dict[str, Any]:
    """One direction of the document in TestTracing's terms (the TracingSpec fields)."""
    block = doc["tracing"][direction]
    sampling_source = doc["sources"][f"tracing.{direction}.random_sampling_percentage"]["resource"]
    return {
        "provider": block["provider"]["name"] if block["provider"] else None,
        "disabled": not block["enabled"],
        # set by a Telemetry, else null: the proxy-config chain decides (upstream's nil)
        "sampling": block["random_sampling_percentage"] if sampling_source.startswith("Telemetry ") else None,
        "custom_tags": sorted(block["custom_tags"]) or None,
        "use_request_id": block["use_request_id_for_trace_sampling"],
        "enable_istio_tags": block["enable_istio_tags"],
        "disable_context_propagation": block["propagation"]["write"] == [],
    }


@pytest.mark.parametrize("row", _params(TRACING_ROWS))
def test_telemetry_tracing(row: Row, resolve: Resolve) -> None:
    _skip_out_of_scope(row)
    case = row.case
    mesh = {**copy.deepcopy(TRACING_DOC["mesh"]), "defaultProviders": {"tracing": case["default_providers"]}}
    specs = TRACING_DOC["specs"]
    tels = [
        _telemetry(t, specs[t["spec"]] if isinstance(t["spec"], str) else t["spec"])
        for t in case["telemetries"]
    ]
    doc = resolve(mesh, tels, TRACING_DOC["workload"])
    expect = case["expect"]
    if expect.get("legacy"):
        # upstream: nil TracingConfig (no Telemetry tracing, no default provider) = the legacy path
        assert all(
            (b["provider"] or {}).get("name") == "defaultConfig.tracing.zipkin"
            for b in doc["tracing"].values()
        )
        return
    for direction in ("client", "server"):
        want = {**TRACING_DOC["direction_defaults"], **expect.get("both", {}), **expect.get(direction, {})}
        assert _tracing_actual(doc, direction) == want, direction


# -- TestMergeMetrics (telemetry_metric_test.go) and TestTelemetryFilters' metrics rows ---------


def _metrics_actual(metrics: dict[str, Any], direction: str) -> Any:
    """A direction as `disabled` or {METRIC: {disabled?, tags?}} for metrics carrying an override."""
    if not metrics.get(f"{direction}_enabled", metrics["enabled"]):  # contract: absent = `enabled`
        return "disabled"
    out: dict[str, Any] = {}
    for name, spec in metrics[direction].items():
        entry: dict[str, Any] = {}
        if spec["disabled"]:
            entry["disabled"] = True
        tags = {
            t: ("REMOVE" if o["operation"] == "REMOVE" else o["value"])
            for t, o in spec["tag_overrides"].items()
        }
        if tags:
            entry["tags"] = tags
        if entry:
            out[name] = entry
    return out


def _stats_expected(stats: Any) -> Any:
    """TestTelemetryFilters' stats filter config in the same shape: no filter = disabled."""
    if stats == "disabled":
        return "disabled"
    names = METRICS_DOC["stats_names"]
    assert set(names.values()) == set(STANDARD_METRICS)
    out: dict[str, Any] = {}
    for metric in stats:
        entry: dict[str, Any] = {}
        if metric.get("drop"):
            entry["disabled"] = True
        tags = {**metric.get("dimensions", {}), **{t: "REMOVE" for t in metric.get("tags_to_remove", [])}}
        if tags:
            entry["tags"] = tags
        if entry:
            out[names[metric["name"]]] = entry
    return out


@pytest.mark.parametrize("row", _params(METRICS_ROWS))
def test_telemetry_metrics(row: Row, resolve: Resolve) -> None:
    _skip_out_of_scope(row)
    case = row.case
    specs = METRICS_DOC["specs"]
    mesh = {"defaultProviders": {"metrics": case["default_providers"]}}
    workload = {"name": "test", "namespace": "default", "labels": {"app": "test"}}
    if row.test == "TestMergeMetrics":
        tels = (
            [_telemetry({"namespace": ROOT}, {"metrics": [specs[m] for m in case["metrics"]]})]
            if case["metrics"]
            else []
        )
        metrics = resolve(mesh, tels, workload)["metrics"]
        for direction in ("client", "server"):
            assert _metrics_actual(metrics, direction) == case["expect"][direction], direction
        return
    tels = [_telemetry(t, {"metrics": [specs[m] for m in t["metrics"]]}) for t in case["telemetries"]]
    metrics = resolve(mesh, tels, workload)["metrics"]
    direction = {"outbound": "client", "inbound": "server"}[case["class"]]
    assert _metrics_actual(metrics, direction) == _stats_expected(case["expect"]["stats"])


# -- pilot/pkg/networking/core/tracing_test.go --------------------------------------------------


def _older(version: str, gate: str) -> bool:
    return tuple(map(int, version.split("."))) < tuple(map(int, gate.split(".")))


def _config_actual(doc: dict[str, Any], version: str) -> dict[str, Any]:
    """The server direction in TestConfigureTracing's terms, with the fields istiod would not send
    to a proxy of `version` removed (meshtrace's sidecar is current)."""
    gates = CONFIG_DOC["version_gates"]
    block = doc["tracing"]["server"]
    provider = copy.deepcopy(block["provider"]) if block["enabled"] else None
    if provider and provider["type"] == "zipkin":
        if _older(version, gates["zipkin_timeout_headers"]):
            provider["timeout_s"] = provider["headers"] = None
        if _older(version, gates["trace_context_option"]):
            provider["trace_context"] = "b3"
    tags = block["custom_tags"]
    if _older(version, gates["formatter_tags"]):
        tags = {k: v for k, v in tags.items() if "formatter" not in v}
    propagation = block["propagation"]["write"] != [] or _older(version, gates["no_context_propagation"])
    return {
        "legacy": (block["provider"] or {}).get("name") == "defaultConfig.tracing.zipkin",
        "provider": provider,
        "sampling": block["random_sampling_percentage"],
        "max_path_tag_length": block["max_path_tag_length"],
        "istio_tags": block["enable_istio_tags"],
        "custom_tags": tags,
        "use_request_id": block["use_request_id_for_trace_sampling"],
        "context_propagation": propagation,
    }


@pytest.mark.parametrize("row", _params(CONFIG_ROWS))
def test_tracing_config(row: Row, resolve: Resolve) -> None:
    _skip_out_of_scope(row)
    case = row.case
    tels = [_telemetry({"namespace": ROOT}, case["telemetry"])] if case.get("telemetry") else []
    workload = {"name": "test", "namespace": "default", "labels": {"app": "test"}}
    doc = resolve(case["mesh"], tels, workload, case.get("proxy_config"), case.get("env"))
    actual = _config_actual(doc, case["proxy_version"])
    for key, want in case["expect"].items():
        if key == "provider" and want is not None:
            assert actual["provider"] is not None, "no provider"
            got = {k: actual["provider"].get(k) for k in want}
            assert got == want, key
        else:
            assert actual[key] == want, key
