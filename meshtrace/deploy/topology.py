"""What the rendered collector needs around its config to work in a cluster: the two-tier topology
`tail_sampling` needs behind several replicas, volumes for `file_storage`, and the RBAC
`k8s_attributes` reads pods with. Works on the output of `collector.render`.

- tail_sampling decides on a whole trace, so every span of a trace must reach the same replica.
  Behind a plain Service and an HPA the spans of one trace land on different pods and each
  decides on a fragment. Upstream's answer (the loadbalancing exporter's README and the
  Collector's scaling docs) is two tiers: a scalable first tier whose `loadbalancing` exporter
  routes by traceID to a headless Service of sampling replicas, whose count is fixed (a change
  of the count moves traces between replicas while they are in flight).
- file_storage writes under `directory` (default /var/lib/otelcol/file_storage); with a read-only
  root filesystem it needs a writable volume there.
- k8s_attributes (named k8sattributes before contrib v0.146.0, PR #45901; the old name is a
  deprecated alias) watches pods, namespaces and replicasets through the API server: a
  ServiceAccount with the ClusterRole upstream's Helm chart grants for its preset."""

from __future__ import annotations

import copy
from typing import Any

from meshtrace.deploy import kube
from meshtrace.deploy.collector import CONFIG_KEY, Options, Rendered, image_release
from meshtrace.deploy.collector_check import validate_config
from meshtrace.deploy.collector_config import POD_IP, component_type, pipelines
from meshtrace.deploy.manifest import Manifest, dump

FILE_STORAGE_DIR = "/var/lib/otelcol/file_storage"
K8S_ATTRIBUTES = "k8s_attributes"
K8S_ATTRIBUTES_OLD = "k8sattributes"
K8S_ATTRIBUTES_SINCE = (0, 146)  # first contrib release with the new name
# What upstream's Helm chart grants for its kubernetesAttributes preset.
K8S_ATTRIBUTES_RULES: list[dict[str, Any]] = [
    {"apiGroups": [""], "resources": ["pods", "namespaces"], "verbs": ["get", "watch", "list"]},
    {"apiGroups": ["apps"], "resources": ["replicasets"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["extensions"], "resources": ["replicasets"], "verbs": ["get", "list", "watch"]},
]
RBAC_API = "rbac.authorization.k8s.io/v1"
SAMPLING_SUFFIX = "-sampling"
OTLP_GRPC = 4317


def _manifest(rendered: Rendered, file: str) -> Manifest:
    return rendered.files[file][0]


def _write_config(cm: Manifest, dep: Manifest, config: dict[str, Any]) -> None:
    """The ConfigMap's text and the pod template's checksum (pods roll on a change)."""
    text = dump(config)
    cm.data["data"][CONFIG_KEY] = text
    annotations = dep.data["spec"]["template"]["metadata"]["annotations"]
    annotations[kube.CHECKSUM] = kube.checksum(text)


def _rename_k8s_attributes(config: dict[str, Any], image: str, notes: list[str]) -> None:
    release = image_release(image)
    if release is None or release < K8S_ATTRIBUTES_SINCE:
        return
    processors = config.get("processors") or {}
    renames = {
        cid: K8S_ATTRIBUTES + cid[len(K8S_ATTRIBUTES_OLD) :]
        for cid in processors
        if component_type(cid) == K8S_ATTRIBUTES_OLD
    }
    if not renames:
        return
    config["processors"] = {renames.get(k, k): v for k, v in processors.items()}
    for pipeline in pipelines(config).values():
        if isinstance(pipeline, dict):
            pipeline["processors"] = [renames.get(p, p) for p in pipeline.get("processors") or []]
    for old, new in renames.items():
        notes.append(f"processors.{old} -> {new}: the current name (the old one is a deprecated alias).")


def _rbac(rendered: Rendered, dep: Manifest, name: str) -> None:
    """A ServiceAccount with read access to what k8s_attributes watches, used by the collector pods."""
    rendered.files["rbac.yaml"] = [
        _service_account(name, rendered.namespace),
        _cluster_role(name),
        _cluster_role_binding(name, rendered.namespace),
    ]
    kube.pod_of(dep.data)["serviceAccountName"] = name
    dep.notes.append(f"serviceAccountName {name}: the k8s_attributes processor's rights (rbac.yaml).")


def _service_account(name: str, namespace: str) -> Manifest:
    why = (
        "k8s_attributes reads pod, namespace and replicaset metadata from the API server; without "
        "these rights it logs errors and adds no attributes (the rules upstream's Helm chart grants)."
    )
    data = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace}}
    return Manifest(data, [why])


def _cluster_role(name: str) -> Manifest:
    data = {
        "apiVersion": RBAC_API,
        "kind": "ClusterRole",
        "metadata": {"name": name},
        "rules": copy.deepcopy(K8S_ATTRIBUTES_RULES),
    }
    return Manifest(data, ["Read-only: get, list and watch."])


