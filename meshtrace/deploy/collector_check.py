"""The rendered collector config checked as the pinned upstream Collector would check it (the
catalogue, docs/collector.md), plus render's own warnings on it: exporters to hosts no rendered
manifest defines, traces pipelines that keep spans nowhere."""

from __future__ import annotations

import re
from typing import Any

from meshtrace.collector.config import check, expand_env
from meshtrace.collector.schema import DEBUG_ONLY, ERROR, UNKNOWN_HOST, WARNING, Problem
from meshtrace.config.loader import Bundle
from meshtrace.deploy.collector_config import LOCAL_HOSTS, component_type, pipelines
from meshtrace.deploy.istio import RenderError


def validate_config(config: dict[str, Any], hosts: set[str] | None = None) -> list[Problem]:
    """The rendered config checked as the pinned upstream Collector would check it (the catalogue,
    docs/collector.md): errors raise RenderError; warnings are returned with their stable codes.
    `hosts`: the host names the rendered manifests define (None: exporter hosts not checked)."""
    expanded = expand_env(config, {"MY_POD_IP": "10.0.0.1"}, [])
    problems = check(expanded, upstream=True)
    errors = [f"{p.code} {p.path}: {p.message}" for p in problems if p.severity == ERROR]
    if errors:
        raise RenderError("collector config is refused by the Collector it deploys: " + "; ".join(errors))
    warnings = [p for p in problems if p.severity != ERROR]
    if hosts is not None:
        warnings += _unknown_hosts(expanded, hosts)
    warnings += _debug_only(expanded)
    return warnings


def endpoint_host(endpoint: str) -> str:
    rest = endpoint.split("://", 1)[-1]
    host = rest.split("/", 1)[0]
    return host.rpartition(":")[0].strip("[]") if ":" in host else host


def _unknown_hosts(config: dict[str, Any], hosts: set[str]) -> list[Problem]:
    """Exporters sending to a host no rendered manifest defines (it must exist in the cluster)."""
    out = []
    for eid, exporter in (config.get("exporters") or {}).items():
        endpoint = exporter.get("endpoint") if isinstance(exporter, dict) else None
        if not isinstance(endpoint, str):
            continue
        host = endpoint_host(endpoint)
        if not host or host in LOCAL_HOSTS or re.fullmatch(r"[\d.]+|[0-9a-fA-F:]+", host) or host in hosts:
            continue
        out.append(
            Problem(
                WARNING,
                f"exporters.{eid}.endpoint",
                f"{host} is not defined by any manifest rendered here: create it (a trace backend's "
                "Service) before applying, or point the exporter at your backend",
                UNKNOWN_HOST,
            )
        )
    return out


def _debug_only(config: dict[str, Any]) -> list[Problem]:
    """A traces pipeline whose exporters are all `debug` keeps no span anywhere."""
    out = []
    for name, pipeline in pipelines(config).items():
        exporters = [str(e) for e in (pipeline or {}).get("exporters") or []]
        if (
            component_type(name) == "traces"
            and exporters
            and all(component_type(e) == "debug" for e in exporters)
        ):
            out.append(
                Problem(
                    WARNING,
                    f"service.pipelines.{name}.exporters",
                    "the only exporter is debug: spans are printed to the collector's log and stored "
                    "nowhere; add your trace backend's exporter",
                    DEBUG_ONLY,
                )
            )
    return out


def service_hosts(bundle: Bundle, namespace: str, extra: dict[str, str] | None = None) -> set[str]:
    """Every name a pod in `namespace` can reach a Service of the bundle by (`extra`: more
    Services, name -> namespace, such as the rendered collector's own)."""
    services = [(s.name, s.namespace) for s in bundle.services] + list((extra or {}).items())
    hosts = set()
    for name, ns in services:
        hosts |= qualified_names(name, ns)
        if ns == namespace:
            hosts.add(name)
    return hosts


def qualified_names(service: str, namespace: str) -> set[str]:
    """The names a pod in any namespace reaches a Service by."""
    return {
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
    }
