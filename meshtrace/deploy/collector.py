"""The OpenTelemetry Collector half of `render`: its config for a current contrib image and the
Kubernetes resources that run it highly available (Deployment, Service, PodDisruptionBudget,
HorizontalPodAutoscaler). Pure functions over a loaded `Bundle`; docs/upstream-behaviour.md §4 is
the source of the names and defaults used."""

from __future__ import annotations

import copy
import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from meshtrace.collector import registry
from meshtrace.collector.catalogue import catalogue
from meshtrace.collector.component import Kind
from meshtrace.collector.config import check, expand_env
from meshtrace.collector.exporters.debug import LOGLEVELS
from meshtrace.collector.schema import DEBUG_ONLY, ERROR, UNKNOWN_HOST, WARNING, Problem
from meshtrace.config.loader import Bundle
from meshtrace.config.model import ConfigMap, Deployment, HorizontalPodAutoscaler, Service
from meshtrace.deploy.istio import RenderError, base
from meshtrace.deploy.manifest import Manifest, dump

# A current contrib release: it accepts `otlp_grpc`/`otlp_http` (v0.144+), has no `logging`
# exporter (removed in v0.111) and reads self-metrics settings only from `readers`.
DEFAULT_IMAGE = "otel/opentelemetry-collector-contrib:0.156.0"
MIN_VERSION = (0, 144)  # the first release that knows the exporter names written here
IMAGE_MARKERS = ("opentelemetry-collector", "otelcol")
POD_IP = "${env:MY_POD_IP}"
CONFIG_DIR = "/conf"
HEALTH_PORT = 13133
METRICS_PORT = 8888
MIN_HA_REPLICAS = 2
GOMEMLIMIT_SHARE = 0.8  # the Go runtime's soft limit, below the container's hard limit
DEFAULT_RESOURCES = {
    "requests": {"cpu": "200m", "memory": "256Mi"},
    "limits": {"cpu": "1", "memory": "512Mi"},
}
DEFAULT_HPA_METRICS: list[dict[str, Any]] = [
    {
        "type": "Resource",
        "resource": {"name": name, "target": {"type": "Utilization", "averageUtilization": u}},
    }
    for name, u in (("cpu", 70), ("memory", 80))
]
DEFAULT_MAX_REPLICAS = 10
_LOCAL_HOSTS = {"", "0.0.0.0", "::", "[::]", "localhost", "127.0.0.1"}
_ALL_INTERFACES = {"", "0.0.0.0", "::", "[::]"}
# Extensions that expose the process's internals (profiles, live pipeline state): upstream binds
# them to localhost by default, reachable with `kubectl port-forward`, never from other pods.
DEBUG_EXTENSIONS = ("pprof", "zpages")
_VERSION = re.compile(r":v?(\d+)\.(\d+)(?:\.\d+)?(?:[-@].*)?$")
_QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|K|M|G|T)?$")
_UNITS = {None: 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "K": 10**3}
_UNITS |= {"M": 10**6, "G": 10**9, "T": 10**12}
MIB = 2**20
# The config of a collector Deployment whose ConfigMap the input does not have.
MINIMAL_CONFIG: dict[str, Any] = {
    "receivers": {"otlp": {"protocols": {"grpc": {}, "http": {}}}},
    "exporters": {"debug": {"verbosity": "basic"}},
    "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["debug"]}}},
}


@dataclass
class Options:
    image: str = DEFAULT_IMAGE
    replicas: int | None = None  # --collector-replicas; None: from the manifests
    profile: str = "quickstart"  # --profile (meshtrace.deploy.profile)
    backend: str | None = None  # --backend jaeger|tempo|external=HOST:PORT
    storage: str = "elasticsearch"  # --backend-storage, for Jaeger
    strict: bool = False  # --strict: a warning fails the render
    prometheus_selector: dict[str, str] | None = None  # --prometheus-selector; None: monitoring's default


@dataclass
class Port:
    name: str  # Istio reads the protocol from the prefix (grpc-, http-)
    port: int
    app_protocol: str | None = None


