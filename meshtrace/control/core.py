"""The control plane's decisions, sans-IO: the service registry, per-node config rendering,
versions, ACK/NACK and heartbeat expiry. The HTTP shell (`server.py`) calls these with the
current monotonic time and wakes long-polls for the node ids they return.

Resolution of Istio configuration is not done here: a `Snapshot` (built by `source.py` from
`meshtrace.config`) supplies each workload's effective config; this module adds `services`
and resolves provider endpoints (docs/control-api.md).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from meshtrace import document
from meshtrace.control.identity import DEFAULT_SERVICE_ACCOUNT, DEFAULT_TRUST_DOMAIN, Claims, spiffe_id

CLUSTER_DOMAIN = "svc.cluster.local"
ROOT_NAMESPACE = "istio-system"
MISSED_HEARTBEATS = 3  # an endpoint missing this many heartbeats leaves every service
PORT_NAMES = ("inbound", "outbound", "admin", "app")


class BadRequest(ValueError):
    """Invalid client input; the message names the field (HTTP 400)."""


class UnknownNode(KeyError):
    """A node id the control plane does not know (HTTP 404): the sidecar must register again."""


class Unauthenticated(ValueError):
    """No credential, or one that does not verify (HTTP 401)."""


class Forbidden(ValueError):
    """A valid credential of another identity than the request's (HTTP 403)."""


# --- inputs -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServicePort:
    name: str
    port: int
    target_port: int | str | None  # None: same as port; a name: the pod's port of that name
    app_protocol: str | None
    protocol: document.PortProtocol = "auto"  # resolved as istiod does (meshtrace.config.protocol)


@dataclass(frozen=True)
class ServiceSpec:
    """A Kubernetes Service as the registry needs it."""

    name: str
    namespace: str
    selector: Mapping[str, str]
    ports: tuple[ServicePort, ...]

    @property
    def host(self) -> str:
        return f"{self.name}.{self.namespace}.{CLUSTER_DOMAIN}"


EffectiveConfig = Callable[[str, str, Mapping[str, str]], document.Document]


@dataclass
class Snapshot:
    """What one load of the watched files gives the control plane."""

    services: list[ServiceSpec]
    pod_labels: dict[tuple[str, str], dict[str, str]]  # (namespace, deployment) -> pod labels
    effective: EffectiveConfig  # (workload, namespace, labels) -> the resolved document, no services
    # error findings of the load: (code, file, resource, path) -> message
    errors: dict[tuple[str, str, str, str], str] = field(default_factory=dict)
    trust_domain: str = DEFAULT_TRUST_DOMAIN  # MeshConfig trustDomain


def new_errors(current: Snapshot, candidate: Snapshot) -> list[str]:
    """Errors `candidate` has that the running configuration does not: such an edit is rejected.
    Errors the files already had (the seed's own mistakes) do not block later edits."""
    return [message for key, message in candidate.errors.items() if key not in current.errors]


@dataclass(frozen=True)
class StaticEndpoint:
    """`--endpoint HOST=ADDR:PORT`: a host outside the registry, like a ServiceEntry."""

    host: str
    ip: str
    port: int


def parse_static_endpoint(text: str) -> StaticEndpoint:
    host, sep, addr = text.partition("=")
    ip, colon, port = addr.rpartition(":")
    if not sep or not host or not colon or not ip or not port.isdigit() or not 0 < int(port) < 65536:
        raise BadRequest(f"--endpoint {text!r}: expected HOST=ADDR:PORT")
    return StaticEndpoint(host.strip(), ip.strip("[]"), int(port))


@dataclass(frozen=True)
class Registration:
    workload: str
    namespace: str
    pod: str
    ip: str
    labels: dict[str, str]
    ports: dict[str, int | None]
    mode: Literal["sidecar", "gateway"]
    service_account: str = DEFAULT_SERVICE_ACCOUNT

    @property
    def node_id(self) -> str:
        # Istio's node id shape: type~ip~pod.namespace~namespace.svc.cluster.local
        kind = "router" if self.mode == "gateway" else "sidecar"
        return f"{kind}~{self.ip}~{self.pod}.{self.namespace}~{self.namespace}.{CLUSTER_DOMAIN}"


def _field(body: Mapping[str, Any], name: str, kind: type, required: bool = True) -> Any:
    if name not in body or body[name] is None:
        if required:
            raise BadRequest(f"field '{name}' is required")
        return None
    value = body[name]
    if not isinstance(value, kind) or isinstance(value, bool) != (kind is bool):
        raise BadRequest(f"field '{name}' must be {kind.__name__}, got {type(value).__name__}")
    if isinstance(value, str) and not value:
        raise BadRequest(f"field '{name}' must not be empty")
    return value


