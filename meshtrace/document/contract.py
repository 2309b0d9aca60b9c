"""The config document the control plane sends each sidecar (docs/config-document.md), as frozen
dataclasses: the one definition producers (`meshtrace.config` resolution, the control plane) and
the consumer (the sidecar) share. `Document.from_json` validates (errors name the key path),
`to_json` writes the wire shape. Field names are the JSON keys, in the order they are written;
adding a key is adding one field with its default."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal

from meshtrace.document.codec import OMIT_NONE, Record, default_from, number, required

SCHEMA_VERSION: Final = 1
DIRECTIONS = ("client", "server")
Format = Literal["w3c", "b3"]
MtlsMode = Literal["STRICT", "PERMISSIVE", "DISABLE"]
TlsMode = Literal["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"]
# A Service port's protocol as istiod selects it (appProtocol, else the name's prefix, else a
# well-known TCP port), in the lowercase words Istio's protocol.Parse reads; `auto`: the sidecar
# detects it per connection.
PortProtocol = Literal[
    "tcp", "udp", "grpc", "grpc-web", "http", "http_proxy", "http2", "https", "tls", "mongo", "redis",
    "mysql", "auto",
]  # fmt: skip
CUSTOM_TAG_KINDS = ("literal", "environment", "header", "formatter")
# Where spans are posted when a provider names no path (opentelemetry http, zipkin); grpc has none.
DEFAULT_PATHS = {"http": "/v1/traces", "zipkin": "/api/v2/spans"}
DEFAULT_TAG_LENGTH = 256  # Envoy's max_path_tag_length default


@dataclass(frozen=True, slots=True, kw_only=True)
class Workload(Record):
    """The workload this proxy runs beside; the sidecar fills empty values from its command line."""

    name: str = ""
    namespace: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    service_name: str = ""  # resource service.name: <app label>.<namespace>
    canonical_service: str = ""
    canonical_revision: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Mesh(Record):
    """The mesh's identity as istiod gives it to proxies."""

    mesh_id: str = "cluster.local"
    cluster_id: str = "Kubernetes"
    trust_domain: str = "cluster.local"
    root_namespace: str = "istio-system"


@dataclass(frozen=True, slots=True, kw_only=True)
class AppliedTelemetry(Record):
    """A Telemetry resource that applied, in application order."""

    scope: Literal["root", "namespace", "workload"]
    resource: str
    file: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class IgnoredTelemetry(Record):
    """A Telemetry resource in scope that Istio ignores, and why."""

    resource: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Telemetry(Record):
    """Which Telemetry resources shaped this document (for people; the sidecar ignores it)."""

    applied: tuple[AppliedTelemetry, ...] = ()
    ignored: tuple[IgnoredTelemetry, ...] = ()


def _protocol(raw: Any) -> str:
    return "zipkin" if raw.get("type") == "zipkin" else "grpc"


def _path(raw: Any) -> str | None:
    return DEFAULT_PATHS.get(str(raw.get("protocol") or _protocol(raw)))


@dataclass(frozen=True, slots=True, kw_only=True)
class Provider(Record):
    """The tracing provider one direction reports spans to."""

    name: str = ""
    type: Literal["opentelemetry", "zipkin"] = "opentelemetry"
    service: str = ""  # the host (a `namespace/` prefix removed)
    port: int = number(0, 0, 65535)  # 0: the provider names no valid port
    protocol: Literal["grpc", "http", "zipkin"] = default_from("grpc", _protocol)
    path: str | None = default_from(None, _path)  # http and zipkin only
    endpoint: str | None = None  # the resolved address to send to; None: unresolved
    timeout_s: float = number(3.0, 0)
    headers: dict[str, str] = field(default_factory=dict)
    max_tag_length: int = number(DEFAULT_TAG_LENGTH, 0)
    trace_context: Literal["w3c", "b3", "b3+w3c"] = "w3c"  # what the provider writes

    def problem(self) -> tuple[str, str] | None:
        if self.protocol != "grpc" and not self.path:
            return "path", f"a {self.protocol} provider needs a path"
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class CustomTag(Record):
    """One span tag, exactly one of Istio's kinds; bodies keep Istio's keys in snake_case
    (`value`, `name`, `default_value`)."""

    literal: dict[str, str] | None = field(default=None, metadata=OMIT_NONE)
    environment: dict[str, str] | None = field(default=None, metadata=OMIT_NONE)
    header: dict[str, str] | None = field(default=None, metadata=OMIT_NONE)
    formatter: dict[str, str] | None = field(
        default=None, metadata=OMIT_NONE
    )  # an Envoy format string in `value`

    def problem(self) -> tuple[str, str] | None:
        if sum(getattr(self, k) is not None for k in CUSTOM_TAG_KINDS) != 1:
            return "", f"needs exactly one of {', '.join(CUSTOM_TAG_KINDS)}"
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class Propagation(Record):
    """Trace header formats read from requests and written to them ([] : none written)."""

    read: tuple[Format, ...] = ("w3c", "b3")
    write: tuple[Format, ...] = ("w3c", "b3")


@dataclass(frozen=True, slots=True, kw_only=True)
class TracingDirection(Record):
    """One listener's tracing: client = outbound (CLIENT spans), server = inbound (SERVER spans)."""

    enabled: bool = False  # this listener produces and reports spans
    provider: Provider | None = None  # None: no provider resolves
    random_sampling_percentage: float = number(1.0, 0, 100)
    disable_span_reporting: bool = False
    use_request_id_for_trace_sampling: bool = True
    enable_istio_tags: bool = True
    max_path_tag_length: int = number(DEFAULT_TAG_LENGTH, 0)
    custom_tags: dict[str, CustomTag] = field(default_factory=dict)
    propagation: Propagation = field(default_factory=Propagation)