@dataclass
class Rendered:
    """The collector's manifests by file name, and what monitoring needs to know about it."""

    files: dict[str, list[Manifest]] = field(default_factory=dict)
    namespace: str = ""
    service: str = ""
    service_labels: dict[str, str] = field(default_factory=dict)
    ports: list[Port] = field(default_factory=list)
    not_rendered: list[str] = field(default_factory=list)  # the input's collectors left out, and why
    config: dict[str, Any] = field(default_factory=dict)  # the rendered collector config
    sampling_config: dict[str, Any] | None = None  # the tail-sampling tier's config, when split in two


def check_image(image: str) -> None:
    """Reject an image whose tag is a release older than the config names need."""
    found = _VERSION.search(image)
    if found and (int(found.group(1)), int(found.group(2))) < MIN_VERSION:
        raise ValueError(
            f"{image}: the rendered config uses exporter names (otlp_grpc, otlp_http) that Collector "
            f"releases before v{MIN_VERSION[0]}.{MIN_VERSION[1]}.0 reject; use {DEFAULT_IMAGE} or newer"
        )


def _is_collector(dep: Deployment) -> bool:
    return any(any(m in c.image for m in IMAGE_MARKERS) for c in dep.containers)


def _collector_map(bundle: Bundle, namespace: str | None) -> ConfigMap | None:
    maps = [m for m in bundle.config_maps if m.collector_config is not None]
    maps = [m for m in maps if namespace is None or m.namespace == namespace]
    maps.sort(key=lambda m: "collector" not in m.name)  # the seed's otel-collector-config first
    return maps[0] if maps else None


# -- config ---------------------------------------------------------------------------------------


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
    for pipeline in ((config.get("service") or {}).get("pipelines") or {}).values():
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
            if host in _LOCAL_HOSTS and port.isdigit():
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
        rtype = rid.split("/", 1)[0]
        if rtype == "otlp":
            protocols = receiver.get("protocols") if isinstance(receiver, dict) else None
            for proto, port in (("grpc", 4317), ("http", 4318)):
                if isinstance(protocols, dict) and proto in protocols:
                    _endpoint(protocols, proto, port, f"receivers.{rid}.protocols.{proto}", notes)
        elif rtype == "zipkin":
            _endpoint(receivers, rid, 9411, f"receivers.{rid}", notes)


def _pipelines(config: dict[str, Any]) -> dict[str, Any]:
    service = config.setdefault("service", {})
    pipelines = service.setdefault("pipelines", {})
    return pipelines if isinstance(pipelines, dict) else {}


def _processors(config: dict[str, Any], notes: list[str]) -> None:
    processors = config.setdefault("processors", {}) or {}
    config["processors"] = processors
    limiter = next((p for p in _ids(processors) if p.split("/", 1)[0] == "memory_limiter"), None)
    if limiter is None:
        limiter = "memory_limiter"
        processors[limiter] = {"check_interval": "1s", "limit_percentage": 80, "spike_limit_percentage": 25}
        notes.append(
            "processors.memory_limiter added (80% of the container's memory, 25% spike): without it a "
            "burst grows the heap until the pod is OOM-killed."
        )
    batch = next((p for p in _ids(processors) if p.split("/", 1)[0] == "batch"), None)
    for name, pipeline in _pipelines(config).items():
        if not isinstance(pipeline, dict):
            continue
        procs = [str(p) for p in pipeline.get("processors") or []]
        limiters = [p for p in procs if p.split("/", 1)[0] == "memory_limiter"]
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
        if not any(p.split("/", 1)[0] == "batch" for p in procs):
            procs.append(batch)
            notes.append(f"service.pipelines.{name}: {batch} added last (exports in batches).")
        pipeline["processors"] = procs


def _health_check(config: dict[str, Any], notes: list[str]) -> tuple[str, int]:
    """The health_check extension on the pod's address (the probes call it); its path and port."""
    extensions = config.setdefault("extensions", {}) or {}
    config["extensions"] = extensions
    hid = next((e for e in _ids(extensions) if e.split("/", 1)[0] == "health_check"), None)
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
            prom = _dig(reader, "pull", "exporter", "prometheus")
            if isinstance(prom, dict):
                if str(prom.get("host", "localhost")) in _LOCAL_HOSTS:
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