def parse_registration(body: Any) -> Registration:
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    # checked in the documented field order, so the first problem is the one reported
    workload, namespace, pod, ip = (
        _field(body, name, str) for name in ("workload", "namespace", "pod", "ip")
    )
    labels = _field(body, "labels", dict, required=False) or {}
    for key, value in labels.items():
        if not isinstance(value, str):
            raise BadRequest(f"field 'labels.{key}' must be str")
    raw_ports = _field(body, "ports", dict)
    ports: dict[str, int | None] = {}
    for name in PORT_NAMES:
        value = raw_ports.get(name)
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 65536
        ):
            raise BadRequest(f"field 'ports.{name}' must be a port number")
        ports[name] = value
    if ports["inbound"] is None:
        raise BadRequest("field 'ports.inbound' is required")
    mode = _field(body, "mode", str, required=False) or "sidecar"
    if mode not in ("sidecar", "gateway"):
        raise BadRequest("field 'mode' must be 'sidecar' or 'gateway'")
    service_account = _field(body, "service_account", str, required=False) or DEFAULT_SERVICE_ACCOUNT
    return Registration(
        workload=workload,
        namespace=namespace,
        pod=pod,
        ip=ip,
        labels=dict(labels),
        ports=ports,
        mode="gateway" if mode == "gateway" else "sidecar",
        service_account=service_account,
    )


def authorize(claims: Claims, namespace: str, pod: str, service_account: str | None = None) -> None:
    """The credential must be the pod's own: a workload may only speak for itself."""
    asked = Claims(namespace, claims.service_account if service_account is None else service_account, pod)
    if asked != claims:
        raise Forbidden(
            f"credential of pod {claims.pod}.{claims.namespace} (service account {claims.service_account}) "
            f"cannot act for pod {pod}.{namespace} (service account {asked.service_account})"
        )


@dataclass(frozen=True)
class Ack:
    version: str
    status: Literal["ACK", "NACK"]
    error: str | None


def parse_ack(body: Any) -> Ack:
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    version = _field(body, "version", str)
    status = _field(body, "status", str)
    if status not in ("ACK", "NACK"):
        raise BadRequest("field 'status' must be 'ACK' or 'NACK'")
    error = _field(body, "error", str, required=False)
    return Ack(version, status, error)


# --- state --------------------------------------------------------------------------------------


@dataclass
class Node:
    reg: Registration
    labels: dict[str, str]  # registration labels completed by the Deployment's pod labels
    last_heartbeat: float
    healthy: bool = True
    version: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    sent_version: str | None = None  # last version a config answer carried
    acked_version: str | None = None
    last_nack: dict[str, Any] | None = None
    cert_expires_at: float | None = None  # unix time of the last certificate signed for it