@dataclass(frozen=True, slots=True, kw_only=True)
class Tracing(Record):
    """Tracing per direction."""

    client: TracingDirection = field(default_factory=TracingDirection)
    server: TracingDirection = field(default_factory=TracingDirection)


@dataclass(frozen=True, slots=True, kw_only=True)
class TagOverride(Record):
    """A metric label set to a CEL expression (UPSERT) or removed (REMOVE)."""

    operation: Literal["UPSERT", "REMOVE"] = "UPSERT"
    value: str | None = field(default=None, metadata=OMIT_NONE)

    def problem(self) -> tuple[str, str] | None:
        if self.operation == "UPSERT" and self.value is None:
            return "value", "UPSERT needs an expression"
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricOverride(Record):
    """One standard (or custom) metric of one direction after merging the overrides."""

    disabled: bool = False
    tag_overrides: dict[str, TagOverride] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Metrics(Record):
    """Istio's standard metrics (the prometheus provider) per direction."""

    enabled: bool = True  # active for at least one direction
    client_enabled: bool = True  # the outbound listener (and the gateway) reports metrics
    server_enabled: bool = True  # the inbound listener reports metrics
    client: dict[str, MetricOverride] = field(default_factory=dict)
    server: dict[str, MetricOverride] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class PortMtls(Record):
    """The inbound mTLS mode of one port (portLevelMtls)."""

    mode: MtlsMode
    source: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerAuthentication(Record):
    """The effective inbound mTLS mode, per port where portLevelMtls sets one."""

    mode: MtlsMode = "PERMISSIVE"
    source: str = ""
    ports: dict[str, PortMtls] = field(default_factory=dict)

    def port_mode(self, port: int | None) -> MtlsMode:
        """The effective mode of one inbound port."""
        found = self.ports.get(str(port)) if port is not None else None
        return found.mode if found is not None else self.mode


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthorizationPolicy(Record):
    """An AuthorizationPolicy that applies; `rules` as written in the resource."""

    name: str = ""
    action: Literal["ALLOW", "DENY"] = "ALLOW"
    rules: tuple[dict[str, Any], ...] = ()
    scope: Literal["mesh", "namespace", "workload"] = "workload"


@dataclass(frozen=True, slots=True, kw_only=True)
class DestinationTls(Record):
    """The DestinationRule TLS mode a client uses to one host (None: auto mTLS), per port."""

    mode: TlsMode | None = None
    ports: dict[str, TlsMode] = field(default_factory=dict)
    source: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Security(Record):
    """Identity and security policy, resolved as istiod does."""

    identity: str = ""  # the SPIFFE id
    service_account: str = ""
    peer_authentication: PeerAuthentication = field(default_factory=PeerAuthentication)
    authorization: tuple[AuthorizationPolicy, ...] = ()
    destinations: dict[str, DestinationTls] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class ServicePort(Record):
    """A port of a Service."""

    name: str = ""
    port: int = required(1, 65535)
    target_port: int | str | None = None  # a name: the pod's port of that name
    app_protocol: str | None = None
    protocol: PortProtocol = "auto"


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint(Record):
    """A healthy sidecar (or a static host) behind a Service: `port` is what a caller connects to
    (the sidecar's inbound listener), `app_port` the app's containerPort."""

    ip: str
    port: int = required(1, 65535)
    app_port: int | None = None
    pod: str | None = None  # None: a static host, no sidecar in front
    identity: str | None = field(default=None, metadata=OMIT_NONE)  # the SPIFFE id its certificate must carry
    mtls: bool | None = field(
        default=None, metadata=OMIT_NONE
    )  # its sidecar accepts mTLS (auto mTLS uses it)


@dataclass(frozen=True, slots=True, kw_only=True)
class Service(Record):
    """A Service of the registry, keyed by its host name."""

    name: str = ""
    namespace: str = ""
    ports: tuple[ServicePort, ...] = ()
    endpoints: tuple[Endpoint, ...] = ()
    static: bool | None = field(default=None, metadata=OMIT_NONE)  # from `--endpoint`, not from the files


@dataclass(frozen=True, slots=True)  # positional too: resolution writes Source(resource, file, field)
class Source(Record):
    """Where a value came from: `resource` ("Kind namespace/name", "Istio default", ...), the
    file as loaded and the key path inside the resource."""

    resource: str
    file: str | None = None
    field: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Document(Record):
    """The effective config of one workload's proxy (docs/config-document.md). Consumers fill a
    missing key with its default and ignore keys they do not know."""

    schema: Literal[1] = SCHEMA_VERSION
    workload: Workload = field(default_factory=Workload)
    mesh: Mesh = field(default_factory=Mesh)
    telemetry: Telemetry = field(default_factory=Telemetry)
    tracing: Tracing = field(default_factory=Tracing)
    metrics: Metrics = field(default_factory=Metrics)
    security: Security = field(default_factory=Security)
    sources: dict[str, Source] = field(default_factory=dict)  # key path -> provenance, for people
    warnings: tuple[str, ...] = ()  # resolution notes, in plain sentences
    services: dict[str, Service] | None = field(
        default=None, metadata=OMIT_NONE
    )  # the registry (control plane only)
