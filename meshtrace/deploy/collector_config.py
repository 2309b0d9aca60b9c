"""The production collector config: the input's OpenTelemetry Collector config rewritten for a
current contrib release in a cluster (current component names, endpoints on the pod's address,
memory_limiter first and batch, health_check, self-metrics readers), a note on each change, and
the Service ports it listens on. Pure functions over config mappings; docs/render.md lists each
rewrite and its reason."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from meshtrace.collector import registry
from meshtrace.collector.component import Kind
from meshtrace.collector.exporters.debug import LOGLEVELS
from meshtrace.deploy.istio import RenderError

POD_IP = "${env:MY_POD_IP}"
HEALTH_PORT = 13133
METRICS_PORT = 8888
GOMEMLIMIT_SHARE = 0.8  # the Go runtime's soft limit, below the container's hard limit
MIB = 2**20
LOCAL_HOSTS = {"", "0.0.0.0", "::", "[::]", "localhost", "127.0.0.1"}
_ALL_INTERFACES = {"", "0.0.0.0", "::", "[::]"}
# Extensions that expose the process's internals (profiles, live pipeline state): upstream binds
# them to localhost by default, reachable with `kubectl port-forward`, never from other pods.
DEBUG_EXTENSIONS = ("pprof", "zpages")
# The config of a collector Deployment whose ConfigMap the input does not have.
MINIMAL_CONFIG: dict[str, Any] = {
    "receivers": {"otlp": {"protocols": {"grpc": {}, "http": {}}}},
    "exporters": {"debug": {"verbosity": "basic"}},
    "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["debug"]}}},
}


@dataclass
class Port:
    name: str  # Istio reads the protocol from the prefix (grpc-, http-)
    port: int
    app_protocol: str | None = None


@dataclass
class Listening:
    """Where the rendered config's health check and self-metrics are: the pod spec follows."""

    health_path: str = "/"
    health_port: int = HEALTH_PORT
    metrics_port: int = METRICS_PORT


def component_type(cid: str) -> str:
    """`otlp/in` -> `otlp`: a component id's type."""
    return cid.split("/", 1)[0]


def dig(node: Any, *keys: str) -> Any:
    """node[k1][k2]... or None where a level is missing or not a mapping."""
    for key in keys:
        node = node.get(key) if isinstance(node, dict) else None
    return node


def pipelines(config: dict[str, Any]) -> dict[str, Any]:
    """service.pipelines, or {} when there is none."""
    found = (config.get("service") or {}).get("pipelines") or {}
    return found if isinstance(found, dict) else {}


def soft_limit_mib(limit: int) -> int:
    """GOMEMLIMIT_SHARE of a container memory limit in bytes, in MiB."""
    return int(limit * GOMEMLIMIT_SHARE) // MIB


def _ids(section: Any) -> list[str]:
    return [str(k) for k in section] if isinstance(section, dict) else []


def _rename(config: dict[str, Any], kind: Kind, notes: list[str]) -> None:
    """Deprecated or removed component type names -> current ones, in the section and pipelines."""
    section = config.get(kind.section)
    if not isinstance(section, dict):
        return
    renames: dict[str, str] = {}
    for old in list(section):
        type_, _, name = old.partition("/")
        new_type, _warning = registry.canonical(kind, type_)
        if new_type != type_:
            renames[old] = new_type + (f"/{name}" if name else "")
    if not renames:
        return
    config[kind.section] = {renames.get(k, k): v for k, v in section.items()}
    for pipeline in pipelines(config).values():
        if isinstance(pipeline, dict) and isinstance(pipeline.get(kind.section), list):
            pipeline[kind.section] = [renames.get(str(r), r) for r in pipeline[kind.section]]
    for old, new in renames.items():
        why = (
            "the logging exporter was removed in Collector v0.111"
            if old.startswith("logging")
            else "the current name since v0.144 (the old one is a deprecated alias)"
        )
        notes.append(f"{kind.section}.{old} -> {new}: {why}.")
        component = config[kind.section][new]
        if isinstance(component, dict) and "loglevel" in component:
            level = str(component.pop("loglevel")).lower()
            # The logging exporter's own mapping (info -> normal), not "everything else is basic".
            component.setdefault("verbosity", LOGLEVELS.get(level, "basic"))
            notes.append(
                f"{kind.section}.{new}: loglevel {level} -> verbosity {component['verbosity']} "
                "(loglevel went with the logging exporter)."
            )