@dataclass
class Listening:
    """Where the rendered config's health check and self-metrics are: the pod spec follows."""

    health_path: str = "/"
    health_port: int = HEALTH_PORT
    metrics_port: int = METRICS_PORT


def _dig(node: Any, *keys: str) -> Any:
    """node[k1][k2]... or None where a level is missing or not a mapping."""
    for key in keys:
        node = node.get(key) if isinstance(node, dict) else None
    return node


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


def collector_config(raw: dict[str, Any]) -> tuple[dict[str, Any], list[str], Listening]:
    """The production collector config, the notes on each change, and where it listens."""
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
        if eid.split("/", 1)[0] in DEBUG_EXTENSIONS:
            _keep_local(settings, f"extensions.{eid}", notes)
        else:
            _bind_pod_ip(settings, f"extensions.{eid}", notes)
    return config, notes, Listening(path, health_port, _self_metrics(config, notes))


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
        if not host or host in _LOCAL_HOSTS or re.fullmatch(r"[\d.]+|[0-9a-fA-F:]+", host) or host in hosts:
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
    for name, pipeline in _pipelines(config).items():
        exporters = [str(e) for e in (pipeline or {}).get("exporters") or []]
        if (
            name.partition("/")[0] == "traces"
            and exporters
            and all(e.split("/")[0] == "debug" for e in exporters)
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
        hosts |= {f"{name}.{ns}", f"{name}.{ns}.svc", f"{name}.{ns}.svc.cluster.local"}
        if ns == namespace:
            hosts.add(name)
    return hosts


def service_ports(config: dict[str, Any], metrics_port: int) -> list[Port]:
    """Service ports named so Istio knows the protocol (a gRPC port Istio takes for HTTP/1.1
    breaks OTLP/gRPC exports)."""
    ports: list[Port] = []
    for rid, receiver in (config.get("receivers") or {}).items():
        rtype = rid.split("/", 1)[0]
        suffix = rid.replace("/", "-").replace("_", "-")
        found: list[tuple[str, str, str | None]] = []
        if rtype == "otlp":
            protocols = _dig(receiver, "protocols") or {}
            for proto, port_name, app in (("grpc", "grpc-otlp", "grpc"), ("http", "http-otlp", "http")):
                if proto in protocols:
                    found.append((str(_dig(protocols, proto, "endpoint") or ""), port_name, app))
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


# -- Kubernetes resources --------------------------------------------------------------------------


def memory_bytes(quantity: Any) -> int | None:
    """A Kubernetes memory quantity (512Mi, 1Gi, 1G, 1048576) in bytes; None when unparsable."""
    found = _QUANTITY.match(str(quantity).strip()) if quantity is not None else None
    if not found:
        return None
    return int(float(found.group(1)) * _UNITS[found.group(2)])


def _raw_spec(bundle: Bundle, dep: Deployment, path: list[str]) -> Any:
    """A field of the Deployment as the last document that sets it wrote it (the model keeps
    only what resolution needs)."""
    value = None
    for doc in bundle.documents:
        meta = doc.data.get("metadata") or {}
        if doc.kind != "Deployment" or meta.get("name") != dep.name:
            continue
        if (meta.get("namespace") or "default") != dep.namespace:
            continue
        node: Any = doc.data
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:
            value = node
    return value


def _replicas(
    bundle: Bundle, dep: Deployment | None, hpa: HorizontalPodAutoscaler | None, options: Options
) -> tuple[int, list[str]]:
    if options.replicas is not None:
        note = f"{options.replicas} replicas from --collector-replicas."
        if options.replicas < MIN_HA_REPLICAS:
            note += " One replica is not highly available: a node drain or crash stops tracing."
        return options.replicas, [note]
    if hpa is not None:
        return hpa.min_replicas, [f"{hpa.min_replicas} replicas: minReplicas of {hpa.meta.ref}."]
    given = dep.replicas if dep is not None else 1
    if given < MIN_HA_REPLICAS:
        return MIN_HA_REPLICAS, [
            f"{MIN_HA_REPLICAS} replicas instead of {given}: one replica cannot survive a node drain "
            "(set --collector-replicas to choose)."
        ]
    return given, [f"{given} replicas from the input Deployment."]


def _anti_affinity(labels: dict[str, str]) -> dict[str, Any]:
    return {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {
                        "labelSelector": {"matchLabels": dict(labels)},
                        "topologyKey": "kubernetes.io/hostname",
                    },
                }
            ]
        }
    }


