"""Issue 11, findings 1, 2, 3 and 6: `render` checks the collector config against the upstream
Collector catalogue (the Collector it deploys), not meshtrace's own partial model."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_helpers import run_meshtrace
from test_deploy_cases import COLLECTOR, MESH, config_map, render_docs, write

from meshtrace.collector.catalogue import catalogue
from meshtrace.deploy.collector import DEFAULT_IMAGE
from meshtrace.deploy.collector_check import validate_config
from meshtrace.deploy.collector_config import collector_config
from meshtrace.deploy.istio import RenderError

BASE: dict[str, Any] = {
    "receivers": {"otlp": {"protocols": {"grpc": {}, "http": {}}}},
    "processors": {"memory_limiter": {"check_interval": "1s", "limit_percentage": 80}, "batch": {}},
    "exporters": {"otlp_grpc": {"endpoint": "otel-collector:4317", "tls": {"insecure": True}}},
    "service": {
        "pipelines": {
            "traces": {
                "receivers": ["otlp"],
                "processors": ["memory_limiter", "batch"],
                "exporters": ["otlp_grpc"],
            }
        }
    },
}


def with_(path: str, value: Any) -> dict[str, Any]:
    """BASE with `value` set at the dotted `path`."""
    config = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    node = config
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return config


def codes(config: dict[str, Any]) -> list[str]:
    return [p.code for p in validate_config(collector_config(config)[0])]


def test_the_catalogue_is_the_collector_render_deploys() -> None:
    assert catalogue().image == DEFAULT_IMAGE
    assert catalogue().version == "v0.156.0"


# Finding 1: each of these is valid for the Collector render deploys; render refused them.
VALID_UPSTREAM = [
    ("receivers.otlp.protocols.grpc", {"tls": {"cert_file": "/c.pem", "key_file": "/k.pem"}}),
    ("receivers.otlp.protocols.http", {"auth": {"authenticator": "basicauth"}}),
    ("receivers.otlp.protocols.http", {"logs_url_path": "/v1/logs"}),
    ("processors.memory_limiter.max_gc_interval_when_soft_limited", "10s"),
    ("processors.memory_limiter.max_gc_interval_when_hard_limited", "1s"),
    ("exporters.otlp_grpc.compression", "zstd"),
    ("exporters.otlp_grpc.sending_queue", {"sizer": "items", "batch": {"flush_timeout": "1s"}}),
    ("processors.batch.metadata_keys", ["tenant"]),
    ("service.telemetry.metrics.views", [{"selector": {"instrument_name": "x"}, "stream": {}}]),
    (
        "processors.tail_sampling",
        {
            "sample_on_first_match": True,
            "policies": [
                {"name": "drop-health", "type": "drop", "drop": {"drop_sub_policy": []}},
                {"name": "ottl", "type": "ottl_condition", "ottl_condition": {"span": ["true"]}},
            ],
        },
    ),
]


@pytest.mark.parametrize(("path", "value"), VALID_UPSTREAM, ids=[p for p, _ in VALID_UPSTREAM])
def test_valid_upstream_configs_render(path: str, value: Any) -> None:
    assert codes(with_(path, value)) == []


# Finding 2: the real Collector refuses these; render passed them (or filed them as unchecked).
REFUSED = [
    ("extensions.memory_ballast", {"size_mib": 512}, "COL002", "GOMEMLIMIT"),
    ("processors.k8sattribute", {}, "COL001", "did you mean 'k8s_attributes'"),
    (
        "processors.tail_sampling",
        {"policies": [{"name": "errors", "type": "status_codes"}]},
        "COL005",
        "did you mean 'status_code'",
    ),
    ("exporters.otlp_grpc.retry_on_failur", {}, "COL003", "did you mean 'retry_on_failure'"),
    ("exporters.debug", {"loglevel": "info", "verbosity": "basic"}, "COL004", "verbosity"),
]


@pytest.mark.parametrize(("path", "value", "code", "hint"), REFUSED, ids=[r[0] for r in REFUSED])
def test_configs_the_collector_refuses_fail_with_a_code(path: str, value: Any, code: str, hint: str) -> None:
    config = with_(path, value)
    if path.startswith("extensions."):
        config["service"]["extensions"] = [path.split(".")[1]]
    if path.startswith("processors.") and path.count(".") == 1:
        config["service"]["pipelines"]["traces"]["processors"].append(path.split(".")[1])
    with pytest.raises(RenderError) as caught:
        validate_config(config)  # as written: the rewrite would not fix it
    assert code in str(caught.value) and hint in str(caught.value)


@pytest.mark.e2e
def test_render_refuses_a_removed_extension_with_exit_1(tmp_path: Path) -> None:
    bad = config_map(
        "extensions: {memory_ballast: {size_mib: 512}}\n"
        "receivers: {otlp: {protocols: {grpc: {}}}}\nexporters: {debug: {}}\n"
        "service: {extensions: [memory_ballast],"
        " pipelines: {traces: {receivers: [otlp], exporters: [debug]}}}"
    )
    proc = run_meshtrace("render", "-f", str(write(tmp_path, COLLECTOR, bad)), "-o", str(tmp_path / "out"))
    assert proc.returncode == 1
    assert "COL002 extensions.memory_ballast" in proc.stderr


# Finding 3: warnings that were dropped.
def test_plaintext_grpc_exporter_without_tls_insecure_warns() -> None:
    config = with_("exporters.otlp_grpc", {"endpoint": "jaeger-collector:4317"})
    assert "COL010" in codes(config)
    assert "COL010" not in codes(with_("exporters.otlp_grpc", {"endpoint": "https://backend:4317"}))


def test_the_seed_reports_its_undefined_backend(seed_out: Path) -> None:
    readme = (seed_out / "README.md").read_text()
    assert "`COL011`: collector config exporters.otlp_grpc/jaeger.endpoint" in readme
    assert "jaeger-collector.observability is not defined" in readme
    assert "COL010" not in readme  # the seed sets tls.insecure


def test_the_demo_says_its_only_exporter_is_debug(examples_out: Path) -> None:
    readme = (examples_out / "README.md").read_text()
    assert "`COL012`: collector config service.pipelines.traces.exporters" in readme


@pytest.mark.e2e
def test_the_cli_prints_the_warnings(tmp_path: Path) -> None:
    folder = write(tmp_path, MESH, COLLECTOR)
    proc = run_meshtrace("render", "-f", str(folder), "-o", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    assert "warning: collector config service.pipelines.traces.exporters" in proc.stderr
    assert "[COL012]" in proc.stderr


def test_a_backend_the_input_defines_is_not_reported(tmp_path: Path) -> None:
    service = """
apiVersion: v1
kind: Service
metadata: {name: jaeger-collector, namespace: observability}
spec: {selector: {app: jaeger}, ports: [{name: grpc-otlp, port: 4317}]}
"""
    config = config_map(
        yaml.safe_dump(with_("exporters.otlp_grpc.endpoint", "jaeger-collector.observability:4317"))
    )
    result = render_docs(tmp_path, MESH, COLLECTOR, config, service)
    assert not [w for w in result.warnings if w.startswith("COL011")], result.warnings


# Finding 6: the logging exporter mapped info to normal.
@pytest.mark.parametrize(
    ("level", "verbosity"), [("info", "normal"), ("debug", "detailed"), ("warn", "basic")]
)
def test_loglevel_becomes_the_verbosity_upstream_mapped_it_to(level: str, verbosity: str) -> None:
    config = with_("exporters.logging", {"loglevel": level})
    config["service"]["pipelines"]["traces"]["exporters"] = ["logging"]
    rendered, notes, _ = collector_config(config)
    assert rendered["exporters"]["debug"] == {"verbosity": verbosity}
    assert any(f"loglevel {level} -> verbosity {verbosity}" in n for n in notes)
