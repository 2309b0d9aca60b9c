"""Turn a cluster's OpenTelemetry Collector config into the one `up` runs locally.

The config is kept as written, except: receivers listen on the collector's local address; an
exporter whose endpoint names a host that no manifest defines (the seed's
`jaeger-collector.observability`) is taken out of the pipelines and reported, since the embedded
store takes its place; the `store` exporter, the `query` extension (API + UI) and `health_check`
are added, as `up` always shows traces locally; and `batch` processors are taken out of the
pipelines that export to the store, so that a span is acknowledged only once it is committed (the
store groups concurrent requests into one transaction itself; docs/reliability.md).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

DEFAULT_CONFIG: dict[str, Any] = {
    "receivers": {
        "otlp": {"protocols": {"grpc": {}, "http": {}}},
        "zipkin": {},
    },
    "processors": {"memory_limiter": {"check_interval": "1s", "limit_mib": 512}},
    "exporters": {},
    "service": {
        "pipelines": {
            "traces": {
                "receivers": ["otlp", "zipkin"],
                "processors": ["memory_limiter"],
                "exporters": [],
            }
        }
    },
}

# Where each receiver type listens, per protocol, when nothing is configured (the Collector's).
RECEIVER_PORTS: dict[str, dict[str, int]] = {"otlp": {"grpc": 4317, "http": 4318}, "zipkin": {"": 9411}}


def _port_of(endpoint: object, default: int) -> int:
    text = str(endpoint or "")
    _, sep, port = text.rpartition(":")
    return int(port) if sep and port.isdigit() else default


def _host_of(endpoint: str) -> str:
    text = endpoint.split("://", 1)[-1]
    return text.rsplit(":", 1)[0].strip("[]")


def localize(
    config: dict[str, Any] | None,
    host: str,
    ui: tuple[str, int],
    store: dict[str, Any],
    is_defined_host: Callable[[str], bool],
) -> tuple[dict[str, Any], list[str]]:
    """(the config to run, reports of what was changed and why)."""
    cfg = copy.deepcopy(config) if config else copy.deepcopy(DEFAULT_CONFIG)
    reports: list[str] = []

    for rid, rcfg in (cfg.get("receivers") or {}).items():
        rtype = str(rid).split("/", 1)[0]
        if rtype == "otlp":
            protocols = (rcfg or {}).get("protocols") or {}
            for proto, pcfg in protocols.items():
                default = RECEIVER_PORTS["otlp"].get(proto, 4317)
                pcfg = pcfg or {}
                pcfg["endpoint"] = f"{host}:{_port_of(pcfg.get('endpoint'), default)}"
                protocols[proto] = pcfg
        elif rtype == "zipkin":
            rcfg = rcfg or {}
            rcfg["endpoint"] = f"{host}:{_port_of(rcfg.get('endpoint'), 9411)}"
            cfg["receivers"][rid] = rcfg

    dropped = []
    for eid, ecfg in list((cfg.get("exporters") or {}).items()):
        endpoint = str((ecfg or {}).get("endpoint") or "")
        if not endpoint:
            continue
        target = _host_of(endpoint)
        if (
            target in ("localhost", "127.0.0.1", "::1")
            or target.startswith("127.")
            or is_defined_host(target)
        ):
            continue
        dropped.append(eid)
        reports.append(
            f"collector exporter {eid}: host {target!r} is not defined by any manifest; "
            "its traces go to the local store instead"
        )
        del cfg["exporters"][eid]

    cfg.setdefault("exporters", {})["store"] = store
    extensions = cfg.setdefault("extensions", {}) or {}
    cfg["extensions"] = extensions
    extensions["query"] = {"endpoint": f"{ui[0]}:{ui[1]}", "store": "store"}
    health = extensions.setdefault("health_check", {}) or {}
    extensions["health_check"] = health
    health["endpoint"] = f"{host}:{_port_of(health.get('endpoint'), 13133)}"

    service = cfg.setdefault("service", {})
    service_ext = [e for e in service.get("extensions") or [] if e not in ("query", "health_check")]
    service["extensions"] = [*service_ext, "health_check", "query"]
    telemetry = service.setdefault("telemetry", {}) or {}
    service["telemetry"] = telemetry
    metrics = telemetry.setdefault("metrics", {}) or {}
    telemetry["metrics"] = metrics
    metrics.pop("readers", None)
    metrics["address"] = f"{host}:8888"
    for name, pipeline in (service.get("pipelines") or {}).items():
        if not str(name).startswith("traces"):
            continue
        exporters = [e for e in pipeline.get("exporters") or [] if e not in dropped and e != "store"]
        pipeline["exporters"] = [*exporters, "store"]
        # Not reported: like the local endpoints, a change every manifest gets (docs/up.md).
        processors = pipeline.get("processors") or []
        pipeline["processors"] = [p for p in processors if str(p).split("/", 1)[0] != "batch"]
    return cfg, reports