def _bind_pod_ip(node: Any, path: str, notes: list[str]) -> None:
    """Every `endpoint` on all interfaces or loopback -> the pod's own address."""
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        sub = f"{path}.{key}"
        if key == "endpoint" and isinstance(value, str) and ":" in value:
            host, _, port = value.rpartition(":")
            if host in LOCAL_HOSTS and port.isdigit():
                node[key] = f"{POD_IP}:{port}"
                notes.append(
                    f"{sub}: {value} -> {node[key]} (the pod's address from the downward API: not every "
                    "interface, and not loopback, which other pods cannot reach)."
                )
        else:
            _bind_pod_ip(value, sub, notes)


def _keep_local(settings: Any, path: str, notes: list[str]) -> None:
    """A debug extension on all interfaces -> localhost (upstream's default)."""
    endpoint = settings.get("endpoint") if isinstance(settings, dict) else None
    if isinstance(endpoint, str) and endpoint.rpartition(":")[0] in _ALL_INTERFACES:
        settings["endpoint"] = f"localhost:{endpoint.rpartition(':')[2]}"
        notes.append(
            f"{path}.endpoint: {endpoint} -> {settings['endpoint']} (it exposes the collector's internals: "
            "reach it with kubectl port-forward, not from other pods)."
        )


def _endpoint(parent: dict[str, Any], key: str, port: int, path: str, notes: list[str]) -> dict[str, Any]:
    """`parent[key]` as a mapping with an `endpoint`: the pod's address and `port` when unset
    (the default, localhost since v0.110, is unreachable from other pods)."""
    settings = parent.get(key)
    if not isinstance(settings, dict):
        settings = parent[key] = {}
    if "endpoint" not in settings:
        settings["endpoint"] = f"{POD_IP}:{port}"
        notes.append(
            f"{path}.endpoint set to {settings['endpoint']} (the default, localhost, is unreachable)."
        )
    return settings


def _default_endpoints(receivers: dict[str, Any], notes: list[str]) -> None:
    for rid, receiver in receivers.items():
        rtype = component_type(rid)
        if rtype == "otlp":
            protocols = receiver.get("protocols") if isinstance(receiver, dict) else None
            for proto, port in (("grpc", 4317), ("http", 4318)):
                if isinstance(protocols, dict) and proto in protocols:
                    _endpoint(protocols, proto, port, f"receivers.{rid}.protocols.{proto}", notes)
        elif rtype == "zipkin":
            _endpoint(receivers, rid, 9411, f"receivers.{rid}", notes)


def _ensure_pipelines(config: dict[str, Any]) -> dict[str, Any]:
    """service.pipelines, created when missing (the rewrite adds processors to each)."""
    service = config.setdefault("service", {})
    pipelines = service.setdefault("pipelines", {})
    return pipelines if isinstance(pipelines, dict) else {}


def _processors(config: dict[str, Any], notes: list[str]) -> None:
    processors = config.setdefault("processors", {}) or {}
    config["processors"] = processors
    limiter = next((p for p in _ids(processors) if component_type(p) == "memory_limiter"), None)
    if limiter is None:
        limiter = "memory_limiter"
        processors[limiter] = {"check_interval": "1s", "limit_percentage": 80, "spike_limit_percentage": 25}
        notes.append(
            "processors.memory_limiter added (80% of the container's memory, 25% spike): without it a "
            "burst grows the heap until the pod is OOM-killed."
        )
    batch = next((p for p in _ids(processors) if component_type(p) == "batch"), None)
    for name, pipeline in _ensure_pipelines(config).items():
        if not isinstance(pipeline, dict):
            continue
        procs = [str(p) for p in pipeline.get("processors") or []]
        limiters = [p for p in procs if component_type(p) == "memory_limiter"]
        first = limiters[0] if limiters else limiter
        if procs[:1] != [first]:
            procs = [first] + [p for p in procs if p != first]
            notes.append(
                f"service.pipelines.{name}: {first} moved/added first (it must refuse data before other "
                "processors buffer it)."
            )
        if batch is None:
            batch = "batch"
            processors[batch] = {}
            notes.append("processors.batch added (defaults: 8192 spans or 200ms per export).")
        if not any(component_type(p) == "batch" for p in procs):
            procs.append(batch)
            notes.append(f"service.pipelines.{name}: {batch} added last (exports in batches).")
        pipeline["processors"] = procs


