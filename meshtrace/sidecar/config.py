"""The config document (docs/config-document.md) as the sidecar runs it. `meshtrace.document`
validates it (`Document.from_json`: a document that does not conform raises `ConfigError` naming
the field; the sidecar NACKs it and keeps its last good config); this module compiles, once per
version, what the request path reads: each direction's tracing values, tag override expressions
(CEL), the service registry with its round-robin state, the authorization policies."""

from __future__ import annotations

import itertools
import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from meshtrace.cel import Label, check, compile_expr
from meshtrace.document import (
    DIRECTIONS,
    Document,
    DocumentError,
    Format,
    Mesh,
    PortProtocol,
    Provider,
    TracingDirection,
    Workload,
)
from meshtrace.document import MetricOverride as MetricSpec
from meshtrace.document import Security as SecuritySpec
from meshtrace.document import Service as ServiceSpec
from meshtrace.sidecar.rbac import Authorizer

log = logging.getLogger(__name__)
ConfigError = DocumentError  # a document the sidecar refuses; `path` names the field
__all__ = ["ConfigError", "Mesh", "Provider", "SidecarConfig", "Workload", "load_file", "parse"]


@dataclass(frozen=True, slots=True)
class Tracing:
    """One direction's tracing (client = outbound listener, server = inbound): the document's
    block, and the values `decide`/`inject` take on every request pulled out once."""

    spec: TracingDirection
    provider: Provider | None
    sampling: float
    use_request_id: bool
    read: tuple[Format, ...]
    write: tuple[Format, ...]
    reports: bool  # spans are produced and sent

    @classmethod
    def of(cls, spec: TracingDirection) -> Tracing:
        return cls(
            spec=spec,
            provider=spec.provider,
            sampling=spec.random_sampling_percentage,
            use_request_id=spec.use_request_id_for_trace_sampling,
            read=spec.propagation.read,
            write=spec.propagation.write,
            reports=spec.enabled and spec.provider is not None and not spec.disable_span_reporting,
        )


