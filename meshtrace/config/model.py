"""Typed models of the Kubernetes and Istio resources meshtrace reads.

Plain dataclasses: the loader (`loader.py`) builds them from YAML, resolution (`resolve.py`),
lint (`lint.py`), the control plane and `meshtrace up` read them. Every resource remembers where
it was defined (`Origin`) so results and findings can point at a file and a document.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from meshtrace.document import Source as Source  # provenance, as the config document carries it

Severity = Literal["error", "warning", "info"]


def list_at(node: Any, key: str) -> list[Any]:
    """`node[key]` when `node` is a mapping holding a list there, else []: YAML may hold any shape."""
    value = node.get(key) if isinstance(node, dict) else None
    return value if isinstance(value, list) else []


def map_at(node: Any, key: str) -> dict[str, Any]:
    """`node[key]` when `node` is a mapping holding a mapping there, else {}."""
    value = node.get(key) if isinstance(node, dict) else None
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class Origin:
    """Where a document was read: the file (as given or found in a folder), its 0-based document
    index within the file and the line the document starts on (1-based)."""

    file: str
    document: int
    line: int = 1


@dataclass
class Finding:
    """One problem found while loading, resolving or linting (the `lint -o json` object)."""

    code: str
    severity: Severity
    message: str
    resource: str = ""  # "Kind namespace/name", "" when the document has no identity
    file: str = ""
    path: str = ""  # key path inside the document, e.g. spec.tracing[0].randomSamplingPercentage
    fix: str = ""
    document: int | None = None
    line: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "severity": self.severity,
            "resource": self.resource,
            "file": self.file,
            "path": self.path,
            "message": self.message,
            "fix": self.fix,
            "document": self.document,
            "line": self.line,
        }


@dataclass
class Meta:
    kind: str
    api_version: str
    name: str
    namespace: str
    labels: dict[str, str]
    annotations: dict[str, str]
    creation_timestamp: str | None
    origin: Origin
    # Later documents with the same kind/namespace/name merged into this one, in order.
    patches: list[Origin] = field(default_factory=list)

    @property
    def ref(self) -> str:
        """ "Kind namespace/name", the `resource` of findings and sources."""
        return f"{self.kind} {self.namespace}/{self.name}" if self.namespace else f"{self.kind} {self.name}"


@dataclass
class Resource:
    """What every modelled Kubernetes object has: its metadata (and so a name and namespace)."""

    meta: Meta

    @property
    def name(self) -> str:
        return self.meta.name

    @property
    def namespace(self) -> str:
        return self.meta.namespace


@dataclass
class ContainerPort:
    container_port: int
    name: str = ""
    protocol: str = "TCP"


@dataclass
class Container:
    name: str
    image: str
    command: list[str]
    args: list[str]
    # Literal `value`s only; `valueFrom` entries are kept as None (resolved by Kubernetes).
    env: dict[str, str | None]
    ports: list[ContainerPort]
    resources: dict[str, Any]


@dataclass
class Deployment(Resource):
    replicas: int
    selector: dict[str, str]  # spec.selector.matchLabels
    pod_labels: dict[str, str]  # spec.template.metadata.labels: what Telemetry selectors match
    annotations: dict[str, str]  # spec.template.metadata.annotations (proxy.istio.io/config, ...)
    containers: list[Container]
    service_account: str = "default"  # spec.template.spec.serviceAccountName: the workload identity


@dataclass
class ServicePort:
    port: int
    name: str = ""
    target_port: int | str | None = None  # None: same as `port`
    app_protocol: str | None = None
    protocol: str = "TCP"


@dataclass
class Service(Resource):
    selector: dict[str, str]
    ports: list[ServicePort]
    type: str = "ClusterIP"

    @property
    def host(self) -> str:
        return f"{self.meta.name}.{self.meta.namespace}.svc.cluster.local"


@dataclass
class Namespace(Resource):
    @property
    def labels(self) -> dict[str, str]:
        return self.meta.labels

    @property
    def injection(self) -> bool | None:
        """The `istio-injection` label: True enabled, False disabled, None unset."""
        value = self.meta.labels.get("istio-injection")
        return None if value is None else value == "enabled"


@dataclass
class ConfigMap(Resource):
    data: dict[str, str]
    # The OpenTelemetry Collector config it holds (`data['config.yaml']`, else another YAML value
    # with receivers and service), parsed; None when it holds none.
    collector_config: dict[str, Any] | None = None


@dataclass
class SecurityResource(Resource):
    """PeerAuthentication, AuthorizationPolicy (security.istio.io) or DestinationRule
    (networking.istio.io): kept as the spec; `meshtrace.config.security` resolves them."""

    spec: dict[str, Any]

    @property
    def match_labels(self) -> dict[str, str] | None:
        """The workload selector's labels, None when the resource has no selector."""
        selector = self.spec.get("selector")
        if not isinstance(selector, dict):
            return None
        return {str(k): str(v) for k, v in map_at(selector, "matchLabels").items()}