def _health_check(config: dict[str, Any], notes: list[str]) -> tuple[str, int]:
    """The health_check extension on the pod's address (the probes call it); its path and port."""
    extensions = config.setdefault("extensions", {}) or {}
    config["extensions"] = extensions
    hid = next((e for e in _ids(extensions) if component_type(e) == "health_check"), None)
    if hid is None:
        hid = "health_check"
        extensions[hid] = {"endpoint": f"{POD_IP}:{HEALTH_PORT}"}
        notes.append(
            f"extensions.health_check added on {POD_IP}:{HEALTH_PORT}: the readiness and liveness "
            "probes call it."
        )
    settings = _endpoint(extensions, hid, HEALTH_PORT, f"extensions.{hid}", notes)
    port = str(settings["endpoint"]).rpartition(":")[2]
    service = config.setdefault("service", {})
    enabled = [str(e) for e in service.get("extensions") or []]
    if hid not in enabled:
        service["extensions"] = [*enabled, hid]
        notes.append(f"service.extensions: {hid} enabled (defined is not enough).")
    return str(settings.get("path", "/")), int(port) if port.isdigit() else HEALTH_PORT


def _self_metrics(config: dict[str, Any], notes: list[str]) -> int:
    """Self-metrics on the pod's address with the default names (no `_total`); the port."""
    service = config.setdefault("service", {})
    telemetry = service.setdefault("telemetry", {}) or {}
    service["telemetry"] = telemetry
    metrics = telemetry.setdefault("metrics", {}) or {}
    telemetry["metrics"] = metrics
    readers = metrics.get("readers")
    if isinstance(readers, list) and readers:
        for reader in readers:
            prom = dig(reader, "pull", "exporter", "prometheus")
            if isinstance(prom, dict):
                if str(prom.get("host", "localhost")) in LOCAL_HOSTS:
                    prom["host"] = POD_IP
                    notes.append(
                        f"self-metrics reader host -> {POD_IP} (Prometheus scrapes the pod's address)."
                    )
                return int(prom.get("port", METRICS_PORT))
        return METRICS_PORT
    port = METRICS_PORT
    address = metrics.pop("address", None)
    if isinstance(address, str) and address.rpartition(":")[2].isdigit():
        port = int(address.rpartition(":")[2])
        notes.append(
            f"service.telemetry.metrics.address ({address}) -> readers: current releases read only "
            "`readers` for where self-metrics listen."
        )
    else:
        notes.append(
            f"service.telemetry.metrics.readers: self-metrics on {POD_IP}:{port} (the default, "
            "localhost:8888, cannot be scraped from outside the pod)."
        )
    prometheus = {
        "host": POD_IP,
        "port": port,
        # A configured reader adds `_total` and units to names (v0.120+); these keep the default
        # names the alerts and dashboard are written for (they accept `_total` too).
        "without_type_suffix": True,
        "without_units": True,
        "without_scope_info": True,
    }
    metrics["readers"] = [{"pull": {"exporter": {"prometheus": prometheus}}}]
    return port


def _check_shape(raw: Any) -> None:
    """The structure the rewrite relies on (values inside components are the collector check's
    business); RenderError naming the field otherwise."""

    def mapping(value: Any, path: str, null_ok: bool = True) -> None:
        if not (isinstance(value, dict) or (null_ok and value is None)):
            raise RenderError(f"collector config: {path} must be a mapping, got {type(value).__name__}")

    mapping(raw, "the config", null_ok=False)
    for kind in (Kind.RECEIVER, Kind.PROCESSOR, Kind.EXPORTER, Kind.EXTENSION):
        mapping(raw.get(kind.section), kind.section)
        for cid, component in (raw.get(kind.section) or {}).items():
            mapping(component, f"{kind.section}.{cid}")
            if isinstance(component, dict) and "protocols" in component:
                mapping(component["protocols"], f"{kind.section}.{cid}.protocols")
                for proto, settings in (component["protocols"] or {}).items():
                    mapping(settings, f"{kind.section}.{cid}.protocols.{proto}")
    service = raw.get("service")
    mapping(service, "service")
    for key in ("pipelines", "telemetry"):
        mapping((service or {}).get(key), f"service.{key}")
    for name, pipeline in ((service or {}).get("pipelines") or {}).items():
        mapping(pipeline, f"service.pipelines.{name}")
        for section in ("receivers", "processors", "exporters"):
            refs = (pipeline or {}).get(section)
            if refs is not None and not (isinstance(refs, list) and all(isinstance(r, str) for r in refs)):
                raise RenderError(
                    f"collector config: service.pipelines.{name}.{section} must be a list of ids"
                )
    telemetry = (service or {}).get("telemetry") or {}
    mapping(telemetry.get("metrics"), "service.telemetry.metrics")
    readers = (telemetry.get("metrics") or {}).get("readers")
    if readers is not None and not (isinstance(readers, list) and all(isinstance(r, dict) for r in readers)):
        raise RenderError("collector config: service.telemetry.metrics.readers must be a list of mappings")
    extensions = (service or {}).get("extensions")
    if extensions is not None and not isinstance(extensions, list):
        raise RenderError("collector config: service.extensions must be a list of ids")


