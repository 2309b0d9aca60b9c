"""The seed's manifests loaded together resolve as Istio resolves them (issue 4)."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshtrace.config import effective_config, load


@pytest.fixture
def seed_bundle(seed_manifests: Path):  # type: ignore[no-untyped-def]
    return load([seed_manifests])


@pytest.mark.parametrize(
    ("workload", "namespace", "labels", "sampling"),
    [
        ("frontend", "default", None, 50.0),  # workload Telemetry frontend-tracing
        ("backend", "default", None, 30.0),  # workload Telemetry backend-tracing
        ("checkout", "payment", {"app": "checkout"}, 100.0),  # namespace Telemetry
        ("fluentd", "logging", {"app": "fluentd"}, 1.0),  # namespace Telemetry
        ("other", "default", {"app": "other"}, 100.0),  # only the root mesh-default
    ],
)
def test_seed_sampling(seed_bundle, workload, namespace, labels, sampling) -> None:  # type: ignore[no-untyped-def]
    doc = effective_config(seed_bundle, workload, namespace, labels=labels)
    for direction in ("client", "server"):
        block = doc["tracing"][direction]
        assert block["enabled"] is True
        assert block["random_sampling_percentage"] == sampling
        assert block["provider"]["name"] == "otel-collector"
        assert block["provider"]["protocol"] == "grpc"
        # mesh-default wins by name; sampling-policy's region/cluster tags never apply.
        assert block["custom_tags"] == {
            "cluster": {"literal": {"value": "k8s-cluster-1"}},
            "environment": {"literal": {"value": "production"}},
        }


def test_seed_root_telemetry_by_name(seed_bundle) -> None:  # type: ignore[no-untyped-def]
    doc = effective_config(seed_bundle, "other", "default", labels={"app": "other"})
    assert doc["telemetry"]["applied"][0]["resource"] == "Telemetry istio-system/mesh-default"
    ignored = {i["resource"] for i in doc["telemetry"]["ignored"]}
    assert ignored == {"Telemetry istio-system/mesh-metrics", "Telemetry istio-system/sampling-policy"}
    src = doc["sources"]["tracing.client.random_sampling_percentage"]
    assert src["resource"] == "Telemetry istio-system/mesh-default"
    assert src["file"].endswith("istio-telemetry.yaml")
    assert src["field"] == "spec.tracing[0].randomSamplingPercentage"
    # mesh-metrics is ignored, so its (Mixer-syntax) overrides never apply
    assert doc["metrics"]["enabled"] is True
    assert doc["metrics"]["client"]["REQUEST_COUNT"] == {"disabled": False, "tag_overrides": {}}
