"""Collector test fixtures: a running `meshtrace collector` with every listener on port 0 and a
file exporter whose output the tests read back."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml


def file_pipeline_config(tmp_path: Path, out: Path, extra_exporters: dict[str, Any] | None = None) -> Path:
    config = {
        "receivers": {
            "otlp": {"protocols": {"grpc": {"endpoint": "127.0.0.1:0"}, "http": {"endpoint": "127.0.0.1:0"}}}
        },
        "exporters": {"file": {"path": str(out), "flush_interval": "0s"}, **(extra_exporters or {})},
        "extensions": {"health_check": {"endpoint": "127.0.0.1:0"}},
        "service": {
            "extensions": ["health_check"],
            "pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["file", *(extra_exporters or {})]}},
            "telemetry": {"metrics": {"address": "127.0.0.1:0"}},
        },
    }
    path = tmp_path / "collector.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def read_spans(out: Path, want: int, timeout: float = 15.0) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(resource, span) pairs from a file exporter's output, waiting until `want` spans are there."""
    deadline = time.monotonic() + timeout
    while True:
        found: list[tuple[dict[str, Any], dict[str, Any]]] = []
        if out.exists():
            for line in out.read_text().splitlines():
                if not line.strip():
                    continue
                for rs in json.loads(line).get("resourceSpans", []):
                    for ss in rs.get("scopeSpans", []):
                        found.extend((rs.get("resource", {}), span) for span in ss.get("spans", []))
        if len(found) >= want or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def attributes(obj: dict[str, Any]) -> dict[str, Any]:
    """OTLP/JSON attributes as {key: python value}."""
    out = {}
    for kv in obj.get("attributes", []):
        value = kv["value"]
        (kind, raw), *_ = value.items()
        out[kv["key"]] = int(raw) if kind == "intValue" else raw
    return out


@dataclass
class RunningCollector:
    proc: Any  # conftest.MeshtraceProcess
    out: Path

    @property
    def grpc(self) -> str:
        return self.proc.address("otlp-grpc")

    @property
    def http(self) -> str:
        return self.proc.address("otlp-http")

    @property
    def metrics(self) -> str:
        return self.proc.address("metrics")

    def spans(self, want: int, timeout: float = 15.0) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        return read_spans(self.out, want, timeout)

    attributes = staticmethod(attributes)


@pytest.fixture
def file_collector(tmp_path: Path, meshtrace_process: Any) -> Callable[..., RunningCollector]:
    """`start(extra_exporters=None, args=())` runs a collector: otlp -> file (+ extra exporters)."""

    def start(extra_exporters: dict[str, Any] | None = None, args: tuple[str, ...] = ()) -> RunningCollector:
        out = tmp_path / "spans.jsonl"
        config = file_pipeline_config(tmp_path, out, extra_exporters)
        proc = meshtrace_process(["collector", "--config", str(config), *args])
        proc.wait_for_listeners("otlp-grpc", "otlp-http", "metrics", "health-check")
        return RunningCollector(proc, out)

    return start


@pytest.fixture
def run_collector(tmp_path: Path, meshtrace_process: Any) -> Callable[..., Any]:
    """`run(config_dict, *ready_components, args=())`: a collector process from a config mapping."""
    counter = iter(range(1000))

    def run(config: dict[str, Any], *components: str, args: tuple[str, ...] = ()) -> Any:
        path = tmp_path / f"collector-{next(counter)}.yaml"
        path.write_text(yaml.safe_dump(config))
        proc = meshtrace_process(["collector", "--config", str(path), *args])
        proc.wait_for_listeners(*components)
        return proc

    return run


@pytest.fixture(name="read_spans")
def read_spans_fixture() -> Callable[..., list[tuple[dict[str, Any], dict[str, Any]]]]:
    """`read_spans(path, want, timeout=15)`: (resource, span) pairs a file exporter wrote."""
    return read_spans