def collector_config(
    raw: dict[str, Any], memory_limit: int | None = None
) -> tuple[dict[str, Any], list[str], Listening]:
    """The production collector config, the notes on each change, and where it listens.
    `memory_limit`: the container's memory limit in bytes, which a memory_limiter must stay below."""
    _check_shape(raw)
    config = copy.deepcopy(raw)
    notes: list[str] = []
    for kind in (Kind.RECEIVER, Kind.PROCESSOR, Kind.EXPORTER, Kind.EXTENSION):
        _rename(config, kind, notes)
    receivers = config.get("receivers")
    if isinstance(receivers, dict):
        _default_endpoints(receivers, notes)
        _bind_pod_ip(receivers, "receivers", notes)
    _processors(config, notes)
    path, health_port = _health_check(config, notes)
    for eid, settings in (config.get("extensions") or {}).items():
        if component_type(eid) in DEBUG_EXTENSIONS:
            _keep_local(settings, f"extensions.{eid}", notes)
        else:
            _bind_pod_ip(settings, f"extensions.{eid}", notes)
    listening = Listening(path, health_port, _self_metrics(config, notes))
    if memory_limit:
        _check_limiter(config, memory_limit, notes)
    return config, notes, listening


def service_ports(config: dict[str, Any], metrics_port: int) -> list[Port]:
    """Service ports named so Istio knows the protocol (a gRPC port Istio takes for HTTP/1.1
    breaks OTLP/gRPC exports)."""
    ports: list[Port] = []
    for rid, receiver in (config.get("receivers") or {}).items():
        rtype = component_type(rid)
        suffix = rid.replace("/", "-").replace("_", "-")
        found: list[tuple[str, str, str | None]] = []
        if rtype == "otlp":
            protocols = dig(receiver, "protocols") or {}
            for proto, port_name, app in (("grpc", "grpc-otlp", "grpc"), ("http", "http-otlp", "http")):
                if proto in protocols:
                    found.append((str(dig(protocols, proto, "endpoint") or ""), port_name, app))
        elif isinstance(receiver, dict) and "endpoint" in receiver:
            kind = "http" if rtype in ("zipkin", "jaeger", "prometheus") else "tcp"
            found.append((str(receiver["endpoint"]), f"{kind}-{suffix}", "http" if kind == "http" else None))
        for endpoint, name, protocol in found:
            port = endpoint.rpartition(":")[2]
            if port.isdigit() and all(p.port != int(port) for p in ports):
                if name != f"{'grpc' if protocol == 'grpc' else 'http'}-otlp" and any(
                    p.name == name for p in ports
                ):
                    name = f"{name}-{port}"
                ports.append(Port(name, int(port), protocol))
    ports.append(Port("http-metrics", metrics_port, "http"))
    return ports


def _check_limiter(config: dict[str, Any], limit: int, notes: list[str]) -> None:
    """A memory_limiter above the container limit never refuses: the kernel kills first."""
    for pid, settings in (config.get("processors") or {}).items():
        if component_type(pid) != "memory_limiter" or not isinstance(settings, dict):
            continue
        limit_mib = settings.get("limit_mib")
        if isinstance(limit_mib, int) and limit_mib * MIB >= limit:
            settings["limit_mib"] = soft_limit_mib(limit)
            settings.pop("spike_limit_mib", None)
            notes.append(
                f"processors.{pid}.limit_mib {limit_mib} -> {settings['limit_mib']}: it was not below the "
                "container's memory limit, so the pod would be OOM-killed before it refused data."
            )