def _cluster_role_binding(name: str, namespace: str) -> Manifest:
    data = {
        "apiVersion": RBAC_API,
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
    }
    return Manifest(data)


def _storage_volumes(config: dict[str, Any], dep: Manifest) -> None:
    directories: list[tuple[str, str]] = []
    for eid, settings in (config.get("extensions") or {}).items():
        if component_type(eid) != "file_storage":
            continue
        settings = settings if isinstance(settings, dict) else {}
        directory = str(settings.get("directory") or FILE_STORAGE_DIR)
        compaction = (settings.get("compaction") or {}).get("directory")
        for path in dict.fromkeys([directory, *([str(compaction)] if compaction else [])]):
            directories.append((eid, path))
    pod = kube.pod_of(dep.data)
    container = pod["containers"][0]
    for i, (eid, path) in enumerate(directories):
        volume = f"file-storage-{i}" if i else "file-storage"
        pod["volumes"].append({"name": volume, "emptyDir": {}})
        container["volumeMounts"].append({"name": volume, "mountPath": path})
        dep.notes.append(
            f"Volume {volume} at {path} for extensions.{eid}: the root filesystem is read-only. An emptyDir "
            "keeps queued data across container restarts, not across pod deletion; use a "
            "PersistentVolume for that."
        )


def _stage(pipeline: dict[str, Any]) -> int | None:
    procs = [str(p) for p in pipeline.get("processors") or []]
    return next((i for i, p in enumerate(procs) if component_type(p) == "tail_sampling"), None)