def render(bundle: Bundle, options: Options) -> Rendered | None:
    """The collector's manifests, or None when the input has no collector at all."""
    deps = [d for d in bundle.deployments if _is_collector(d)]
    dep = deps[0] if deps else None
    cm = _collector_map(bundle, dep.namespace if dep else None)
    if dep is None and cm is None:
        return None
    namespace = dep.namespace if dep else cm.namespace if cm else "istio-system"
    name = dep.name if dep else "otel-collector"
    selector = dict(dep.selector) if dep and dep.selector else {"app": name}
    pod_labels = {**(dep.pod_labels if dep else {}), **selector}
    out = Rendered(namespace=namespace)
    if len(deps) > 1:
        extra = ", ".join(d.meta.ref for d in deps[1:])
        out.not_rendered.append(f"only {dep.meta.ref if dep else name} is rendered; not: {extra}")

    # Deployment settings first: the memory limit bounds the collector config's memory_limiter.
    hpa = next(
        (
            h
            for h in bundle.hpas
            if h.target_name == name and h.meta.namespace == namespace and h.target_kind == "Deployment"
        ),
        None,
    )
    replicas, dep_notes = _replicas(bundle, dep, hpa, options)
    container = dep.containers[0] if dep and dep.containers else None
    if dep is not None:
        files = ", ".join(base(o.file) for o in [dep.meta.origin, *dep.meta.patches])
        merged = ", merged in that order like kubectl apply" if dep.meta.patches else ""
        dep_notes.insert(0, f"From {dep.meta.ref} ({files}{merged}).")
    resources = copy.deepcopy(container.resources) if container and container.resources else {}
    for part, values in DEFAULT_RESOURCES.items():
        if not resources.get(part):
            resources[part] = dict(values)
            shown = ", ".join(f"{k} {v}" for k, v in values.items())
            dep_notes.append(
                f"resources.{part} defaulted to {shown} (the HPA needs requests; limits bound the pod)."
            )
    limit = memory_bytes(resources["limits"].get("memory"))
    # ConfigMap
    raw = cm.collector_config if cm and cm.collector_config else MINIMAL_CONFIG
    config, config_notes, listening = collector_config(raw)
    if limit:
        _check_limiter(config, limit, config_notes)
    validate_config(config)  # raises if the input's config is refused; render warns on the final one
    cm_name = cm.name if cm else f"{name}-config"
    key = "config.yaml"
    cm_notes = [
        f"From {cm.meta.ref} ({base(cm.meta.origin.file)})."
        if cm
        else "No collector ConfigMap in the input: a minimal config (OTLP in, debug exporter out); add "
        "your backend's exporter."
    ]
    if cm and cm.meta.patches:
        later = ", ".join(base(o.file) for o in cm.meta.patches)
        cm_notes.append(
            f"Also defined in {later}: as with kubectl apply, the later document's {key} replaced the "
            f"earlier one ({base(cm.meta.origin.file)}), so only the last one is rendered."
        )
        lost = _replaced_settings(bundle, cm)
        if lost:
            cm_notes.append(f"Settings of the replaced {key} that are not in effect: {', '.join(lost)}.")
    cm_notes += config_notes
    cm_notes.append(
        f"Checked against the Collector {catalogue().version} catalogue (every component, field and "
        "removal of core and contrib; docs/collector.md)."
    )
    config_text = dump(config)
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": cm_name, "namespace": namespace, "labels": dict(selector)},
        "data": {key: config_text},
    }
    out.files["configmap.yaml"] = [Manifest(config_map, cm_notes)]
    out.config = config

    # Deployment
    env: list[dict[str, Any]] = [
        {"name": "MY_POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
    ]
    if limit:
        gomemlimit = f"{int(limit * GOMEMLIMIT_SHARE) // MIB}MiB"
        env.append({"name": "GOMEMLIMIT", "value": gomemlimit})
        dep_notes.append(
            f"GOMEMLIMIT={gomemlimit} (80% of the {resources['limits']['memory']} limit): the Go runtime "
            "collects garbage harder before the kernel OOM-kills the pod."
        )
    if container:
        env += [
            {"name": k, "value": v}
            for k, v in container.env.items()
            if v is not None and k not in ("MY_POD_IP", "GOMEMLIMIT")
        ]
    if container and container.image != options.image:
        dep_notes.append(
            f"image {container.image} -> {options.image} (a current release that accepts this config)."
        )
    out.ports = service_ports(config, listening.metrics_port)
    probe: dict[str, Any] = {"httpGet": {"path": listening.health_path, "port": listening.health_port}}
    strategy = _raw_spec(bundle, dep, ["spec", "strategy"]) if dep else None
    affinity = _raw_spec(bundle, dep, ["spec", "template", "spec", "affinity"]) if dep else None
    if not affinity:
        affinity = _anti_affinity(selector)
        dep_notes.append(
            "podAntiAffinity added: replicas on different nodes, so one node failure keeps tracing up."
        )
    dep_notes.append(
        "No spec.replicas: the HorizontalPodAutoscaler owns the replica count (with replicas here, every "
        f"kubectl apply would reset it); it starts and stays at >= {replicas}."
    )
    dep_notes.append(
        f"Probes call the health_check extension on {listening.health_port}; MY_POD_IP (downward API) is "
        "where every receiver listens."
    )
    # A config change changes the pod template, so the pods roll and load it.
    pod_annotations = {
        **(dep.annotations if dep else {}),
        "checksum/config": hashlib.sha256(config_text.encode()).hexdigest(),
    }
    # Other flags (feature gates, ...) are kept; --config points at the rendered ConfigMap.
    args = [f"--config={CONFIG_DIR}/{key}"]
    args += [a for a in (container.args if container else []) if not a.startswith("--config")]
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {**(dep.meta.labels if dep else {}), **selector},
        },
        "spec": {
            "selector": {"matchLabels": dict(selector)},
            "strategy": strategy
            or {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": pod_labels, "annotations": pod_annotations},
                "spec": {
                    "affinity": affinity,
                    "topologySpreadConstraints": [
                        {
                            "maxSkew": 1,
                            "topologyKey": "topology.kubernetes.io/zone",
                            "whenUnsatisfiable": "ScheduleAnyway",
                            "labelSelector": {"matchLabels": dict(selector)},
                        }
                    ],
                    "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [
                        {
                            "name": container.name if container and container.name else name,
                            "image": options.image,
                            "args": args,
                            "env": env,
                            "ports": [
                                {"name": p.name, "containerPort": p.port, "protocol": "TCP"}
                                if len(p.name) <= 15
                                else {"containerPort": p.port, "protocol": "TCP"}
                                for p in [*out.ports, Port("health", listening.health_port)]
                            ],
                            "resources": resources,
                            "readinessProbe": probe | {"periodSeconds": 10},
                            "livenessProbe": probe | {"initialDelaySeconds": 15, "periodSeconds": 15},
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]},
                            },
                            "volumeMounts": [{"name": "config", "mountPath": CONFIG_DIR, "readOnly": True}],
                        }
                    ],
                    "volumes": [{"name": "config", "configMap": {"name": cm_name}}],
                },
            },
        },
    }
    out.files["deployment.yaml"] = [Manifest(deployment, dep_notes)]

    # Service
    svc = _service(bundle, namespace, pod_labels)
    out.service = svc.name if svc else name
    out.service_labels = dict(svc.meta.labels) if svc and svc.meta.labels else dict(selector)
    svc_notes = [
        f"From {svc.meta.ref} ({base(svc.meta.origin.file)})."
        if svc
        else "Added: the sidecars and apps send here."
    ]
    old = {p.port: p.name for p in svc.ports} if svc else {}
    for p in out.ports:
        if p.port in old and old[p.port] != p.name:
            svc_notes.append(
                f"port {p.port}: name {old[p.port] or '(none)'} -> {p.name}"
                + (f", appProtocol {p.app_protocol}" if p.app_protocol else "")
                + (
                    " (Istio reads the protocol from the name prefix: a gRPC port it does not recognise "
                    "is proxied as HTTP/1.1 and OTLP/gRPC exports fail)."
                    if p.app_protocol == "grpc"
                    else " (Istio reads the protocol from the name prefix)."
                )
            )
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": out.service, "namespace": namespace, "labels": out.service_labels},
        "spec": {
            "selector": dict(selector),
            "ports": [
                {"name": p.name, "port": p.port, "targetPort": p.port, "protocol": "TCP"}
                | ({"appProtocol": p.app_protocol} if p.app_protocol else {})
                for p in out.ports
            ],
        },
    }
    out.files["service.yaml"] = [Manifest(service, svc_notes)]

    # PodDisruptionBudget and HorizontalPodAutoscaler
    pdb = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": dict(selector)}},
    }
    out.files["pdb.yaml"] = [
        Manifest(pdb, ["Node drains and upgrades evict one collector at a time; the others keep receiving."])
    ]
    out.files["hpa.yaml"] = [_hpa(name, namespace, replicas, hpa)]
    return out


