"""The Kubernetes objects that run the OpenTelemetry Collector highly available (ConfigMap,
Deployment, Service, PodDisruptionBudget, HorizontalPodAutoscaler), one builder each, from the
input's collector objects; the config inside the ConfigMap is `collector_config`'s. Pure functions
over a loaded `Bundle`; docs/upstream-behaviour.md §4 is the source of the names and defaults used."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

from meshtrace.collector.catalogue import catalogue
from meshtrace.config.loader import Bundle
from meshtrace.config.model import (
    ConfigMap,
    Container,
    Deployment,
    Document,
    HorizontalPodAutoscaler,
    Service,
)
from meshtrace.deploy import kube
from meshtrace.deploy.collector_check import validate_config
from meshtrace.deploy.collector_config import (
    MINIMAL_CONFIG,
    Listening,
    Port,
    collector_config,
    service_ports,
    soft_limit_mib,
)
from meshtrace.deploy.kube import base, input_ref, match_labels
from meshtrace.deploy.manifest import Manifest, dump

# A current contrib release: it accepts `otlp_grpc`/`otlp_http` (v0.144+), has no `logging`
# exporter (removed in v0.111) and reads self-metrics settings only from `readers`.
DEFAULT_IMAGE = "otel/opentelemetry-collector-contrib:0.156.0"
MIN_VERSION = (0, 144)  # the first release that knows the exporter names written here
IMAGE_MARKERS = ("opentelemetry-collector", "otelcol")
CONFIG_DIR = "/conf"
CONFIG_KEY = "config.yaml"
MIN_HA_REPLICAS = 2
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
# An image tag's release: `:0.150.0`, `:v0.150`, `:0.150.0-amd64`, `:0.150.0@sha256:...`.
_RELEASE = re.compile(r":v?(\d+)\.(\d+)(?:\.\d+)?(?:[-@].*)?$")
_QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|K|M|G|T)?$")
_UNITS = {None: 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "K": 10**3}
_UNITS |= {"M": 10**6, "G": 10**9, "T": 10**12}


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


def image_release(image: str) -> tuple[int, int] | None:
    """(major, minor) of the release an image's tag names; None for `latest`, a bare digest or
    any tag that is no release."""
    found = _RELEASE.search(image)
    return (int(found.group(1)), int(found.group(2))) if found else None


def check_image(image: str) -> None:
    """Reject an image whose tag is a release older than the config names need."""
    release = image_release(image)
    if release is not None and release < MIN_VERSION:
        raise ValueError(
            f"{image}: the rendered config uses exporter names (otlp_grpc, otlp_http) that Collector "
            f"releases before v{MIN_VERSION[0]}.{MIN_VERSION[1]}.0 reject; use {DEFAULT_IMAGE} or newer"
        )


def memory_bytes(quantity: Any) -> int | None:
    """A Kubernetes memory quantity (512Mi, 1Gi, 1G, 1048576) in bytes; None when unparsable."""
    found = _QUANTITY.match(str(quantity).strip()) if quantity is not None else None
    if not found:
        return None
    return int(float(found.group(1)) * _UNITS[found.group(2)])


def render(bundle: Bundle, options: Options) -> Rendered | None:
    """The collector's manifests, or None when the input has no collector at all."""
    source = _source(bundle)
    if source is None:
        return None
    out = Rendered(namespace=source.namespace, not_rendered=source.not_rendered)
    # Deployment settings first: the memory limit bounds the collector config's memory_limiter.
    replicas, dep_notes = _replicas(source, options)
    resources = _resources(source.container, dep_notes)
    limit = memory_bytes(resources["limits"].get("memory"))
    raw = source.config_map.collector_config if source.config_map else None
    out.config, config_notes, listening = collector_config(raw or MINIMAL_CONFIG, limit)
    validate_config(out.config)  # raises if the input's config is refused; render warns on the final one
    config_text = dump(out.config)
    out.files["configmap.yaml"] = [_config_map(bundle, source, config_text, config_notes)]
    out.ports = service_ports(out.config, listening.metrics_port)
    container = _container(source, options, out.ports, listening, resources, dep_notes)
    pod = _pod_spec(bundle, source, container, dep_notes)
    out.files["deployment.yaml"] = [
        _deployment(bundle, source, pod, config_text, replicas, listening, dep_notes)
    ]
    given = _input_service(bundle, source)
    out.service = given.name if given else source.name
    out.service_labels = dict(given.meta.labels) if given and given.meta.labels else dict(source.selector)
    out.files["service.yaml"] = [_service(out, source.selector, given)]
    out.files["pdb.yaml"] = [_pdb(source)]
    out.files["hpa.yaml"] = [_hpa(source.name, source.namespace, replicas, source.hpa)]
    return out