@dataclass(frozen=True, slots=True)
class MetricOverride:
    disabled: bool
    # label -> its compiled expression (UPSERT), or None: the label is dropped (REMOVE, or an
    # expression outside the CEL subset, which Envoy's stats filter drops too)
    tag_overrides: dict[str, Label | None]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A document endpoint as routing reads it (hashable: retries exclude those tried)."""

    ip: str
    port: int
    pod: str
    identity: str = ""  # the SPIFFE id its certificate must carry
    mtls: bool = False  # its sidecar accepts mTLS (auto mTLS uses it)
    sidecar: bool = True  # a pod's sidecar (inbound listener); False: a static host, reached direct


@dataclass(frozen=True, slots=True)
class PortSpec:
    """One Service port: its protocol (docs/config-document.md) and the app port it targets
    (None when the target port is a name or absent)."""

    protocol: PortProtocol = "auto"
    target_port: int | None = None


@dataclass(slots=True)
class Service:
    """A document Service as routing reads it: port numbers, and a round-robin position."""

    fqdn: str
    name: str
    namespace: str
    ports: tuple[int, ...]
    endpoints: tuple[Endpoint, ...]
    _rr: itertools.count[int] = field(default_factory=itertools.count)
    port_specs: dict[int, PortSpec] = field(default_factory=dict)

    def port_spec(self, port: int) -> PortSpec:
        return self.port_specs.get(port) or PortSpec()

    def static_port(self, port: int, ep: Endpoint) -> int:
        """Where a static endpoint (no sidecar) is reached for Service port `port`: the port's
        numeric targetPort when the Service has a static endpoint on it at that address (the
        collector's: one per port) or `port` is a further Service port; else the endpoint's port."""
        target = self.port_spec(port).target_port
        if target is None or target == ep.port:
            return ep.port
        further = bool(self.ports) and port != self.ports[0]
        if further or any(e.ip == ep.ip and e.port == target for e in self.endpoints):
            return target
        return ep.port

    def app_port(self, port: int, main: int) -> int:
        """Where this workload's inbound sends a request for Service port `port`: the first
        Service port goes to the app's main port (`--app-port`: the pod's first containerPort
        under `up`), a further port (gRPC beside HTTP) to its numeric targetPort."""
        if not self.ports or port == self.ports[0] or port not in self.ports:
            return main
        return self.port_spec(port).target_port or main

    def pick(self, exclude: set[Endpoint] | None = None) -> Endpoint | None:
        """Round-robin over the endpoints, skipping `exclude` (retries go elsewhere) when possible."""
        if not self.endpoints:
            return None
        n = len(self.endpoints)
        start = next(self._rr)
        for i in range(n):
            ep = self.endpoints[(start + i) % n]
            if not exclude or ep not in exclude:
                return ep
        return self.endpoints[start % n]


class Registry:
    """Kubernetes-style name resolution over `services`: `backend` (in the sidecar's namespace),
    `backend.default`, `backend.default.svc`, `backend.default.svc.cluster.local`."""

    def __init__(self, services: dict[str, Service], namespace: str) -> None:
        self.services = services
        self.names: dict[str, Service] = {}
        short: dict[str, list[Service]] = {}
        for svc in services.values():
            for alias in (svc.fqdn, f"{svc.name}.{svc.namespace}", f"{svc.name}.{svc.namespace}.svc"):
                self.names[alias] = svc
            short.setdefault(svc.name, []).append(svc)
        for name, svcs in short.items():
            own = [s for s in svcs if s.namespace == namespace]
            if own:
                self.names[name] = own[0]
            elif len(svcs) == 1:
                self.names[name] = svcs[0]

    def lookup(self, host: str) -> Service | None:
        return self.names.get(host)


@dataclass(frozen=True, slots=True)
class Security:
    """The `security` section with its AuthorizationPolicies compiled."""

    spec: SecuritySpec = field(default_factory=SecuritySpec)
    authorizer: Authorizer = field(default_factory=Authorizer)

    @property
    def identity(self) -> str:
        return self.spec.identity

    def inbound_mode(self, port: int) -> str:
        return self.spec.peer_authentication.port_mode(port)

    def destination_tls(self, fqdn: str, port: int) -> str | None:
        """The DestinationRule's TLS mode for a host and port, None when none sets one."""
        tls = self.spec.destinations.get(fqdn)
        return None if tls is None else tls.ports.get(str(port), tls.mode)


@dataclass(slots=True)
class SidecarConfig:
    version: str
    document: dict[str, Any]  # as received: the admin's config_dump shows it
    spec: Document
    workload: Workload
    mesh: Mesh
    client: Tracing
    server: Tracing
    metrics_enabled: dict[str, bool]  # direction ("client" | "server") -> reports Istio metrics
    metrics: dict[str, dict[str, MetricOverride]]  # direction -> metric -> override
    registry: Registry
    security: Security = field(default_factory=Security)


def load_file(path: str | Path) -> dict[str, Any]:
    text = Path(path).read_text()
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(str(path), f"neither JSON nor YAML: {exc}") from exc
    if not isinstance(doc, dict):
        raise ConfigError(str(path), "the config document must be an object")
    return doc


def _metrics(spec: dict[str, MetricSpec], where: str) -> dict[str, MetricOverride]:
    out: dict[str, MetricOverride] = {}
    for metric, m in spec.items():
        tags: dict[str, Label | None] = {}
        for label, o in m.tag_overrides.items():
            if o.operation == "REMOVE" or o.value is None:
                tags[label] = None
                continue
            problem = check(o.value)
            if problem is not None:
                # Envoy's stats filter logs an expression it cannot parse and drops that label; the
                # rest of the config applies (no NACK). `meshtrace lint` reports it beforehand.
                log.warning(
                    "%s.%s.tag_overrides.%s.value %r: %s; the label is dropped",
                    where, metric, label, o.value, problem,
                )  # fmt: skip
                tags[label] = None
                continue
            tags[label] = compile_expr(o.value)
        out[metric] = MetricOverride(m.disabled, tags)
    return out


def _service(fqdn: str, s: ServiceSpec) -> Service:
    endpoints = tuple(
        Endpoint(e.ip, e.port, e.pod or "", e.identity or "", e.mtls is True, e.pod is not None)
        for e in s.endpoints
    )
    return Service(
        fqdn,
        s.name or fqdn.split(".")[0],
        s.namespace or (fqdn.split(".")[1] if "." in fqdn else "default"),
        tuple(p.port for p in s.ports),
        endpoints,
        port_specs={
            p.port: PortSpec(p.protocol, p.target_port if isinstance(p.target_port, int) else None)
            for p in s.ports
        },
    )


def _workload(w: Workload, workload: str, namespace: str, labels: dict[str, str]) -> Workload:
    """The document's workload, with what it leaves empty filled from the command line."""
    labels = {**labels, **w.labels}
    name, ns = w.name or workload, w.namespace or namespace
    app = labels.get("app") or labels.get("app.kubernetes.io/name") or name
    return replace(
        w,
        name=name,
        namespace=ns,
        labels=labels,
        service_name=w.service_name or f"{app}.{ns}",
        canonical_service=w.canonical_service or labels.get("service.istio.io/canonical-name") or app,
        canonical_revision=w.canonical_revision
        or labels.get("service.istio.io/canonical-revision")
        or labels.get("version")
        or "latest",
    )


def parse(
    doc: dict[str, Any], version: str, workload: str, namespace: str, labels: dict[str, str]
) -> SidecarConfig:
    """Validate and compile a config document; the command-line identity fills what it leaves out."""
    spec = Document.from_json(doc)
    wl = _workload(spec.workload, workload, namespace, labels)
    me = spec.metrics
    return SidecarConfig(
        version=version,
        document=doc,
        spec=spec,
        workload=wl,
        mesh=spec.mesh,
        client=Tracing.of(spec.tracing.client),
        server=Tracing.of(spec.tracing.server),
        metrics_enabled={
            "client": me.enabled and me.client_enabled,
            "server": me.enabled and me.server_enabled,
        },
        metrics={d: _metrics(getattr(me, d), f"metrics.{d}") for d in DIRECTIONS},
        registry=Registry(
            {fqdn: _service(fqdn, s) for fqdn, s in (spec.services or {}).items()}, wl.namespace
        ),
        security=Security(
            spec.security, Authorizer.build([p.to_json() for p in spec.security.authorization])
        ),
    )