def _split(config: dict[str, Any], hostname: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(first tier, sampling tier) configs, or None when no pipeline tail-samples."""
    sampled = {n: p for n, p in pipelines(config).items() if isinstance(p, dict) and _stage(p) is not None}
    if not sampled:
        return None
    front, back = copy.deepcopy(config), copy.deepcopy(config)
    front["exporters"] = {
        "loadbalancing": {
            "routing_key": "traceID",
            "protocol": {"otlp": {"tls": {"insecure": True}}},
            "resolver": {"dns": {"hostname": hostname, "port": OTLP_GRPC}},
        },
        **{k: v for k, v in (config.get("exporters") or {}).items()},
    }
    back["receivers"] = {"otlp": {"protocols": {"grpc": {"endpoint": f"{POD_IP}:{OTLP_GRPC}"}}}}
    back_pipelines: dict[str, Any] = {}
    for name, pipeline in sampled.items():
        procs = [str(p) for p in pipeline.get("processors") or []]
        stage = _stage(pipeline) or 0
        limiter = [p for p in procs[:stage] if component_type(p) == "memory_limiter"]
        front["service"]["pipelines"][name] = {
            "receivers": pipeline.get("receivers"),
            "processors": procs[:stage],
            "exporters": ["loadbalancing"],
        }
        back_pipelines[name] = {
            "receivers": ["otlp"],
            "processors": limiter + procs[stage:],
            "exporters": pipeline.get("exporters"),
        }
    back["service"]["pipelines"] = back_pipelines
    for tier in (front, back):
        used: dict[str, set[str]] = {kind: set() for kind in ("receivers", "processors", "exporters")}
        for pipeline in pipelines(tier).values():
            for kind, ids in used.items():
                ids.update(str(c) for c in pipeline.get(kind) or [])
        for kind, ids in used.items():
            tier[kind] = {k: v for k, v in (tier.get(kind) or {}).items() if k in ids}
    return front, back


def _sampling_tier(rendered: Rendered, back: dict[str, Any], name: str, replicas: int) -> None:
    """The sampling replicas: a fixed-size Deployment behind a headless Service."""
    cm = _sampling_config_map(_manifest(rendered, "configmap.yaml"), name)
    dep = _sampling_deployment(_manifest(rendered, "deployment.yaml"), name, rendered.namespace, replicas)
    _write_config(cm, dep, back)
    _storage_volumes(back, dep)
    pdb = kube.pod_disruption_budget(name, rendered.namespace, _sampling_labels(name))
    rendered.files["sampling-configmap.yaml"] = [cm]
    rendered.files["sampling-deployment.yaml"] = [dep]
    rendered.files["sampling-service.yaml"] = [_sampling_service(rendered, name)]
    rendered.files["sampling-pdb.yaml"] = [Manifest(pdb, ["One sampling replica down at a time."])]


def _sampling_labels(name: str) -> dict[str, str]:
    return {"app": name}


def _sampling_config_map(front: Manifest, name: str) -> Manifest:
    """The first tier's ConfigMap renamed (its config is written by `_write_config`)."""
    cm = Manifest(copy.deepcopy(front.data), ["The sampling tier's config: OTLP from the first tier in."])
    cm.data["metadata"]["name"] = f"{name}-config"
    cm.data["metadata"]["labels"] = _sampling_labels(name)
    return cm


def _sampling_deployment(front: Manifest, name: str, namespace: str, replicas: int) -> Manifest:
    """The first tier's Deployment with its own labels, a fixed replica count, and OTLP/gRPC in."""
    labels = _sampling_labels(name)
    dep = Manifest(
        copy.deepcopy(front.data),
        [
            f"{replicas} sampling replicas, fixed (no HorizontalPodAutoscaler): the first tier's "
            "loadbalancing exporter spreads traces over the replicas it resolves, so a change of the "
            "count moves in-flight traces to another replica, which then decides on a fragment. "
            "Change the count in a quiet period."
        ],
    )
    dep.data["metadata"] = {"name": name, "namespace": namespace, "labels": dict(labels)}
    spec = dep.data["spec"]
    spec["replicas"] = replicas
    spec["selector"] = kube.match_labels(labels)
    template = spec["template"]
    template["metadata"]["labels"] = {
        **{k: v for k, v in template["metadata"]["labels"].items() if k != "app"},
        **labels,
    }
    _sampling_pod(template["spec"], labels, f"{name}-config")
    return dep


def _sampling_pod(pod: dict[str, Any], labels: dict[str, str], config_map: str) -> None:
    """The pod spec copied from the first tier, made the sampling tier's: no API rights (it runs no
    k8s_attributes), spread by its own labels, only the config volume, OTLP/gRPC in."""
    pod.pop("serviceAccountName", None)
    for term in pod.get("affinity", {}).get("podAntiAffinity", {}).values():
        for item in term:
            item.get("podAffinityTerm", {})["labelSelector"] = kube.match_labels(labels)
    for constraint in pod.get("topologySpreadConstraints", []):
        constraint["labelSelector"] = kube.match_labels(labels)
    pod["volumes"] = [kube.config_volume(config_map)]
    container = pod["containers"][0]
    container["volumeMounts"] = [m for m in container["volumeMounts"] if m["name"] == kube.CONFIG_VOLUME]
    ports = [p for p in container["ports"] if p.get("name") in ("http-metrics", "health")]
    container["ports"] = [{"name": "grpc-otlp", "containerPort": OTLP_GRPC, "protocol": "TCP"}, *ports]


def _sampling_service(rendered: Rendered, name: str) -> Manifest:
    metrics = next(p for p in rendered.ports if p.name == "http-metrics")
    ports = [
        kube.service_port("grpc-otlp", OTLP_GRPC, "grpc"),
        kube.service_port(metrics.name, metrics.port, "http"),
    ]
    # Headless: DNS answers every replica's address, which the resolver turns into its ring.
    # The first tier's Service labels: the collector ServiceMonitor scrapes this tier too.
    data = kube.service(
        name, rendered.namespace, _sampling_labels(name), ports, rendered.service_labels, headless=True
    )
    return Manifest(
        data,
        [
            "Headless: the first tier's loadbalancing exporter resolves each replica.",
            f"Labelled like the first tier's Service, so the collector ServiceMonitor scrapes its "
            f"self-metrics too (job {name!r}).",
        ],
    )


def apply(rendered: Rendered, options: Options) -> list[tuple[str, str]]:
    """Adds what the rendered collector needs to work in a cluster; returns warnings (code, text)."""
    warnings: list[tuple[str, str]] = []
    cm = _manifest(rendered, "configmap.yaml")
    dep = _manifest(rendered, "deployment.yaml")
    name = str(dep.data["metadata"]["name"])
    config = copy.deepcopy(rendered.config)
    _rename_k8s_attributes(config, options.image, cm.notes)
    sampling = f"{name}{SAMPLING_SUFFIX}"
    hostname = f"{sampling}.{rendered.namespace}.svc.cluster.local"
    tiers = _split(config, hostname)
    front = tiers[0] if tiers else config
    if any(component_type(p) == K8S_ATTRIBUTES for p in front.get("processors") or {}):
        _rbac(rendered, dep, name)
    if tiers is not None:
        front, back = tiers
        hpa = _manifest(rendered, "hpa.yaml").data["spec"]
        replicas = int(hpa["minReplicas"])
        cm.notes.append(
            f"Two tiers for tail_sampling: this scalable tier routes every span by traceID "
            f"(loadbalancing exporter) to {hostname}, so all spans of a trace reach the same sampling "
            "replica; behind one Service and an HPA they would land on different pods, each deciding "
            "on a fragment."
        )
        validate_config(back)  # raises if the tier's config is refused; render reports its warnings
        rendered.sampling_config = back
        _sampling_tier(rendered, back, sampling, replicas)
        warnings.append(
            (
                "sampling-tier-fixed",
                f"tail_sampling runs in {sampling} ({replicas} replicas, no autoscaling): size it for the "
                "span rate and decision_wait; resizing moves in-flight traces between replicas",
            )
        )
    validate_config(front)
    _write_config(cm, dep, front)
    _storage_volumes(front, dep)
    rendered.config = front
    return warnings