def config_version(config: Mapping[str, Any]) -> str:
    """A content hash: a node's version changes exactly when its document does."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def normalize_host(host: str, namespace: str, root_namespace: str = ROOT_NAMESPACE) -> list[str]:
    """Candidate registry keys for a provider's `service`, Istio's `[<namespace>/]<hostname>`
    with Kubernetes short forms: name, name.ns, name.ns.svc, or the full name."""
    if "/" in host:
        namespace, host = host.split("/", 1)
    host = host.rstrip(".")
    labels = host.split(".")
    if len(labels) == 1:
        return [f"{host}.{namespace}.{CLUSTER_DOMAIN}", f"{host}.{root_namespace}.{CLUSTER_DOMAIN}", host]
    if len(labels) == 2:
        return [f"{host}.{CLUSTER_DOMAIN}", host]
    if len(labels) == 3 and labels[2] == "svc":
        return [f"{host}.cluster.local", host]
    return [host]


class ControlPlane:
    """Registry + rendered config per node. Every mutating method returns the ids of nodes whose
    config version changed, so the shell wakes exactly their long-polls."""

    def __init__(self, snapshot: Snapshot, static: list[StaticEndpoint], heartbeat_s: float = 2.0) -> None:
        self.snapshot = snapshot
        self.static = static
        self.heartbeat_s = heartbeat_s
        self.nodes: dict[str, Node] = {}
        self._effective_cache: dict[tuple[str, str, tuple[tuple[str, str], ...]], document.Document] = {}

    # registry

    def _labels(self, reg: Registration) -> dict[str, str]:
        # The Deployment's pod labels complete what the sidecar registered; the sidecar's own
        # labels win because they describe the running pod.
        return {**self.snapshot.pod_labels.get((reg.namespace, reg.workload), {}), **reg.labels}

    def register(self, reg: Registration, now: float) -> tuple[Node, set[str]]:
        previous = self.nodes.get(reg.node_id)
        node = Node(reg, self._labels(reg), last_heartbeat=now)
        self.nodes[reg.node_id] = node  # a restarted pod registers again under the same id
        try:
            return node, self.render_all()
        except Exception:  # resolution failed for this workload: the registry stays as it was
            if previous is None:
                del self.nodes[reg.node_id]
            else:
                self.nodes[reg.node_id] = previous
            raise

    def node(self, node_id: str) -> Node:
        try:
            return self.nodes[node_id]
        except KeyError:
            raise UnknownNode(node_id) from None

    def heartbeat(self, node_id: str, now: float) -> set[str]:
        node = self.node(node_id)
        node.last_heartbeat = now
        if node.healthy:
            return set()
        node.healthy = True  # back in every service it is selected by
        return self.render_all()

    def expire(self, now: float) -> tuple[list[str], set[str]]:
        """Nodes that missed MISSED_HEARTBEATS heartbeats leave every service (kept in status)."""
        expired = [
            node_id
            for node_id, node in self.nodes.items()
            if node.healthy and now - node.last_heartbeat > MISSED_HEARTBEATS * self.heartbeat_s
        ]
        for node_id in expired:
            self.nodes[node_id].healthy = False
        return expired, (self.render_all() if expired else set())

    def ack(self, node_id: str, ack: Ack, now: float) -> None:
        node = self.node(node_id)
        if ack.status == "ACK":
            node.acked_version = ack.version
        else:  # the sidecar keeps its last good config: the ACKed version stays
            node.last_nack = {"version": ack.version, "error": ack.error or "", "at": now}

    def set_snapshot(self, snapshot: Snapshot) -> set[str]:
        """Switch to a new load of the files; if resolving any node's config raises, nothing
        changes and the error propagates (an invalid edit changes nothing)."""
        previous = (self.snapshot, self._effective_cache, {i: n.labels for i, n in self.nodes.items()})
        self.snapshot, self._effective_cache = snapshot, {}
        for node in self.nodes.values():
            node.labels = self._labels(node.reg)
        try:
            return self.render_all()
        except Exception:
            self.snapshot, self._effective_cache, labels = previous
            for node_id, node in self.nodes.items():
                node.labels = labels[node_id]
            raise

    # rendering

    def registry(self) -> dict[str, document.Service]:
        """Every Service with its healthy selected sidecars, plus the static endpoints (merged
        into a Service of the same host), as the document's contract types them."""
        out: dict[str, document.Service] = {}
        healthy = sorted(
            (n for n in self.nodes.values() if n.healthy), key=lambda n: (n.reg.namespace, n.reg.pod)
        )
        for svc in sorted(self.snapshot.services, key=lambda s: s.host):
            selected = [
                n
                for n in healthy
                if svc.selector
                and n.reg.namespace == svc.namespace
                and all(n.labels.get(k) == v for k, v in svc.selector.items())
            ]
            out[svc.host] = document.Service(
                name=svc.name,
                namespace=svc.namespace,
                ports=tuple(
                    document.ServicePort(
                        name=p.name,
                        port=p.port,
                        target_port=p.port if p.target_port is None else p.target_port,
                        app_protocol=p.app_protocol,
                        protocol=p.protocol,
                    )
                    for p in svc.ports
                ),
                endpoints=tuple(self._endpoint(n) for n in selected),
            )
        for entry in self.static:
            key = next((h for h in normalize_host(entry.host, "default") if h in out), entry.host)
            service = out.get(key) or document.Service(
                name=entry.host.split(".")[0],
                namespace=entry.host.split(".")[1] if entry.host.count(".") >= 1 else "",
                ports=(document.ServicePort(name="", port=entry.port, target_port=entry.port),),
            )
            # No sidecar in front of a static host: callers connect to it directly.
            static = document.Endpoint(ip=entry.ip, port=entry.port, app_port=entry.port, pod=None)
            out[key] = replace(service, endpoints=(*service.endpoints, static), static=True)
        return out

    def services(self) -> dict[str, dict[str, Any]]:
        """The document's `services`: `registry()` as JSON."""
        return {host: service.to_json() for host, service in self.registry().items()}

    def _endpoint(self, node: Node) -> document.Endpoint:
        inbound = node.reg.ports["inbound"]
        assert inbound is not None  # parse_registration requires it
        return document.Endpoint(
            ip=node.reg.ip,
            port=inbound,
            app_port=node.reg.ports["app"],
            pod=node.reg.pod,
            identity=self.identity(node),
            mtls=self._accepts_mtls(node),
        )

    def _effective(self, node: Node) -> document.Document:
        """The node's resolved document, cached per (workload, namespace, labels); frozen, so
        shared safely."""
        key = (node.reg.workload, node.reg.namespace, tuple(sorted(node.labels.items())))
        if key not in self._effective_cache:
            self._effective_cache[key] = self.snapshot.effective(
                node.reg.workload, node.reg.namespace, node.labels
            )
        return self._effective_cache[key]

    def identity(self, node: Node) -> str:
        """The node's SPIFFE id: what its certificate names and what peers and status show."""
        return spiffe_id(self.snapshot.trust_domain, node.reg.namespace, node.reg.service_account)

    def _accepts_mtls(self, node: Node) -> bool:
        """Auto mTLS: a caller uses mTLS to an endpoint whose sidecar accepts it, that is whose
        PeerAuthentication for the app port is not DISABLE (istiod labels such endpoints
        `security.istio.io/tlsMode: istio`). A gateway is not a sidecar endpoint."""
        if node.reg.mode != "sidecar":
            return False
        pa = self._effective(node).security.peer_authentication
        return pa.port_mode(node.reg.ports["app"]) != "DISABLE"

    def _resolve_provider(
        self, provider: document.Provider, namespace: str, root: str, registry: dict[str, document.Service]
    ) -> str | None:
        host, port = provider.service, provider.port
        candidates = normalize_host(host, namespace, root)
        # An explicit --endpoint wins, as a ServiceEntry would; of several for the host, the one
        # whose port is the provider's (a collector serves OTLP gRPC, HTTP and Zipkin apart).
        matching = [e for e in self.static if e.host == host or e.host in candidates]
        if matching:
            entry = next((e for e in matching if e.port == port), matching[0])
            return f"http://{entry.ip}:{entry.port}"
        for candidate in candidates:
            service = registry.get(candidate)
            if service is None or not service.endpoints:
                continue
            endpoint = service.endpoints[0]
            if endpoint.pod is None:
                return f"http://{endpoint.ip}:{endpoint.port}"
            # Telemetry goes to the collector's app port directly, not through its inbound
            # sidecar, so the proxy does not trace its own span exports.
            target = next((p.target_port for p in service.ports if p.port == port), None)
            app_port = target if isinstance(target, int) else endpoint.app_port or port
            return f"http://{endpoint.ip}:{app_port}"
        return None

    def render(
        self, node: Node, registry: dict[str, document.Service], services: dict[str, dict[str, Any]]
    ) -> dict[str, Any]:
        """The node's document: its effective config with provider endpoints resolved against
        `registry`, and `services` (the registry as JSON, shared by every node)."""
        doc = self._effective(node)
        warnings = list(doc.warnings)
        root = doc.mesh.root_namespace or ROOT_NAMESPACE
        directions: dict[str, document.TracingDirection] = {}
        for name in ("client", "server"):
            direction: document.TracingDirection = getattr(doc.tracing, name)
            provider = direction.provider
            if provider is None:
                continue
            # An IP or localhost `service` was already made an endpoint by resolution.
            endpoint = (
                self._resolve_provider(provider, node.reg.namespace, root, registry) or provider.endpoint
            )
            if endpoint is None:
                message = (
                    f"provider {provider.name!r}: no registered endpoint or --endpoint for "
                    f"{provider.service!r}; {name} spans are not sent"
                )
                if message not in warnings:
                    warnings.append(message)
            directions[name] = replace(direction, provider=replace(provider, endpoint=endpoint))
        doc = replace(
            doc,
            tracing=replace(doc.tracing, **directions),
            warnings=tuple(warnings),
            # the registered, authenticated service account names the workload, not the files
            security=replace(
                doc.security, identity=self.identity(node), service_account=node.reg.service_account
            ),
        )
        config = doc.to_json()
        config["services"] = services
        return config

    def render_all(self) -> set[str]:
        """Render every node's config; all are computed before any is stored, so a failure
        leaves every node on its previous version."""
        registry = self.registry()
        services = {host: service.to_json() for host, service in registry.items()}
        rendered = {node_id: self.render(node, registry, services) for node_id, node in self.nodes.items()}
        changed = set()
        for node_id, config in rendered.items():
            node, version = self.nodes[node_id], config_version(config)
            if version != node.version:
                node.config, node.version = config, version
                changed.add(node_id)
        return changed

    def status(self, now: float) -> list[dict[str, Any]]:
        return [
            {
                "node_id": node_id,
                "workload": node.reg.workload,
                "namespace": node.reg.namespace,
                "pod": node.reg.pod,
                "ip": node.reg.ip,
                "mode": node.reg.mode,
                "service_account": node.reg.service_account,
                "identity": self.identity(node),
                "labels": node.labels,
                "ports": node.reg.ports,
                "healthy": node.healthy,
                "heartbeat_age_s": round(now - node.last_heartbeat, 3),
                "version": node.version,
                "sent_version": node.sent_version,
                "acked_version": node.acked_version,
                "last_nack": node.last_nack,
                "cert_expires_at": node.cert_expires_at,
            }
            for node_id, node in sorted(self.nodes.items())
        ]