# -- the input's collector --------------------------------------------------------------------------


@dataclass
class _Source:
    """The input's collector objects and the names and labels the rendered ones keep."""

    deployment: Deployment | None
    config_map: ConfigMap | None
    hpa: HorizontalPodAutoscaler | None
    name: str
    namespace: str
    selector: dict[str, str]
    pod_labels: dict[str, str]
    not_rendered: list[str]

    @property
    def container(self) -> Container | None:
        dep = self.deployment
        return dep.containers[0] if dep and dep.containers else None

    @property
    def config_map_name(self) -> str:
        return self.config_map.name if self.config_map else f"{self.name}-config"


def _is_collector(dep: Deployment) -> bool:
    return any(any(m in c.image for m in IMAGE_MARKERS) for c in dep.containers)


def _collector_map(bundle: Bundle, namespace: str | None) -> ConfigMap | None:
    maps = [m for m in bundle.config_maps if m.collector_config is not None]
    maps = [m for m in maps if namespace is None or m.namespace == namespace]
    maps.sort(key=lambda m: "collector" not in m.name)  # the seed's otel-collector-config first
    return maps[0] if maps else None


def _source(bundle: Bundle) -> _Source | None:
    deps = [d for d in bundle.deployments if _is_collector(d)]
    dep = deps[0] if deps else None
    cm = _collector_map(bundle, dep.namespace if dep else None)
    if dep is None and cm is None:
        return None
    namespace = dep.namespace if dep else cm.namespace if cm else "istio-system"
    name = dep.name if dep else "otel-collector"
    selector = dict(dep.selector) if dep and dep.selector else {"app": name}
    hpa = next(
        (
            h
            for h in bundle.hpas
            if h.target_name == name and h.meta.namespace == namespace and h.target_kind == "Deployment"
        ),
        None,
    )
    not_rendered = []
    if len(deps) > 1:
        extra = ", ".join(d.meta.ref for d in deps[1:])
        not_rendered.append(f"only {dep.meta.ref if dep else name} is rendered; not: {extra}")
    pod_labels = {**(dep.pod_labels if dep else {}), **selector}
    return _Source(dep, cm, hpa, name, namespace, selector, pod_labels, not_rendered)


def _raw_spec(bundle: Bundle, dep: Deployment, path: list[str]) -> Any:
    """A field of the Deployment as the last document that sets it wrote it (the model keeps
    only what resolution needs)."""
    value = None
    for doc in kube.definitions(bundle, "Deployment", dep.name, dep.namespace):
        node: Any = doc.data
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:
            value = node
    return value


def _leaves(node: Any, path: str = "") -> set[str]:
    if not isinstance(node, dict) or not node:
        return {path} if path else set()
    return {leaf for k, v in node.items() for leaf in _leaves(v, f"{path}.{k}" if path else str(k))}


def _replaced_settings(bundle: Bundle, cm: ConfigMap) -> list[str]:
    """Key paths set by the earlier definitions of the ConfigMap and not by the one in effect."""
    final = _leaves(cm.collector_config)
    earlier: set[str] = set()
    for _doc, config in config_definitions(bundle, cm):
        earlier |= _leaves(config)
    return sorted(earlier - final)


def config_definitions(bundle: Bundle, cm: ConfigMap) -> Iterator[tuple[Document, Any]]:
    """Each document that defines the collector ConfigMap, with its config.yaml parsed (the
    model keeps only the one in effect); documents whose config does not parse are skipped."""
    for doc in kube.definitions(bundle, "ConfigMap", cm.name, cm.namespace):
        data = doc.data.get("data")
        if not isinstance(data, dict):
            continue
        try:
            config = yaml.safe_load(str(data.get(CONFIG_KEY, "")))
        except yaml.YAMLError:
            continue  # the loader reported it
        yield doc, config


def _input_service(bundle: Bundle, source: _Source) -> Service | None:
    """The input's Service in front of the collector pods."""
    return next(
        (
            s
            for s in bundle.services
            if s.namespace == source.namespace
            and s.selector
            and s.selector.items() <= source.pod_labels.items()
        ),
        None,
    )


# -- ConfigMap ---------------------------------------------------------------------------------------


