"""Kubernetes objects that several parts of `render` write (ConfigMap, Service and its ports,
PodDisruptionBudget, a pod's config volume and checksum), and how notes name the input's objects.
Plain dicts with keys in the order the output has always written them: output stays byte-identical."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from meshtrace.config.loader import Bundle
from meshtrace.config.model import Document, Meta

CONFIG_VOLUME = "config"
CHECKSUM = "checksum/config"  # a pod template annotation: a config change rolls the pods


def base(file: str) -> str:
    """A file name without its folder, so output does not depend on where the input lives."""
    return Path(file).name


def input_ref(meta: Meta) -> str:
    """How a note names an input object: `Kind namespace/name (file)`."""
    return f"{meta.ref} ({base(meta.origin.file)})"


def definitions(bundle: Bundle, kind: str, name: str, namespace: str) -> Iterator[Document]:
    """The input's documents that define one object, in input order and as written (the model
    keeps only the merged fields resolution needs)."""
    for doc in bundle.documents:
        meta = doc.data.get("metadata") or {}
        if (
            doc.kind == kind
            and meta.get("name") == name
            and (meta.get("namespace") or "default") == namespace
        ):
            yield doc


def checksum(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def match_labels(labels: Mapping[str, str]) -> dict[str, Any]:
    return {"matchLabels": dict(labels)}


def config_map(name: str, namespace: str, labels: Mapping[str, str], data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "data": data,
    }


def service_port(name: str, port: int, app_protocol: str | None = None) -> dict[str, Any]:
    """A Service port; `appProtocol` tells Istio the protocol when the name prefix does not."""
    return {"name": name, "port": port, "targetPort": port, "protocol": "TCP"} | (
        {"appProtocol": app_protocol} if app_protocol else {}
    )


def service(
    name: str,
    namespace: str,
    selector: Mapping[str, str],
    ports: list[dict[str, Any]],
    labels: Mapping[str, str] | None = None,
    headless: bool = False,
) -> dict[str, Any]:
    """A Service; headless: DNS answers every ready pod's address instead of one virtual IP."""
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if labels is not None:
        metadata["labels"] = dict(labels)
    spec: dict[str, Any] = {"clusterIP": "None"} if headless else {}
    spec |= {"selector": dict(selector), "ports": ports}
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata, "spec": spec}


def pod_disruption_budget(name: str, namespace: str, labels: Mapping[str, str]) -> dict[str, Any]:
    """At most one pod evicted at a time (node drains, upgrades)."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"maxUnavailable": 1, "selector": match_labels(labels)},
    }


def pod_security() -> dict[str, Any]:
    """The pod securityContext of every rendered workload (the restricted Pod Security Standard)."""
    return {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}


def pod_of(workload: dict[str, Any]) -> dict[str, Any]:
    """A Deployment's pod spec (spec.template.spec), to add to."""
    pod: dict[str, Any] = workload["spec"]["template"]["spec"]
    return pod


def config_volume(config_map_name: str) -> dict[str, Any]:
    return {"name": CONFIG_VOLUME, "configMap": {"name": config_map_name}}


def config_mount(path: str) -> dict[str, Any]:
    return {"name": CONFIG_VOLUME, "mountPath": path, "readOnly": True}