def _leaves(node: Any, path: str = "") -> set[str]:
    if not isinstance(node, dict) or not node:
        return {path} if path else set()
    return {leaf for k, v in node.items() for leaf in _leaves(v, f"{path}.{k}" if path else str(k))}


def _replaced_settings(bundle: Bundle, cm: ConfigMap) -> list[str]:
    """Key paths set by the earlier definitions of the ConfigMap and not by the one in effect."""
    final = _leaves(cm.collector_config)
    earlier: set[str] = set()
    for doc in bundle.documents:
        meta = doc.data.get("metadata") or {}
        data = doc.data.get("data")
        if doc.kind != "ConfigMap" or meta.get("name") != cm.name or not isinstance(data, dict):
            continue
        if (meta.get("namespace") or "default") != cm.namespace:
            continue
        try:
            earlier |= _leaves(yaml.safe_load(str(data.get("config.yaml", ""))))
        except yaml.YAMLError:
            continue  # the loader reported it
    return sorted(earlier - final)


def _check_limiter(config: dict[str, Any], limit: int, notes: list[str]) -> None:
    """A memory_limiter above the container limit never refuses: the kernel kills first."""
    for pid, settings in (config.get("processors") or {}).items():
        if pid.split("/", 1)[0] != "memory_limiter" or not isinstance(settings, dict):
            continue
        limit_mib = settings.get("limit_mib")
        if isinstance(limit_mib, int) and limit_mib * MIB >= limit:
            settings["limit_mib"] = int(limit * GOMEMLIMIT_SHARE) // MIB
            settings.pop("spike_limit_mib", None)
            notes.append(
                f"processors.{pid}.limit_mib {limit_mib} -> {settings['limit_mib']}: it was not below the "
                "container's memory limit, so the pod would be OOM-killed before it refused data."
            )


def _service(bundle: Bundle, namespace: str, pod_labels: dict[str, str]) -> Service | None:
    return next(
        (
            s
            for s in bundle.services
            if s.namespace == namespace and s.selector and s.selector.items() <= pod_labels.items()
        ),
        None,
    )


def _hpa(name: str, namespace: str, replicas: int, given: HorizontalPodAutoscaler | None) -> Manifest:
    notes = []
    if given is not None:
        notes.append(f"From {given.meta.ref} ({base(given.meta.origin.file)}).")
        maximum = max(given.max_replicas, replicas)
        metrics = given.metrics or DEFAULT_HPA_METRICS
    else:
        notes.append("Added: scale on CPU (70%) and memory (80%) between the HA minimum and 10 replicas.")
        maximum = max(DEFAULT_MAX_REPLICAS, replicas)
        metrics = DEFAULT_HPA_METRICS
    if given is not None and given.min_replicas != replicas:
        notes.append(f"minReplicas {given.min_replicas} -> {replicas} (--collector-replicas).")
    data = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": given.meta.name if given else f"{name}-hpa", "namespace": namespace},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": replicas,
            "maxReplicas": maximum,
            "metrics": copy.deepcopy(metrics),
        },
    }
    return Manifest(data, notes)