def _config_map(bundle: Bundle, source: _Source, config_text: str, config_notes: list[str]) -> Manifest:
    cm = source.config_map
    notes = [
        f"From {input_ref(cm.meta)}."
        if cm
        else "No collector ConfigMap in the input: a minimal config (OTLP in, debug exporter out); add "
        "your backend's exporter."
    ]
    if cm and cm.meta.patches:
        later = ", ".join(base(o.file) for o in cm.meta.patches)
        notes.append(
            f"Also defined in {later}: as with kubectl apply, the later document's {CONFIG_KEY} replaced the "
            f"earlier one ({base(cm.meta.origin.file)}), so only the last one is rendered."
        )
        lost = _replaced_settings(bundle, cm)
        if lost:
            notes.append(f"Settings of the replaced {CONFIG_KEY} that are not in effect: {', '.join(lost)}.")
    notes += config_notes
    notes.append(
        f"Checked against the Collector {catalogue().version} catalogue (every component, field and "
        "removal of core and contrib; docs/collector.md)."
    )
    data = kube.config_map(
        source.config_map_name, source.namespace, source.selector, {CONFIG_KEY: config_text}
    )
    return Manifest(data, notes)


# -- Deployment --------------------------------------------------------------------------------------


def _replicas(source: _Source, options: Options) -> tuple[int, list[str]]:
    """The HA replica count and the Deployment's first notes (where it comes from, why that count)."""
    dep = source.deployment
    notes = []
    if dep is not None:
        files = ", ".join(base(o.file) for o in [dep.meta.origin, *dep.meta.patches])
        merged = ", merged in that order like kubectl apply" if dep.meta.patches else ""
        notes.append(f"From {dep.meta.ref} ({files}{merged}).")
    if options.replicas is not None:
        note = f"{options.replicas} replicas from --collector-replicas."
        if options.replicas < MIN_HA_REPLICAS:
            note += " One replica is not highly available: a node drain or crash stops tracing."
        return options.replicas, [*notes, note]
    if source.hpa is not None:
        hpa = source.hpa
        return hpa.min_replicas, [*notes, f"{hpa.min_replicas} replicas: minReplicas of {hpa.meta.ref}."]
    given = dep.replicas if dep is not None else 1
    if given < MIN_HA_REPLICAS:
        return MIN_HA_REPLICAS, [
            *notes,
            f"{MIN_HA_REPLICAS} replicas instead of {given}: one replica cannot survive a node drain "
            "(set --collector-replicas to choose).",
        ]
    return given, [*notes, f"{given} replicas from the input Deployment."]


def _resources(given: Container | None, notes: list[str]) -> dict[str, Any]:
    """The input container's requests and limits, each missing part defaulted."""
    resources = copy.deepcopy(given.resources) if given and given.resources else {}
    for part, values in DEFAULT_RESOURCES.items():
        if not resources.get(part):
            resources[part] = dict(values)
            shown = ", ".join(f"{k} {v}" for k, v in values.items())
            notes.append(
                f"resources.{part} defaulted to {shown} (the HPA needs requests; limits bound the pod)."
            )
    return resources


def _env(given: Container | None, resources: dict[str, Any], notes: list[str]) -> list[dict[str, Any]]:
    """The pod's address (every receiver listens there), GOMEMLIMIT, then the input's variables."""
    env: list[dict[str, Any]] = [
        {"name": "MY_POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
    ]
    limit = memory_bytes(resources["limits"].get("memory"))
    if limit:
        gomemlimit = f"{soft_limit_mib(limit)}MiB"
        env.append({"name": "GOMEMLIMIT", "value": gomemlimit})
        notes.append(
            f"GOMEMLIMIT={gomemlimit} (80% of the {resources['limits']['memory']} limit): the Go runtime "
            "collects garbage harder before the kernel OOM-kills the pod."
        )
    if given:
        env += [
            {"name": k, "value": v}
            for k, v in given.env.items()
            if v is not None and k not in ("MY_POD_IP", "GOMEMLIMIT")
        ]
    return env


def _container(
    source: _Source,
    options: Options,
    ports: list[Port],
    listening: Listening,
    resources: dict[str, Any],
    notes: list[str],
) -> dict[str, Any]:
    given = source.container
    env = _env(given, resources, notes)
    if given and given.image != options.image:
        notes.append(f"image {given.image} -> {options.image} (a current release that accepts this config).")
    # Other flags (feature gates, ...) are kept; --config points at the rendered ConfigMap.
    args = [f"--config={CONFIG_DIR}/{CONFIG_KEY}"]
    args += [a for a in (given.args if given else []) if not a.startswith("--config")]
    probe: dict[str, Any] = {"httpGet": {"path": listening.health_path, "port": listening.health_port}}
    return {
        "name": given.name if given and given.name else source.name,
        "image": options.image,
        "args": args,
        "env": env,
        "ports": [
            # A container port name is at most 15 characters; a longer one stays unnamed.
            {"name": p.name, "containerPort": p.port, "protocol": "TCP"}
            if len(p.name) <= 15
            else {"containerPort": p.port, "protocol": "TCP"}
            for p in [*ports, Port("health", listening.health_port)]
        ],
        "resources": resources,
        "readinessProbe": probe | {"periodSeconds": 10},
        "livenessProbe": probe | {"initialDelaySeconds": 15, "periodSeconds": 15},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [kube.config_mount(CONFIG_DIR)],
    }


def _anti_affinity(labels: dict[str, str]) -> dict[str, Any]:
    return {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {
                        "labelSelector": match_labels(labels),
                        "topologyKey": "kubernetes.io/hostname",
                    },
                }
            ]
        }
    }


