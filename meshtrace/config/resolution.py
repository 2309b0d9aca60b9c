"""The state of one workload's resolution shared by the tracing, legacy tracing and metrics
resolvers: the inputs (bundle, mesh, workload labels, istiod's environment), the source of every
value resolved and the notes for people."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from meshtrace.config.loader import Bundle
from meshtrace.config.mesh import MeshConfig
from meshtrace.config.model import Source, Telemetry
from meshtrace.document import DIRECTIONS

MODES = {"CLIENT": ("client",), "SERVER": ("server",), "CLIENT_AND_SERVER": DIRECTIONS}


@dataclass
class Value:
    """A resolved value and where it came from."""

    value: Any
    source: Source


def default(what: str) -> Source:
    return Source("Istio default", None, what)


def tel_source(tel: Telemetry, path: str) -> Source:
    return Source(tel.meta.ref, tel.meta.origin.file, path)


def whole(value: Any) -> int | None:
    """A non-negative integer written as a number or digits, else None (YAML may hold anything)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


class Resolution:
    """One workload's inputs, and what resolving it records (`sources`, `warnings`)."""

    def __init__(
        self,
        bundle: Bundle,
        workload: str,
        namespace: str,
        labels: Mapping[str, str] | None,
        env: Mapping[str, str] | None,
    ) -> None:
        self.bundle = bundle
        self.mesh: MeshConfig = bundle.mesh
        self.workload, self.namespace = workload, namespace
        self.env = dict(env or {})
        self.sources: dict[str, Source] = {}
        self.warnings: list[str] = []
        self.deployment = bundle.deployment(workload, namespace)
        if labels is not None:
            self.labels = dict(labels)
            self.sources["workload.labels"] = Source(
                "given labels", None, "--labels or the registering sidecar"
            )
        elif self.deployment is not None:
            self.labels = dict(self.deployment.pod_labels)
            self.sources["workload.labels"] = Source(
                self.deployment.meta.ref, self.deployment.meta.origin.file, "spec.template.metadata.labels"
            )
        else:
            self.labels = {"app": workload}
            self.sources["workload.labels"] = Source("assumed", None, None)
            elsewhere = sorted(d.namespace for d in bundle.deployments if d.name == workload)
            hint = f" (a Deployment {workload} exists in: {', '.join(elsewhere)})" if elsewhere else ""
            self.warnings.append(
                f"no Deployment {namespace}/{workload} and no labels given: "
                f"assuming labels app={workload}{hint}"
            )
        self.annotations = dict(self.deployment.annotations) if self.deployment else {}
        injected, why = bundle.sidecar_injected(namespace, self.labels, self.annotations)
        if injected is False:
            self.warnings.append(f"no sidecar would be injected ({why}): in Istio this workload has no proxy")

    def note(self, text: str) -> None:
        if text not in self.warnings:
            self.warnings.append(text)
