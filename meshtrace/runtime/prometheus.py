"""`up --prometheus`: Debian's Prometheus server scraping every sidecar's 15090 and the
collector's self-metrics, with the manifests' PrometheusRule groups loaded as rule files."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

from meshtrace.runtime.plan import Plan
from meshtrace.runtime.supervisor import ProcessSpec

PROMETHEUS_PORT = 9090


def prometheus_config(plan: Plan, rule_files: list[str]) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": "5s", "evaluation_interval": "5s"},
        "rule_files": rule_files,
        "scrape_configs": [
            {
                "job_name": "envoy-stats",
                "metrics_path": "/stats/prometheus",
                "static_configs": [
                    {
                        "targets": [f"{p.ip}:15090"],
                        "labels": {"namespace": p.namespace, "pod": p.name, "app": p.labels.get("app", "")},
                    }
                    for p in plan.pods
                ],
            },
            {"job_name": "otel-collector", "static_configs": [{"targets": [f"{plan.host}:8888"]}]},
        ],
    }


def prometheus_spec(plan: Plan, rundir: Path) -> ProcessSpec:
    binary = shutil.which("prometheus")
    if binary is None:
        raise RuntimeError("--prometheus needs the prometheus server (Debian: apt-get install prometheus)")
    rule_files = []
    for i, groups in enumerate(plan.alert_rule_groups):
        path = rundir / f"rules-{i}.yaml"
        path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
        rule_files.append(str(path))
    config = rundir / "prometheus.yml"
    config.write_text(yaml.safe_dump(prometheus_config(plan, rule_files), sort_keys=False))
    return ProcessSpec(
        name="prometheus",
        argv=[
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={rundir / 'prometheus-data'}",
            f"--web.listen-address={plan.host}:{PROMETHEUS_PORT}",
        ],
        ready_tcp=(plan.host, PROMETHEUS_PORT),
    )
