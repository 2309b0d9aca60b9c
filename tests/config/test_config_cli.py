"""`meshtrace explain` and `meshtrace lint` as real processes: exit codes, JSON output, text."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from config_helpers import MESH, telemetry

from meshtrace.document import Document
from meshtrace.runtime.plan import DEFAULT_MANIFESTS


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "meshtrace", *args], capture_output=True, text=True, timeout=120, env=full_env
    )


def explain_json(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    proc = run("explain", *args, "-o", "json", env=env)
    assert proc.returncode == 0, proc.stderr
    doc: dict[str, Any] = json.loads(proc.stdout)
    assert Document.from_json(doc, strict=True).to_json() == doc
    return doc


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("workload", "namespace", "labels", "sampling"),
    [
        ("frontend", "default", None, 50.0),
        ("backend", "default", None, 30.0),
        ("checkout", "payment", "app=checkout,version=v3", 100.0),
        ("fluentd", "logging", "app=fluentd", 1.0),
        ("anything", "default", "app=anything", 100.0),
    ],
)
def test_explain_seed_json(
    seed_manifests: Path, workload: str, namespace: str, labels: str | None, sampling: float
) -> None:
    args = ["-f", str(seed_manifests), "--workload", workload, "--namespace", namespace]
    if labels:
        args += ["--labels", labels]
    doc = explain_json(*args)
    assert doc["tracing"]["client"]["random_sampling_percentage"] == sampling
    assert doc["tracing"]["server"]["random_sampling_percentage"] == sampling
    assert doc["tracing"]["server"]["provider"]["service"] == "otel-collector.istio-system.svc.cluster.local"
    assert doc["tracing"]["server"]["custom_tags"]["environment"] == {"literal": {"value": "production"}}
    if labels:
        assert doc["workload"]["labels"] == dict(kv.split("=") for kv in labels.split(","))
        assert doc["sources"]["workload.labels"]["resource"] == "given labels"


@pytest.mark.e2e
def test_explain_seed_text_shows_provenance(seed_manifests: Path) -> None:
    proc = run("explain", "-f", str(seed_manifests), "--workload", "frontend")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "Workload default/frontend" in out
    assert "50%" in out
    assert "Telemetry default/frontend-tracing" in out
    assert "service-telemetry.yaml" in out
    assert "ignored Telemetry istio-system/sampling-policy" in out
    assert "otel-collector.istio-system.svc.cluster.local:4317" in out


@pytest.mark.e2e
def test_explain_reads_pilot_trace_sampling(tmp_path: Path) -> None:
    (tmp_path / "mesh.yaml").write_text(
        MESH + "---\n" + telemetry("mesh", "istio-system", "tracing: [{providers: [{name: otel}]}]")
    )
    doc = explain_json(
        "-f", str(tmp_path), "--workload", "w", "--labels", "app=w", env={"PILOT_TRACE_SAMPLING": "2.5"}
    )
    assert doc["tracing"]["client"]["random_sampling_percentage"] == 2.5


@pytest.mark.e2e
def test_explain_text_names_every_workload_telemetry_and_a_disabled_direction(tmp_path: Path) -> None:
    docs = [
        MESH,
        telemetry(
            "mesh",
            "istio-system",
            "tracing: [{providers: [{name: otel}]}]\nmetrics: [{providers: [{name: prometheus}], "
            "overrides: [{match: {metric: ALL_METRICS, mode: SERVER}, disabled: true}]}]",
        ),
        telemetry(
            "a", "default", "selector: {matchLabels: {app: w}}\ntracing: [{randomSamplingPercentage: 10}]"
        ),
        telemetry(
            "b", "default", "selector: {matchLabels: {app: w}}\ntracing: [{randomSamplingPercentage: 20}]"
        ),
    ]
    (tmp_path / "mesh.yaml").write_text("---\n".join(docs))
    proc = run("explain", "-f", str(tmp_path), "--workload", "w", "--labels", "app=w")
    assert proc.returncode == 0, proc.stderr
    out = " ".join(proc.stdout.split())
    assert "workload: Telemetry default/a -> workload: Telemetry default/b" in out
    assert "20%" in out and "ignored Telemetry default/b" not in out
    assert "server ALL_METRICS disabled" in out.replace("│", "").replace("  ", " ")


@pytest.mark.e2e
def test_explain_bad_input(tmp_path: Path) -> None:
    missing = run("explain", "-f", str(tmp_path / "nope.yaml"), "--workload", "w")
    assert missing.returncode == 2
    assert "no such file or folder" in missing.stderr
    bad_labels = run("explain", "-f", str(tmp_path), "--workload", "w", "--labels", "app")
    assert bad_labels.returncode == 2
    assert "not k=v" in bad_labels.stderr
    assert run("explain", "--workload", "w").returncode == 2  # -f is required


@pytest.mark.e2e
def test_explain_an_unknown_workload_is_an_error_with_did_you_mean() -> None:
    seed = str(DEFAULT_MANIFESTS)
    typo = run("explain", "-f", seed, "--workload", "frontnd")
    assert typo.returncode == 2
    assert "no Deployment default/frontnd in the manifests; did you mean frontend?" in typo.stderr
    assert "--labels" in typo.stderr and typo.stdout == ""
    elsewhere = run("explain", "-f", seed, "--workload", "otel-collector")
    assert elsewhere.returncode == 2
    assert "did you mean --namespace istio-system?" in elsewhere.stderr
    # With --labels the workload is hypothetical on purpose: explained.
    assert run("explain", "-f", seed, "--workload", "frontnd", "--labels", "app=frontnd").returncode == 0


@pytest.mark.e2e
@pytest.mark.parametrize(
    "command",
    [["explain", "--workload", "w"], ["lint"], ["render", "-o", "out"], ["control"], ["up"]],
)
def test_a_missing_path_is_exit_2_with_one_message_in_every_command(
    tmp_path: Path, command: list[str]
) -> None:
    missing = tmp_path / "nope.yaml"
    proc = run(*command, "-f", str(missing))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"Invalid value for '-f' / '--filename': {missing}: no such file or folder" in proc.stderr
    assert proc.stdout == ""


@pytest.mark.e2e
def test_lint_seed_json(seed_manifests: Path) -> None:
    proc = run("lint", "-f", str(seed_manifests), "-o", "json")
    assert proc.returncode == 1, proc.stderr  # the seed has errors
    findings = json.loads(proc.stdout)
    assert all({"code", "severity", "resource", "file", "path", "message", "fix"} <= set(f) for f in findings)
    by_code: dict[str, list[dict[str, Any]]] = {}
    for f in findings:
        by_code.setdefault(f["code"], []).append(f)
    ignored = sorted(f["resource"] for f in by_code["multiple-namespace-telemetry"])
    assert ignored == ["Telemetry istio-system/mesh-metrics", "Telemetry istio-system/sampling-policy"]
    assert {f["severity"] for f in by_code["multiple-namespace-telemetry"]} == {"error"}
    expected = {
        "telemetry-deprecated-version",
        "production-full-sampling",
        "mixer-tag-override",
        "legacy-zipkin-tracing",
        "mesh-proxy-metadata",
        "istio-operator-overlay",
        "collector-port-protocol",
        "collector-logging-exporter",
        "collector-loglevel",
        "alert-removed-metric",
        "sampling-not-first-hop",
    }
    assert expected <= set(by_code)
    assert by_code["sampling-not-first-hop"][0]["resource"] == "Telemetry default/backend-tracing"
    assert len(by_code["telemetry-deprecated-version"]) == 7  # every Telemetry in the seed is v1alpha1
    prod = by_code["production-full-sampling"][0]
    assert prod["resource"] == "Telemetry istio-system/mesh-default"
    assert prod["file"].endswith("istio-telemetry.yaml")
    assert prod["line"] == 11
    port = by_code["collector-port-protocol"][0]
    assert (port["resource"], port["path"]) == ("Service istio-system/otel-collector", "spec.ports[0]")


@pytest.mark.e2e
def test_lint_seed_text(seed_manifests: Path) -> None:
    proc = run("lint", "-f", str(seed_manifests))
    assert proc.returncode == 1
    assert "ERROR   multiple-namespace-telemetry Telemetry istio-system/sampling-policy" in proc.stdout
    assert "istio-telemetry.yaml:11 spec.tracing[0].randomSamplingPercentage" in proc.stdout
    # names in brackets are text, not rich markup
    assert "spec.template.spec.containers[otel-collector].resources" in proc.stdout
    assert proc.stdout.rstrip().splitlines()[-1].startswith("6 errors, ")


@pytest.mark.e2e
def test_lint_clean_exits_zero(tmp_path: Path) -> None:
    (tmp_path / "mesh.yaml").write_text(
        MESH + "---\n" + telemetry("mesh", "istio-system", "tracing: [{providers: [{name: otel}]}]")
    )
    proc = run("lint", "-f", str(tmp_path), "-o", "json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout) == []
    text = run("lint", "-f", str(tmp_path))
    assert text.returncode == 0
    assert "no problems found" in text.stdout


@pytest.mark.e2e
def test_lint_warnings_only_exit_zero_and_text(tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_text(
        MESH
        + "---\n"
        + telemetry("mesh", "istio-system", "tracing: [{providers: [{name: otel}]}]").replace(
            "telemetry.istio.io/v1", "telemetry.istio.io/v1alpha1"
        )
    )
    proc = run("lint", "-f", str(tmp_path / "t.yaml"))
    assert proc.returncode == 0
    assert "telemetry-deprecated-version" in proc.stdout
    assert "t.yaml:" in proc.stdout  # file:line
    assert "1 warning" in proc.stdout


@pytest.mark.e2e
def test_lint_broken_yaml_is_a_finding_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text("kind: Telemetry\nspec: [unclosed\n")
    proc = run("lint", "-f", str(tmp_path), "-o", "json")
    assert proc.returncode == 1
    findings = json.loads(proc.stdout)
    assert [f["code"] for f in findings] == ["yaml-error"]
    assert findings[0]["file"].endswith("broken.yaml")
