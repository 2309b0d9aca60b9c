"""Routing as a pure function (Envoy's route table for one listener): `resolve(kind, target, host,
registry, local)` turns a request's target and Host (HTTP/2's `:path` and `:authority`) into the
`Route` it takes: the cluster, the fixed address or the mesh Service whose endpoints to pick, the
retry attempts, the span's decorator and the metric labels. No I/O; `Proxy._route` caches it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from meshtrace.sidecar.config import Registry, Service
from meshtrace.sidecar.http1 import split_target

INBOUND: Final = "inbound"
OUTBOUND: Final = "outbound"
GATEWAY: Final = "gateway"

RETRY_ATTEMPTS: Final = 3  # Istio's default policy: 2 retries
BLACKHOLE: Final = "BlackHoleCluster"  # Istio's cluster without endpoints, for traffic it refuses
PASSTHROUGH: Final = "PassthroughCluster"  # ALLOW_ANY: unknown hosts go to where they were sent


class LocalReply(Exception):
    """An answer the proxy makes itself, with its response flags."""

    def __init__(self, status: int, body: str, *flags: str, details: str | None = None) -> None:
        super().__init__(body)
        self.status = status
        self.body = body
        self.flags = flags
        self.details = details or body.split(":")[0].replace(" ", "_")


@dataclass(slots=True)
class Route:
    cluster: str
    decorator: str
    route_name: str
    service: Service | None  # mesh service: pick endpoints, add peer metadata
    fixed: tuple[str, int] | None  # inbound app / passthrough destination
    attempts: int
    svc_fqdn: str
    svc_name: str
    svc_namespace: str
    port: int
    path: str
    authority: str
    stat_key: str = ""  # `cluster.<cluster>.upstream_rq_total`, built once per cached route

    def __post_init__(self) -> None:
        self.stat_key = f"cluster.{self.cluster}.upstream_rq_total"


@dataclass(frozen=True, slots=True)
class LocalInfo:
    """What routing needs to know about this sidecar (Envoy's local_info): its app, its
    namespace, the Service it belongs to, and the addresses its own listeners hold."""

    app_host: str
    app_port: int
    namespace: str
    default_service: str | None = None  # gateway: where hosts the registry does not know go
    own_service: Service | None = None
    own_addresses: frozenset[tuple[str, int]] = frozenset()


def resolve(kind: str, target: str, host_header: str | None, registry: Registry, local: LocalInfo) -> Route:
    """The route for a request on a listener of `kind` (inbound, outbound, gateway). Raises
    HttpError (no host to route by) or LocalReply (404 NR: no such Service or port)."""
    host, port, path = split_target(target, host_header)
    authority = host_header or (f"{host}:{port}" if port else host)
    if kind == INBOUND:
        return _inbound(host, port, path, authority, registry.lookup(host) or local.own_service, local)
    svc = registry.lookup(host)
    if svc is None and kind == GATEWAY and local.default_service:
        svc = registry.lookup(local.default_service)
    if svc is not None:
        if port is None or (kind == GATEWAY and port not in svc.ports):
            port = svc.ports[0] if svc.ports else 80
        if svc.ports and port not in svc.ports:
            raise LocalReply(404, f"no route: {svc.fqdn} has no port {port}", "NR")
        return Route(
            cluster=f"outbound|{port}||{svc.fqdn}",
            decorator=f"{svc.fqdn}:{port}/*",
            route_name="default",
            service=svc,
            fixed=None,
            attempts=RETRY_ATTEMPTS,
            svc_fqdn=svc.fqdn,
            svc_name=svc.name,
            svc_namespace=svc.namespace,
            port=port,
            path=path,
            authority=authority,
        )
    if kind == GATEWAY:
        raise LocalReply(404, f"no route: no service named {host!r}", "NR")
    return _allow_any(host, port or 80, path, authority, local)


def _inbound(
    host: str, port: int | None, path: str, authority: str, svc: Service | None, local: LocalInfo
) -> Route:
    """Inbound requests all go to the app; the Service (the one named, else the workload's own)
    names the span and the metric labels, and a further port of the workload's own Service (gRPC
    beside HTTP) goes to that port's targetPort."""
    app = local.app_port
    if svc is not None and svc is local.own_service and port is not None:
        app = svc.app_port(port, app)
    return Route(
        cluster=f"inbound|{app}||",
        decorator=f"{svc.fqdn if svc else host}:{port or app}/*",
        route_name="default",
        service=None,
        fixed=(local.app_host, app),
        attempts=1,
        svc_fqdn=svc.fqdn if svc else host,
        svc_name=svc.name if svc else host,
        svc_namespace=svc.namespace if svc else local.namespace,
        port=port or app,
        path=path,
        authority=authority,
    )


def _allow_any(host: str, port: int, path: str, authority: str, local: LocalInfo) -> Route:
    """A host outside the registry: PassthroughCluster to its original destination, or
    BlackHoleCluster when that is one of this sidecar's own listeners (it would loop until
    connections or timeouts run out)."""
    loop = (host, port) in local.own_addresses
    cluster = BLACKHOLE if loop else PASSTHROUGH
    return Route(
        cluster=cluster,
        decorator=f"{host}:{port}/*",
        route_name="allow_any",
        service=None,
        fixed=None if loop else (host, port),
        attempts=1,
        svc_fqdn=host,
        svc_name=cluster,
        svc_namespace="unknown",
        port=port,
        path=path,
        authority=authority,
    )
