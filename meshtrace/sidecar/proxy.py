"""The request path: inbound (SERVER spans, reporter=destination), outbound (CLIENT spans,
reporter=source) and gateway (both spans) listeners. Per request: route, sampling decision
(meshtrace.propagation), forward with Istio's default retries, stream the answer back, then
record the access log line, the Istio metrics and the span(s) (queued, exported elsewhere).

The per-request steps other protocols (HTTP/2, gRPC) reuse take protocol-neutral inputs:
`_route(kind, target, host, cfg)` (target = the path, host = the authority; `routing.resolve`
cached per config), `_authorize(principal, method, route, cfg)`, `_decide(ex, tracing)` and
`_record(ex, cfg)`, which read the method, target and headers from the `Exchange`'s
`RequestHead` (whatever protocol filled it).

Loops: passthrough to one of the sidecar's own listeners goes to BlackHoleCluster (as Istio's
blackhole filter chains for its capture ports), and every forwarded request carries a `Via`
entry naming the listener that received it; a request whose Via already names the receiving
listener has come round and is refused (Envoy's CDN-Loop filter, with Via as the header)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Final, Protocol

from meshtrace import accesslog
from meshtrace.propagation.context import decide, inject
from meshtrace.sidecar import tcpproxy, upgrade
from meshtrace.sidecar.backend import ConnectFailure, NetworkBackend, Stream
from meshtrace.sidecar.certs import PeerRejected, WorkloadCerts, peer_principal
from meshtrace.sidecar.config import Endpoint, SidecarConfig, Tracing
from meshtrace.sidecar.conn import (
    ClientGone,
    Downstream,
    PeerClosed,
    Pool,
    RefuseConnection,
    SniffingServer,
    Timeouts,
    Upstream,
)
from meshtrace.sidecar.h2conn import negotiated_h2, sniff_preface
from meshtrace.sidecar.http1 import (
    HOP_BY_HOP,
    LAST_CHUNK,
    HttpError,
    RequestHead,
    ResponseHead,
    encode_chunk,
    encode_head,
    simple_response,
)
from meshtrace.sidecar.metrics import (
    PEER_HEADER,
    PEER_ID_HEADER,
    SERIES_LIMIT,
    IstioMetrics,
    Observation,
    peer_metadata,
)
from meshtrace.sidecar.rbac import DENIED_BODY, DENIED_FLAG
from meshtrace.sidecar.rbac import Request as RbacRequest
from meshtrace.sidecar.routing import GATEWAY, INBOUND, OUTBOUND, LocalInfo, LocalReply, Route, resolve
from meshtrace.sidecar.tracing import SPAN_BUFFER_BYTES, SpanExporter, SpanRecord, build_span

if TYPE_CHECKING:
    from meshtrace.sidecar.grpc import GrpcCall

log = logging.getLogger("meshtrace.sidecar")

# Envoy prints response flags in this fixed order (source/common/stream_info/utility.cc).
FLAG_ORDER: Final = (
    "LH", "UH", "UT", "LR", "UR", "UF", "UC", "UO", "NR", "DI", "FI", "RL", "DC", "URX", "RBAC",
)  # fmt: skip
REPLAY_LIMIT: Final = 64 * 1024  # bodies up to this size are kept for retries (Envoy buffers too)
WRITE_HIGH_WATER: Final = 256 * 1024
CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
RESET_BEFORE_HEADERS: Final = "upstream connect error or disconnect/reset before headers. reset reason: "
LOOP_DETECTED: Final = "loop detected: this request already passed "
# the headers `_admit` writes for every request (trace context, Via, decorator, peer metadata): a
# caller's own values are dropped, whatever the HTTP version
REWRITTEN: Final = frozenset(
    {
        "x-request-id",
        "traceparent",
        "tracestate",
        "b3",
        "x-b3-traceid",
        "x-b3-spanid",
        "x-b3-parentspanid",
        "x-b3-sampled",
        "x-b3-flags",
        "x-envoy-decorator-operation",
        PEER_HEADER,
        PEER_ID_HEADER,
        "via",
    }
)
# HTTP/1.1 also answers Expect itself and frames the body anew
_NOT_FORWARDED_UP: Final = HOP_BY_HOP | REWRITTEN | {"expect", "content-length"}
# an answer from a mesh upstream: its peer metadata is for this sidecar, not for the app
_NOT_FORWARDED_DOWN: Final = HOP_BY_HOP | {"content-length", PEER_HEADER, PEER_ID_HEADER}
NOT_FORWARDED_UP, NOT_FORWARDED_DOWN = _NOT_FORWARDED_UP, _NOT_FORWARDED_DOWN  # for `upgrade`


@dataclass(slots=True)
class Identity:
    workload: str
    namespace: str
    pod: str
    ip: str
    labels: dict[str, str]
    app_host: str
    app_port: int
    mode: str  # sidecar | gateway
    default_service: str | None = None
    service_account: str = "default"

    @property
    def node_id(self) -> str:
        kind = "router" if self.mode == "gateway" else "sidecar"
        return f"{kind}~{self.ip}~{self.pod}.{self.namespace}~{self.namespace}.svc.cluster.local"


@dataclass(slots=True)
class Exchange:
    kind: str
    head: RequestHead
    start_ns: int
    t0: float
    peer: tuple[str, int]
    local: tuple[str, int]
    route: Route | None = None
    status: int = 0
    details: str = "-"
    flags: set[str] = field(default_factory=set)
    request_body: int = 0
    response_body: int = 0
    response_head: int = 0
    upstream_host: str = "-"
    upstream_ms: str = "-"
    request_id: str = "-"
    peer_raw: str | None = None
    peer_principal: str = ""  # the other side's SPIFFE id when the hop is mTLS
    sampled: bool = False
    trace_id: bytes = b""
    span_id: bytes = b""
    parent_id: bytes | None = None
    client_span_id: bytes = b""
    protocol: str = "HTTP/1.1"
    grpc: GrpcCall | None = None  # an HTTP/2 gRPC stream's status and message counts


class DownstreamPeer(Protocol):
    """Who sent a request (an HTTP/1.1 connection or an HTTP/2 stream's), as checks read it."""

    principal: str
    peer: tuple[str, int]


def via_names(via: str, received_by: str) -> bool:
    """Whether a Via header (`1.1 a:15001, HTTP/1.1 b (comment)`) has an entry received by
    `received_by`."""
    if not received_by:
        return False
    for entry in via.split(","):
        parts = entry.split()
        if len(parts) >= 2 and parts[1] == received_by:
            return True
    return False


def _flags(flags: set[str]) -> str:
    if not flags:
        return "-"
    return ",".join(f for f in FLAG_ORDER if f in flags) or "-"


# Span and trace ids come from a PRNG seeded once from the OS, as Envoy's do: os.urandom per id
# is a getrandom syscall on every request.
_ids = random.Random()


def _random_id(nbytes: int) -> bytes:
    return (_ids.getrandbits(nbytes * 8) or 1).to_bytes(nbytes, "big")


def _request_id() -> str:
    """A UUIDv4 (version nibble 4, variant 10xx) from the same PRNG: what `uuid.uuid4()` makes
    without its getrandom syscall and object."""
    n = _ids.getrandbits(128) & ~(0xF000 << 64) & ~(0xC000 << 48) | (0x4000 << 64) | (0x8000 << 48)
    h = f"{n:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


ROUTE_CACHE_SIZE: Final = 1024
# longer targets are routed uncached: 1024 keys of 60 KiB heads would hold 120 MiB
ROUTE_CACHE_KEY_LIMIT: Final = 2048


class Proxy:
    def __init__(
        self,
        ident: Identity,
        cfg: SidecarConfig,
        timeouts: Timeouts,
        access_log: bool,
        series_limit: int = SERIES_LIMIT,
        span_buffer_bytes: int = SPAN_BUFFER_BYTES,
        backend: NetworkBackend | None = None,
    ) -> None:
        self.ident = ident
        self.timeouts = timeouts
        self.access_log = access_log
        self.pool = Pool(timeouts.connect, ident.ip, backend)
        self.metrics = IstioMetrics(series_limit)
        self.exporter = SpanExporter(Pool(timeouts.connect, backend=backend), span_buffer_bytes)
        self.counters: dict[str, int] = {}
        self.connections = 0
        self._warned: set[str] = set()
        self.cfg = cfg
        self._peer_meta = ""
        self._local = LocalInfo(ident.app_host, ident.app_port, ident.namespace, ident.default_service)
        # (kind, target, host) -> Route, for the config `_routes_cfg`: routing is a pure function
        # of those, so a keep-alive client asking for the same thing skips name resolution
        self._routes: dict[tuple[str, str, str | None], Route] = {}
        self._routes_cfg: SidecarConfig | None = None
        # per listener kind: the total key and the `downstream_rq_<n>xx` keys by status class
        self._rq_keys = {
            k: (f"{k}.downstream_rq_total", tuple(f"{k}.downstream_rq_{n}xx" for n in range(10)))
            for k in (INBOUND, OUTBOUND, GATEWAY)
        }
        # set by `listening` once the listeners are bound: every (address, port) they hold, and
        # per proxy listener the `Via` received-by it adds
        self.own_addresses: frozenset[tuple[str, int]] = frozenset()
        self._via: dict[str, tuple[str, str]] = {}  # kind -> (received-by, its HTTP/1.1 entry)
        self.loops_detected = 0
        # addresses of mesh workloads (the pushed registry's endpoints): the only peers whose
        # metadata-exchange headers are believed (see `_trusted_peer`)
        self._mesh_ips: frozenset[str] = frozenset()
        # the workload certificate, when the control plane issues one (None: plaintext only)
        self.certs: WorkloadCerts | None = None
        self.rbac_denied = 0
        self.peers_rejected = 0
        self.plaintext_refused = 0
        self.inbound_listener: SniffingServer | None = None  # set once bound, for its counters
        from meshtrace.sidecar.h2proxy import H2Proxy  # it imports this module's types

        self.h2 = H2Proxy(self)
        self.apply(cfg)

    def listening(self, addresses: dict[str, tuple[str, int]]) -> None:
        """The bound listeners by name (`inbound`, `outbound`, `gateway`, `admin`, ...)."""
        self.own_addresses = frozenset(addresses.values())
        self._local = replace(self._local, own_addresses=self.own_addresses)
        self._via = {k: (f"{ip}:{port}", f"1.1 {ip}:{port}") for k, (ip, port) in addresses.items()}
        self._routes = {}

    def apply(self, cfg: SidecarConfig) -> None:
        """Take a new config; requests in flight finish with the one they started with."""
        self.cfg = cfg
        self.metrics.configure(cfg)
        self.exporter.configure(cfg)
        self._peer_meta = peer_metadata(cfg, self.ident.node_id, self.ident.pod)
        own_service = next(
            (s for s in cfg.registry.services.values() if any(e.ip == self.ident.ip for e in s.endpoints)),
            None,
        )
        self._local = replace(self._local, own_service=own_service)
        self._mesh_ips = frozenset(e.ip for s in cfg.registry.services.values() for e in s.endpoints)

    def _trusted_peer(self, ds: DownstreamPeer, head: RequestHead) -> str | None:
        """The caller's peer metadata, if the caller is a mesh workload: an mTLS peer (its
        certificate proved it), or on a plaintext connection an address that is an endpoint of
        the registry the control plane pushed. Anyone else (a client calling the inbound port
        directly) could mint a metric series per forged value."""
        raw = head.index.get(PEER_HEADER)
        if raw is not None and (ds.principal or ds.peer[0] in self._mesh_ips):
            return raw
        return None

    def inbound_tls(self, is_tls: bool) -> ssl.SSLContext | None:
        """The inbound listener's choice for a new connection, by its first byte (Istio's
        PeerAuthentication for the app port): STRICT takes mTLS only, PERMISSIVE both, DISABLE
        plaintext only (a ClientHello then fails as HTTP)."""
        mode = self.cfg.security.inbound_mode(self.ident.app_port)
        certs = self.certs if self.certs is not None and self.certs.ready else None
        if mode == "DISABLE":
            return None
        if is_tls and certs is not None:
            return certs.server
        if mode == "STRICT":
            self.plaintext_refused += 1
            raise RefuseConnection(f"plaintext refused: mTLS is STRICT on port {self.ident.app_port}")
        return None

    def tls_handshake_errors(self) -> int:
        listener = self.inbound_listener
        return listener.handshake_errors if listener is not None else 0

    def _downstream_principal(self, writer: Stream) -> str | None:
        """The verified SPIFFE id of an mTLS peer ("" for plaintext); None refuses the peer."""
        if writer.get_extra_info("ssl_object") is None:
            return ""
        try:
            return peer_principal(writer.get_extra_info("peercert"), self.cfg.mesh.trust_domain)
        except PeerRejected as exc:
            self.peers_rejected += 1
            self._warn_once(f"peer:{exc}", f"mTLS peer refused: {exc}")
            return None

    def _upstream_tls(
        self, route: Route, ep: Endpoint | None, h2: bool = False
    ) -> tuple[ssl.SSLContext | None, Callable[[Stream], None] | None]:
        """mTLS to a mesh endpoint when the DestinationRule says ISTIO_MUTUAL, or (auto mTLS,
        no DestinationRule TLS) when the endpoint's sidecar accepts it; the server must then
        present the endpoint's SPIFFE id."""
        certs = self.certs
        if ep is None or certs is None or not certs.ready:
            return None, None
        mode = self.cfg.security.destination_tls(route.svc_fqdn, route.port)
        if not (mode == "ISTIO_MUTUAL" or (mode is None and ep.mtls)):
            return None, None
        trust_domain, expect = self.cfg.mesh.trust_domain, ep.identity or None

        def check(wire: Stream) -> None:
            try:
                peer_principal(wire.get_extra_info("peercert"), trust_domain, expect)
            except PeerRejected as exc:
                raise ConnectFailure(f"{ep.ip}:{ep.port}: TLS error: {exc}") from None

        return (certs.client_h2 if h2 else certs.client), check

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    # -- listeners

    def handler(self, kind: str) -> Callable[[Stream], Coroutine[Any, Any, None]]:
        async def serve(wire: Stream) -> None:
            await self.serve(wire, kind)

        return serve

    async def serve(self, writer: Stream, kind: str) -> None:
        principal = self._downstream_principal(writer)
        if principal is None:
            writer.abort()
            return
        t = self.timeouts
        if negotiated_h2(writer) or await sniff_preface(writer, t.idle, t.headers):
            await self.h2.serve(writer, kind, principal)
            return
        ds = Downstream(writer, self.timeouts)
        ds.principal = principal
        self.connections += 1
        try:
            while True:
                head = await ds.next_head()
                if head is None:
                    break
                if isinstance(head, HttpError):
                    self.count(f"{kind}.downstream_rq_{head.status}")
                    writer.write(simple_response(head.status, head.detail.encode() + b"\n", keep_alive=False))
                    self._log_bad_request(head, ds)
                    await ds.linger_close()
                    break
                if tcpproxy.is_tunnel(kind, head):  # CONNECT, or a peer sidecar's TCP tunnel
                    await tcpproxy.serve_tunnel(self, ds, head, kind)
                    break
                if not await self._exchange(ds, head, kind):
                    break
                if writer.buffered() > WRITE_HIGH_WATER:
                    await writer.drain()
        except (ConnectionError, OSError):
            pass
        except Exception:  # one bad request must never take the listener down
            log.exception("%s: unexpected error", kind)
        finally:
            self.connections -= 1
            with contextlib.suppress(Exception):
                if writer.buffered():
                    await asyncio.wait_for(writer.drain(), 1.0)
            ds.close()

    def _log_bad_request(self, err: HttpError, ds: Downstream) -> None:
        if self.access_log:
            details = err.detail.replace(" ", "_")
            entry = accesslog.Entry(time.time_ns(), None, None, "HTTP/1.1", err.status, "-", details, 0, 0, 0)
            entry.downstream_local, entry.downstream_remote = ds.local, ds.peer
            self.write_access_log(entry)

    # -- routing

    def _route(self, kind: str, target: str, host: str | None, cfg: SidecarConfig) -> Route:
        """The route for a request target and Host (HTTP/2: `:path`, `:authority`), cached per
        config; raises LocalReply or HttpError (see `routing.resolve`)."""
        if cfg is not self._routes_cfg or len(self._routes) > ROUTE_CACHE_SIZE:
            self._routes = {}
            self._routes_cfg = cfg
        key = (kind, target, host)
        route = self._routes.get(key)
        if route is None:
            route = resolve(kind, target, host, cfg.registry, self._local)
            if len(target) + len(host or "") <= ROUTE_CACHE_KEY_LIMIT:
                self._routes[key] = route
        return route

    # -- one request

    def _decide(self, ex: Exchange, t: Tracing) -> list[tuple[str, str]]:
        """Sampling decision and the tracing headers for the upstream request."""
        head = ex.head
        if ex.kind != GATEWAY and not head.index.get("x-request-id"):
            # the id `decide` would mint, made cheaper; later readers (custom tags) see it as
            # Envoy's do, since Envoy sets it on the request before tracing
            head.index["x-request-id"] = _request_id()
        d = decide(head.index, t.sampling, t.use_request_id, t.read, edge=ex.kind == GATEWAY)
        ex.request_id = d.request_id
        sampled = d.sampled
        if d.reason == "invalid_request_id":
            self._warn_once(
                "rid",
                f"x-request-id {d.request_id[:40]!r} is not a 36-character UUID: requests carrying it are "
                "not traced (Envoy's UUID request-id extension cannot encode a sampling decision in it)",
            )
        ctx = d.context
        ex.sampled = sampled
        ex.trace_id = ctx.trace_id if ctx is not None and ctx.trace_id else _random_id(16)
        ex.parent_id = ctx.span_id if ctx is not None else None
        ex.span_id = _random_id(8)
        up_span, up_parent = ex.span_id, ex.parent_id
        if ex.kind == GATEWAY:
            ex.client_span_id = up_span = _random_id(8)
            up_parent = ex.span_id
        state = ctx.tracestate if ctx is not None else None
        hdrs = [("x-request-id", d.request_id)]
        hdrs += inject(ex.trace_id, up_span, up_parent, sampled, state, t.write).items()
        return hdrs

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("%s", message)

    def _admit(
        self, ex: Exchange, caller: DownstreamPeer, version: str, cfg: SidecarConfig
    ) -> tuple[Route, list[tuple[str, str]]]:
        """What every request goes through before it is forwarded, whatever its HTTP version:
        route (set on `ex`), loop guard, tracing decision, authorization (inbound), and the
        headers to add upstream (trace context, Via, decorator, peer metadata, XFF)."""
        head, kind = ex.head, ex.kind
        try:
            ex.route = route = self._route(kind, head.target, head.index.get("host"), cfg)
        except HttpError as exc:
            raise LocalReply(exc.status, exc.detail) from exc
        me, own_via = self._via[kind]
        via = head.index.get("via")
        if via is not None and via_names(via, me):
            self.loops_detected += 1
            raise LocalReply(502, LOOP_DETECTED + me)
        t = cfg.server if kind == INBOUND else cfg.client
        extra = self._decide(ex, t)
        if version != "1.1":
            own_via = f"{version} {me}"
        extra.append(("via", f"{via}, {own_via}" if via else own_via))
        if kind != INBOUND:
            extra.append(("x-envoy-decorator-operation", route.decorator))
        if route.service is not None:
            extra += ((PEER_ID_HEADER, self.ident.node_id), (PEER_HEADER, self._peer_meta))
        if kind == INBOUND:
            ex.peer_raw = self._trusted_peer(caller, head)
            ex.peer_principal = caller.principal
            self._authorize(caller.principal, head.method, route, cfg)
        elif kind == GATEWAY:
            xff = head.index.get("x-forwarded-for")
            extra.append(("x-forwarded-for", f"{xff}, {caller.peer[0]}" if xff else caller.peer[0]))
            extra.append(("x-forwarded-proto", "http"))
        return route, extra

    async def _exchange(self, ds: Downstream, head: RequestHead, kind: str) -> bool:
        cfg = self.cfg
        ex = Exchange(kind, head, time.time_ns(), time.perf_counter(), ds.peer, ds.local)
        keep = head.keep_alive
        try:
            if head.has_body and head.index.get("expect", "").lower() == "100-continue":
                # Envoy answers 100-continue itself and does not forward Expect
                ds.writer.write(CONTINUE)
            route, extra = self._admit(ex, ds, head.version, cfg)
            if ds.parser.upgraded:  # WebSocket: after the 101 the connection is a tunnel
                keep = False
                await upgrade.forward_upgrade(self, ds, ex, route, extra)
            else:
                keep = await self._forward(ds, ex, route, extra) and keep
        except LocalReply as reply:
            ex.flags.update(reply.flags)
            ex.status = reply.status
            ex.details = reply.details
            body = reply.body.encode()
            if head.has_body and not ds.parser.events:
                keep = False  # the unread request body would be parsed as the next request
            ds.writer.write(simple_response(reply.status, body, keep_alive=keep))
            ex.response_body = len(body)
        except ClientGone:
            ex.flags.add("DC")
            keep = False
        finally:
            self._record(ex, cfg)
        return keep

    def _authorize(self, principal: str, method: str, route: Route, cfg: SidecarConfig) -> None:
        """The AuthorizationPolicies of this workload (Envoy's RBAC filter) for a request from
        `principal` (the peer's SPIFFE id, "" for plaintext): raises LocalReply 403 when denied."""
        authorizer = cfg.security.authorizer
        if not authorizer.active:
            return
        path = route.path.split("?", 1)[0]
        why = authorizer.decide(RbacRequest(principal, method, path, self.ident.app_port))
        if why is not None:
            self.rbac_denied += 1
            raise LocalReply(
                403, DENIED_BODY, DENIED_FLAG, details=f"rbac_access_denied_matched_policy[{why}]"
            )

    def _pick(self, route: Route, tried: set[Endpoint]) -> tuple[tuple[str, int], Endpoint | None]:
        if route.fixed is not None:
            return route.fixed, None
        # a Service without endpoints, or BlackHoleCluster (none by design)
        ep = route.service.pick(tried) if route.service is not None else None
        if ep is None:
            raise LocalReply(503, "no healthy upstream", "UH")
        if not ep.sidecar and route.service is not None:  # reached direct: the port it targets
            return (ep.ip, route.service.static_port(route.port, ep)), ep
        return (ep.ip, ep.port), ep

    async def _forward(
        self, ds: Downstream, ex: Exchange, route: Route, extra: list[tuple[str, str]]
    ) -> bool:
        """Send the request upstream (retrying as Istio does) and stream the answer back.
        Returns whether the downstream connection stays open."""
        head = ex.head
        headers = head.forwardable(_NOT_FORWARDED_UP)
        if "host" not in head.index:
            headers.append(("host", route.authority))
        headers += extra
        if head.chunked:
            headers.append(("transfer-encoding", "chunked"))
        elif head.content_length:
            headers.append(("content-length", str(head.content_length)))
        first_line = f"{head.method} {route.path} HTTP/1.1"
        encoded_head = encode_head(first_line, headers)

        replay: list[bytes] | None = []  # None once the body outgrew REPLAY_LIMIT
        body_done = not head.has_body
        tried: set[Endpoint] = set()
        attempt = 0
        stale_retry = True
        while True:
            attempt += 1
            target, ep = self._pick(route, tried)
            ex.upstream_host = f"{target[0]}:{target[1]}"
            can_retry = attempt < route.attempts and replay is not None
            tls, check = self._upstream_tls(route, ep)
            try:
                up = await self.pool.acquire(*target, tls, check)
            except ConnectFailure:
                if ep is not None:
                    tried.add(ep)
                if can_retry:
                    continue
                ex.details = "upstream_reset_before_response_started{connection_failure}"
                flags = ("UF", "URX") if attempt > 1 else ("UF",)
                raise LocalReply(503, RESET_BEFORE_HEADERS + "connection failure", *flags) from None
            if ep is not None:  # a mesh endpoint: its principal when the hop is mTLS
                ex.peer_principal = ep.identity if tls is not None else ""
            sent = time.perf_counter()
            try:
                if body_done:
                    up.writer.write(encoded_head + self._frame_out(replay or [], head.chunked, True))
                else:
                    replay = await self._send_body(ds, up, encoded_head, ex)
                    body_done = True
                if self.timeouts.upstream:
                    async with asyncio.timeout(self.timeouts.upstream):
                        resp = await up.response_head(head.method == "HEAD")
                else:
                    resp = await up.response_head(head.method == "HEAD")
            except TimeoutError:
                self.pool.discard(up)
                raise LocalReply(504, "upstream request timeout", "UT") from None
            except LocalReply:
                self.pool.discard(up)
                raise
            except (PeerClosed, HttpError, ConnectionError, OSError) as exc:
                self.pool.discard(up)
                if isinstance(exc, ClientGone):
                    raise
                if up.reused and stale_retry and replay is not None:
                    # a pooled connection the upstream had closed: try a fresh one, uncounted
                    stale_retry = False
                    attempt -= 1
                    continue
                ex.details = "upstream_reset_before_response_started{connection_termination}"
                raise LocalReply(503, RESET_BEFORE_HEADERS + "connection termination", "UC") from None
            if resp.status == 503 and attempt < route.attempts and replay is not None:
                self.pool.discard(up)
                if ep is not None:
                    tried.add(ep)
                continue
            if resp.status == 503 and attempt > 1:
                ex.flags.add("URX")
            ex.upstream_ms = str(int((time.perf_counter() - sent) * 1000))
            return await self._respond(ds, ex, up, resp, body_done)

    @staticmethod
    def _frame_out(chunks: list[bytes], chunked: bool, last: bool) -> bytes:
        if not chunked:
            return b"".join(chunks)
        out = b"".join(encode_chunk(c) for c in chunks if c)
        return out + LAST_CHUNK if last else out

    async def _send_body(
        self, ds: Downstream, up: Upstream, encoded_head: bytes, ex: Exchange
    ) -> list[bytes] | None:
        """Stream the request body from the client to `up` as it arrives; returns the chunks kept
        for a retry, or None when the body was too large to keep."""
        head = ex.head
        chunks, done = ds.ready_body()
        total = sum(map(len, chunks))
        up.writer.write(encoded_head + self._frame_out(chunks, head.chunked, done))
        replay = chunks if total <= REPLAY_LIMIT else None
        while not done:
            try:
                chunk = await ds.body_chunk()
            except HttpError as exc:  # the client's body is malformed (e.g. a bad chunk size)
                raise LocalReply(exc.status, exc.detail) from None
            if chunk is None:
                done = True
                if head.chunked:
                    up.writer.write(LAST_CHUNK)
                break
            total += len(chunk)
            up.writer.write(encode_chunk(chunk) if head.chunked else chunk)
            if replay is not None:
                if total <= REPLAY_LIMIT:
                    replay.append(chunk)
                else:
                    replay = None
            if up.writer.buffered() > WRITE_HIGH_WATER:
                await up.writer.drain()
        ex.request_body = total
        return replay

    async def _respond(
        self, ds: Downstream, ex: Exchange, up: Upstream, resp: ResponseHead, body_done: bool
    ) -> bool:
        head = ex.head
        keep = head.keep_alive and body_done
        if ex.kind == INBOUND:
            headers = resp.forwardable()
            if ex.peer_raw is not None:
                headers += ((PEER_ID_HEADER, self.ident.node_id), (PEER_HEADER, self._peer_meta))
        else:
            if ex.route is not None and ex.route.service is not None:
                # only a mesh Service's endpoint answers with peer metadata; a passthrough
                # destination's would be forged
                ex.peer_raw = resp.index.get(PEER_HEADER)
            headers = resp.forwardable(_NOT_FORWARDED_DOWN)
            headers.append(("x-envoy-upstream-service-time", ex.upstream_ms))
        status = resp.status
        no_body = head.method == "HEAD" or status in (204, 304)
        chunked = False
        if resp.content_length is not None:
            headers.append(("content-length", str(resp.content_length)))
        elif not no_body:
            if head.version == "1.1":
                chunked = True
                headers.append(("transfer-encoding", "chunked"))
            else:
                keep = False  # an HTTP/1.0 client reads until close
        if not keep:
            headers.append(("connection", "close"))
        writer = ds.writer
        first, done = up.ready_body()
        sent = sum(map(len, first))
        writer.write(
            encode_head(f"HTTP/1.1 {status} {resp.reason or 'Unknown'}", headers)
            + self._frame_out(first, chunked, done)
        )
        ex.status = status
        ex.details = "via_upstream"
        ex.response_head = resp.raw_size
        reusable = False
        try:
            while not done and (chunk := await up.body_chunk()) is not None:
                sent += len(chunk)
                writer.write(encode_chunk(chunk) if chunked else chunk)
                if writer.buffered() > WRITE_HIGH_WATER:
                    try:
                        await writer.drain()
                    except (ConnectionError, OSError):
                        raise ClientGone("downstream closed during response") from None
            if chunked and not done:
                writer.write(LAST_CHUNK)
            reusable = resp.keep_alive and not up.until_close
        except PeerClosed as exc:
            if isinstance(exc, ClientGone):
                ex.flags.add("DC")
            else:
                ex.flags.add("UC")  # upstream reset mid-body: the client sees a truncated answer
                ex.details = "upstream_reset_after_response_started{connection_termination}"
            keep = False
        finally:
            ex.response_body = sent
            if reusable:
                self.pool.release(up, True)
            else:
                self.pool.discard(up)
        if writer.is_closing():
            ex.flags.add("DC")
            return False
        return keep

    # -- after the request

    def _record(self, ex: Exchange, cfg: SidecarConfig) -> None:
        end_ns = time.time_ns()
        duration_ms = (time.perf_counter() - ex.t0) * 1000.0
        flags = _flags(ex.flags)
        head = ex.head
        route = ex.route
        kind = ex.kind
        counters = self.counters
        total, by_class = self._rq_keys[kind]
        cls = by_class[ex.status // 100 % 10]
        counters[total] = counters.get(total, 0) + 1
        counters[cls] = counters.get(cls, 0) + 1
        if route is not None:
            counters[route.stat_key] = counters.get(route.stat_key, 0) + 1
        request_bytes = head.raw_size + ex.request_body
        response_bytes = ex.response_head + ex.response_body
        if self.access_log:
            self._access_log(ex, flags, duration_ms)
        if route is not None:
            self.metrics.record(
                Observation(
                    outbound=kind != INBOUND,
                    peer_raw=ex.peer_raw,
                    peer_principal=ex.peer_principal,
                    service_fqdn=route.svc_fqdn,
                    service_name=route.svc_name,
                    service_namespace=route.svc_namespace,
                    port=route.port,
                    host=route.authority,
                    status=ex.status,
                    flags=flags,
                    duration_ms=duration_ms,
                    request_bytes=request_bytes,
                    response_bytes=response_bytes,
                    protocol=ex.protocol,
                    grpc=ex.grpc,
                )
            )
        t = cfg.server if kind == INBOUND else cfg.client
        if not (ex.sampled and route is not None and t.reports and ex.trace_id):
            return
        assert t.provider is not None
        name = (head.index.get("x-envoy-decorator-operation") if kind == INBOUND else None) or route.decorator
        rec = SpanRecord(
            trace_id=ex.trace_id,
            span_id=ex.span_id,
            parent_span_id=ex.parent_id,
            name=name,
            server=kind != OUTBOUND,
            start_ns=ex.start_ns,
            end_ns=end_ns,
            request_id=ex.request_id,
            url=f"http://{route.authority}{route.path}",
            method=head.method,
            status=ex.status,
            user_agent=head.index.get("user-agent", "-"),
            peer_address=ex.peer[0],
            downstream_cluster=head.index.get("x-envoy-downstream-service-cluster", "-"),
            upstream_cluster=route.cluster,
            request_size=ex.request_body,
            response_size=ex.response_body,
            flags=flags,
            headers=head.index,
            protocol=ex.protocol,
            grpc=ex.grpc,
        )
        node = self.ident.node_id
        self.exporter.submit(t.provider, build_span(rec, t, cfg, node))
        if kind == GATEWAY:
            rec.server = False
            rec.parent_span_id, rec.span_id = ex.span_id, ex.client_span_id
            self.exporter.submit(t.provider, build_span(rec, t, cfg, node))

    def _access_log(self, ex: Exchange, flags: str, duration_ms: float) -> None:
        idx = ex.head.index
        route = ex.route
        entry = accesslog.Entry(
            start_ns=ex.start_ns,
            method=ex.head.method,
            path=route.path if route else ex.head.target,
            protocol=f"HTTP/{ex.head.version}",
            status=ex.status,
            flags=flags,
            details=ex.details,
            bytes_received=ex.request_body,
            bytes_sent=ex.response_body,
            duration_ms=int(duration_ms),
            upstream_service_time=ex.upstream_ms,
            x_forwarded_for=idx.get("x-forwarded-for"),
            user_agent=idx.get("user-agent"),
            request_id=ex.request_id,
            authority=idx.get("host"),
            upstream_host=ex.upstream_host,
            upstream_cluster=route.cluster if route else None,
            downstream_local=ex.local,
            downstream_remote=ex.peer,
            route_name=route.route_name if route else None,
        )
        self.write_access_log(entry)

    def write_access_log(self, entry: accesslog.Entry) -> None:
        """One line in Istio's default format on stdout (Envoy's `/dev/stdout` access log)."""
        sys.stdout.write(accesslog.istio_line(entry))
