"""The effective config document (docs/config-document.md) as the sidecar uses it: parsed and
validated once per version into immutable objects the request path reads without lookups.
A document that does not validate raises `ConfigError` naming the field (the sidecar NACKs it
and keeps its last good config)."""

from __future__ import annotations

import itertools
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import yaml

from meshtrace.cel import Label, check, compile_expr
from meshtrace.propagation.context import Format
from meshtrace.sidecar.protocols import AUTO, PORT_PROTOCOLS
from meshtrace.sidecar.rbac import Authorizer

log = logging.getLogger(__name__)
CLUSTER_DOMAIN = "svc.cluster.local"
CUSTOM_TAG_KINDS = ("literal", "environment", "header", "formatter")


class ConfigError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Provider:
    name: str
    type: str  # opentelemetry | zipkin
    protocol: str  # grpc | http | zipkin
    endpoint: str | None
    path: str
    timeout_s: float
    headers: dict[str, str]
    max_tag_length: int


@dataclass(frozen=True, slots=True)
class Tracing:
    """One direction's tracing settings (client = outbound listener, server = inbound)."""

    enabled: bool = False
    provider: Provider | None = None
    sampling: float = 1.0
    disable_span_reporting: bool = False
    use_request_id: bool = True
    enable_istio_tags: bool = True
    max_path_tag_length: int = 256
    custom_tags: dict[str, dict[str, Any]] = field(default_factory=dict)
    write: tuple[Format, ...] = ("w3c", "b3")
    read: tuple[Format, ...] = ("w3c", "b3")

    @property
    def reports(self) -> bool:
        return self.enabled and self.provider is not None and not self.disable_span_reporting


@dataclass(frozen=True, slots=True)
class MetricOverride:
    disabled: bool
    # label -> its compiled expression (UPSERT), or None: the label is dropped (REMOVE, or an
    # expression outside the CEL subset, which Envoy's stats filter drops too)
    tag_overrides: dict[str, Label | None]


@dataclass(frozen=True, slots=True)
class Endpoint:
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

    protocol: str = AUTO
    target_port: int | None = None


@dataclass(slots=True)
class Service:
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
class Workload:
    name: str
    namespace: str
    labels: dict[str, str]
    service_name: str
    canonical_service: str
    canonical_revision: str


@dataclass(frozen=True, slots=True)
class Mesh:
    mesh_id: str = "cluster.local"
    cluster_id: str = "Kubernetes"
    trust_domain: str = "cluster.local"


@dataclass(frozen=True, slots=True)
class Security:
    """The `security` section: this workload's identity, its inbound mTLS mode (per port), the
    AuthorizationPolicies to enforce and the DestinationRule TLS modes per destination host."""

    identity: str = ""
    mode: str = "PERMISSIVE"
    port_modes: dict[str, str] = field(default_factory=dict)
    authorizer: Authorizer = field(default_factory=Authorizer)
    destinations: dict[str, tuple[str | None, dict[str, str]]] = field(default_factory=dict)

    def inbound_mode(self, port: int) -> str:
        return self.port_modes.get(str(port), self.mode)

    def destination_tls(self, fqdn: str, port: int) -> str | None:
        """The DestinationRule's TLS mode for a host and port, None when none sets one."""
        mode, ports = self.destinations.get(fqdn, (None, {}))
        return ports.get(str(port), mode)


def _security(raw: Any) -> Security:
    sec = _obj(raw, "security")
    pa = _obj(sec.get("peer_authentication"), "security.peer_authentication")
    mode = str(pa.get("mode") or "PERMISSIVE")
    modes = ("STRICT", "PERMISSIVE", "DISABLE")
    if mode not in modes:
        raise ConfigError(f"security.peer_authentication.mode: {mode!r} is not one of {', '.join(modes)}")
    ports = {}
    for port, value in _obj(pa.get("ports"), "security.peer_authentication.ports").items():
        ports[str(port)] = str(_obj(value, f"security.peer_authentication.ports.{port}").get("mode") or mode)
        if ports[str(port)] not in modes:
            raise ConfigError(f"security.peer_authentication.ports.{port}.mode: {ports[str(port)]!r}")
    policies = sec.get("authorization") or []
    if not isinstance(policies, list) or not all(isinstance(p, dict) for p in policies):
        raise ConfigError("security.authorization: must be a list of policies")
    destinations = {}
    for host, value in _obj(sec.get("destinations"), "security.destinations").items():
        d = _obj(value, f"security.destinations.{host}")
        mode_set = d.get("mode")
        destinations[str(host)] = (
            str(mode_set) if mode_set else None,
            {str(k): str(v) for k, v in _obj(d.get("ports"), f"security.destinations.{host}.ports").items()},
        )
    return Security(
        identity=str(sec.get("identity") or ""),
        mode=mode,
        port_modes=ports,
        authorizer=Authorizer.build(policies),
        destinations=destinations,
    )