def _pod_spec(bundle: Bundle, source: _Source, container: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    """Replicas spread over nodes and zones, the input's affinity kept when it has one."""
    dep = source.deployment
    affinity = _raw_spec(bundle, dep, ["spec", "template", "spec", "affinity"]) if dep else None
    if not affinity:
        affinity = _anti_affinity(source.selector)
        notes.append(
            "podAntiAffinity added: replicas on different nodes, so one node failure keeps tracing up."
        )
    return {
        "affinity": affinity,
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": match_labels(source.selector),
            }
        ],
        "securityContext": kube.pod_security(),
        "containers": [container],
        "volumes": [kube.config_volume(source.config_map_name)],
    }


def _deployment(
    bundle: Bundle,
    source: _Source,
    pod: dict[str, Any],
    config_text: str,
    replicas: int,
    listening: Listening,
    notes: list[str],
) -> Manifest:
    dep = source.deployment
    strategy = _raw_spec(bundle, dep, ["spec", "strategy"]) if dep else None
    notes.append(
        "No spec.replicas: the HorizontalPodAutoscaler owns the replica count (with replicas here, every "
        f"kubectl apply would reset it); it starts and stays at >= {replicas}."
    )
    notes.append(
        f"Probes call the health_check extension on {listening.health_port}; MY_POD_IP (downward API) is "
        "where every receiver listens."
    )
    annotations = {**(dep.annotations if dep else {}), kube.CHECKSUM: kube.checksum(config_text)}
    data = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": source.name,
            "namespace": source.namespace,
            "labels": {**(dep.meta.labels if dep else {}), **source.selector},
        },
        "spec": {
            "selector": match_labels(source.selector),
            "strategy": strategy
            or {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {"metadata": {"labels": source.pod_labels, "annotations": annotations}, "spec": pod},
        },
    }
    return Manifest(data, notes)


# -- Service, PodDisruptionBudget, HorizontalPodAutoscaler ---------------------------------------------


def _service(out: Rendered, selector: dict[str, str], given: Service | None) -> Manifest:
    """The Service the sidecars and apps send to, its ports named for Istio's protocol detection."""
    notes = [f"From {input_ref(given.meta)}." if given else "Added: the sidecars and apps send here."]
    old = {p.port: p.name for p in given.ports} if given else {}
    for p in out.ports:
        if p.port in old and old[p.port] != p.name:
            notes.append(
                f"port {p.port}: name {old[p.port] or '(none)'} -> {p.name}"
                + (f", appProtocol {p.app_protocol}" if p.app_protocol else "")
                + (
                    " (Istio reads the protocol from the name prefix: a gRPC port it does not recognise "
                    "is proxied as HTTP/1.1 and OTLP/gRPC exports fail)."
                    if p.app_protocol == "grpc"
                    else " (Istio reads the protocol from the name prefix)."
                )
            )
    ports = [kube.service_port(p.name, p.port, p.app_protocol) for p in out.ports]
    return Manifest(kube.service(out.service, out.namespace, selector, ports, out.service_labels), notes)


def _pdb(source: _Source) -> Manifest:
    return Manifest(
        kube.pod_disruption_budget(source.name, source.namespace, source.selector),
        ["Node drains and upgrades evict one collector at a time; the others keep receiving."],
    )


def _hpa(name: str, namespace: str, replicas: int, given: HorizontalPodAutoscaler | None) -> Manifest:
    notes = []
    if given is not None:
        notes.append(f"From {input_ref(given.meta)}.")
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