@dataclass
class Telemetry(Resource):
    spec: dict[str, Any]
    # False when the CRD schema rejects the resource: the API server would not have admitted it,
    # so resolution skips it (lint reports why).
    valid: bool = True

    @property
    def match_labels(self) -> dict[str, str]:
        return {str(k): str(v) for k, v in map_at(map_at(self.spec, "selector"), "matchLabels").items()}

    @property
    def target_refs(self) -> list[dict[str, Any]]:
        refs = list(list_at(self.spec, "targetRefs"))
        if isinstance(self.spec.get("targetRef"), dict):
            refs.append(self.spec["targetRef"])
        return [r for r in refs if isinstance(r, dict)]

    @property
    def namespace_wide(self) -> bool:
        """No workload selector and no targetRefs: applies to the whole namespace."""
        return not self.match_labels and not self.target_refs

    def entries(self, section: str) -> list[tuple[int, dict[str, Any]]]:
        """(index, entry) of `spec.<section>` (tracing, metrics, accessLogging) that are mappings."""
        return [(i, e) for i, e in enumerate(list_at(self.spec, section)) if isinstance(e, dict)]

    @property
    def sort_key(self) -> tuple[str, str, str]:
        """Istio's order (sortConfigByCreationTime): creationTimestamp, then name, then namespace.
        A missing timestamp sorts first, as Go's zero time does."""
        return (self.meta.creation_timestamp or "", self.meta.name, self.meta.namespace)


@dataclass
class IstioOperator(Resource):
    mesh_config: dict[str, Any]  # spec.meshConfig


@dataclass
class HorizontalPodAutoscaler(Resource):
    target_kind: str
    target_name: str
    min_replicas: int
    max_replicas: int
    metrics: list[dict[str, Any]]


@dataclass
class Alert:
    group: str
    name: str
    expr: str
    path: str  # key path inside the PrometheusRule


@dataclass
class PrometheusRule(Resource):
    groups: list[dict[str, Any]]

    @property
    def alerts(self) -> list[Alert]:
        out = []
        for gi, group in enumerate(self.groups):
            for ri, rule in enumerate(list_at(group, "rules")):
                if isinstance(rule, dict) and "expr" in rule:
                    out.append(
                        Alert(
                            group=str(group.get("name", "")),
                            name=str(rule.get("alert") or rule.get("record") or ""),
                            expr=str(rule["expr"]),
                            path=f"spec.groups[{gi}].rules[{ri}].expr",
                        )
                    )
        return out


@dataclass
class Ignored:
    """A document of a kind meshtrace does not model (listed, not an error)."""

    kind: str
    api_version: str
    name: str
    namespace: str
    origin: Origin


@dataclass
class Document:
    """One YAML document as written (before duplicates are merged): lint checks these."""

    origin: Origin
    data: dict[str, Any]
    text: str = ""  # the document's YAML source, for finding the line of a key path

    @property
    def kind(self) -> str:
        return str(self.data.get("kind", ""))

    @property
    def ref(self) -> str:
        meta = self.data.get("metadata") or {}
        name = meta.get("name", "") if isinstance(meta, dict) else ""
        namespace = meta.get("namespace", "") if isinstance(meta, dict) else ""
        if not name:
            return self.kind
        return f"{self.kind} {namespace}/{name}" if namespace else f"{self.kind} {name}"