@dataclass(slots=True)
class SidecarConfig:
    version: str
    document: dict[str, Any]
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
            raise ConfigError(f"{path}: neither JSON nor YAML: {exc}") from exc
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: the config document must be an object")
    return doc


def _obj(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected an object, got {type(value).__name__}")
    return value


def _num(value: Any, where: str, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    return float(value)


def _provider(raw: Any, where: str) -> Provider | None:
    if raw is None:
        return None
    p = _obj(raw, where)
    protocol = p.get("protocol") or ("zipkin" if p.get("type") == "zipkin" else "grpc")
    if protocol not in ("grpc", "http", "zipkin"):
        raise ConfigError(f"{where}.protocol: unknown protocol {protocol!r} (grpc, http, zipkin)")
    endpoint = p.get("endpoint")
    if endpoint is not None and not isinstance(endpoint, str):
        raise ConfigError(f"{where}.endpoint: expected a string")
    default_path = "/api/v2/spans" if protocol == "zipkin" else "/v1/traces"
    return Provider(
        name=str(p.get("name", "")),
        type=str(p.get("type", "opentelemetry")),
        protocol=protocol,
        endpoint=endpoint,
        path=str(p.get("path") or default_path),
        timeout_s=_num(p.get("timeout_s"), f"{where}.timeout_s", 3.0),
        headers={str(k): str(v) for k, v in _obj(p.get("headers"), f"{where}.headers").items()},
        max_tag_length=int(_num(p.get("max_tag_length"), f"{where}.max_tag_length", 256)),
    )


def _tracing(raw: Any, where: str) -> Tracing:
    t = _obj(raw, where)
    sampling = _num(t.get("random_sampling_percentage"), f"{where}.random_sampling_percentage", 1.0)
    if not 0.0 <= sampling <= 100.0:
        raise ConfigError(f"{where}.random_sampling_percentage: {sampling} is outside 0..100")
    tags = _obj(t.get("custom_tags"), f"{where}.custom_tags")
    for name, spec in tags.items():
        kinds = set(_obj(spec, f"{where}.custom_tags.{name}")) & set(CUSTOM_TAG_KINDS)
        if len(kinds) != 1:
            raise ConfigError(
                f"{where}.custom_tags.{name}: needs exactly one of {', '.join(CUSTOM_TAG_KINDS)}"
            )
    prop = _obj(t.get("propagation"), f"{where}.propagation")
    write = tuple(prop.get("write") or ("w3c", "b3"))
    read = tuple(prop.get("read") or ("w3c", "b3"))
    for fmt in (*write, *read):
        if fmt not in ("w3c", "b3"):
            raise ConfigError(f"{where}.propagation: unknown format {fmt!r} (w3c, b3)")
    return Tracing(
        enabled=bool(t.get("enabled", False)),
        provider=_provider(t.get("provider"), f"{where}.provider"),
        sampling=sampling,
        disable_span_reporting=bool(t.get("disable_span_reporting", False)),
        use_request_id=bool(t.get("use_request_id_for_trace_sampling", True)),
        enable_istio_tags=bool(t.get("enable_istio_tags", True)),
        max_path_tag_length=int(_num(t.get("max_path_tag_length"), f"{where}.max_path_tag_length", 256)),
        custom_tags=tags,
        write=cast(tuple[Format, ...], write),
        read=cast(tuple[Format, ...], read),
    )


def _metrics(raw: Any, where: str) -> dict[str, MetricOverride]:
    out: dict[str, MetricOverride] = {}
    for metric, spec in _obj(raw, where).items():
        s = _obj(spec, f"{where}.{metric}")
        tags: dict[str, Label | None] = {}
        for label, op in _obj(s.get("tag_overrides"), f"{where}.{metric}.tag_overrides").items():
            o = _obj(op, f"{where}.{metric}.tag_overrides.{label}")
            operation = str(o.get("operation", "UPSERT")).upper()
            if operation not in ("UPSERT", "REMOVE"):
                raise ConfigError(f"{where}.{metric}.tag_overrides.{label}.operation: {operation!r}")
            value = o.get("value")
            if operation == "REMOVE":
                tags[str(label)] = None
                continue
            if not isinstance(value, str):
                raise ConfigError(f"{where}.{metric}.tag_overrides.{label}.value: UPSERT needs an expression")
            problem = check(value)
            if problem is not None:
                # Envoy's stats filter logs an expression it cannot parse and drops that label; the
                # rest of the config applies (no NACK). `meshtrace lint` reports it beforehand.
                log.warning(
                    "%s.%s.tag_overrides.%s.value %r: %s; the label is dropped",
                    where, metric, label, value, problem,
                )  # fmt: skip
                tags[str(label)] = None
                continue
            tags[str(label)] = compile_expr(value)
        out[str(metric)] = MetricOverride(bool(s.get("disabled", False)), tags)
    return out


def _services(raw: Any) -> dict[str, Service]:
    out: dict[str, Service] = {}
    for fqdn, spec in _obj(raw, "services").items():
        s = _obj(spec, f"services.{fqdn}")
        name = str(s.get("name") or fqdn.split(".")[0])
        namespace = str(s.get("namespace") or (fqdn.split(".")[1] if "." in fqdn else "default"))
        ports = tuple(int(p["port"]) for p in s.get("ports") or [] if isinstance(p, dict) and "port" in p)
        specs = _port_specs(s.get("ports") or [], f"services.{fqdn}.ports")
        eps = []
        for i, e in enumerate(s.get("endpoints") or []):
            e = _obj(e, f"services.{fqdn}.endpoints[{i}]")
            if "ip" not in e or "port" not in e:
                raise ConfigError(f"services.{fqdn}.endpoints[{i}]: needs ip and port")
            eps.append(
                Endpoint(
                    str(e["ip"]),
                    int(e["port"]),
                    str(e.get("pod", "")),
                    str(e.get("identity") or ""),
                    e.get("mtls") is True,
                    e.get("pod") is not None,
                )
            )
        out[fqdn] = Service(fqdn, name, namespace, ports, tuple(eps), port_specs=specs)
    return out


def _port_specs(raw: list[Any], where: str) -> dict[int, PortSpec]:
    specs: dict[int, PortSpec] = {}
    for i, p in enumerate(raw):
        if not isinstance(p, dict) or "port" not in p:
            continue
        protocol = p.get("protocol") or AUTO
        if protocol not in PORT_PROTOCOLS:
            known = ", ".join(sorted(PORT_PROTOCOLS))
            raise ConfigError(f"{where}[{i}].protocol: unknown protocol {protocol!r} ({known})")
        target = p.get("target_port")
        specs[int(p["port"])] = PortSpec(
            str(protocol), target if isinstance(target, int) and not isinstance(target, bool) else None
        )
    return specs


def parse(
    doc: dict[str, Any], version: str, workload: str, namespace: str, labels: dict[str, str]
) -> SidecarConfig:
    """Validate and parse a config document; the command-line identity fills what it leaves out."""
    w = _obj(doc.get("workload"), "workload")
    labels = {**labels, **{str(k): str(v) for k, v in _obj(w.get("labels"), "workload.labels").items()}}
    name = str(w.get("name") or workload)
    ns = str(w.get("namespace") or namespace)
    app = labels.get("app") or labels.get("app.kubernetes.io/name") or name
    wl = Workload(
        name=name,
        namespace=ns,
        labels=labels,
        service_name=str(w.get("service_name") or f"{app}.{ns}"),
        canonical_service=str(
            w.get("canonical_service") or labels.get("service.istio.io/canonical-name") or app
        ),
        canonical_revision=str(
            w.get("canonical_revision")
            or labels.get("service.istio.io/canonical-revision")
            or labels.get("version")
            or "latest"
        ),
    )
    m = _obj(doc.get("mesh"), "mesh")
    mesh = Mesh(
        mesh_id=str(m.get("mesh_id", "cluster.local")),
        cluster_id=str(m.get("cluster_id", "Kubernetes")),
        trust_domain=str(m.get("trust_domain", "cluster.local")),
    )
    tr = _obj(doc.get("tracing"), "tracing")
    me = _obj(doc.get("metrics"), "metrics")
    return SidecarConfig(
        version=version,
        document=doc,
        workload=wl,
        mesh=mesh,
        client=_tracing(tr.get("client"), "tracing.client"),
        server=_tracing(tr.get("server"), "tracing.server"),
        # `<direction>_enabled` (schema 1 addition) refines `enabled`; older documents lack it.
        metrics_enabled={
            d: bool(me.get("enabled", True)) and bool(me.get(f"{d}_enabled", True))
            for d in ("client", "server")
        },
        metrics={d: _metrics(me.get(d), f"metrics.{d}") for d in ("client", "server")},
        registry=Registry(_services(doc.get("services")), ns),
        security=_security(doc.get("security")),
    )
