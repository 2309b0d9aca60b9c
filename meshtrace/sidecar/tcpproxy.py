"""TCP through the sidecars, and CONNECT on the outbound listener.

Istio captures an app's TCP connections with iptables; a meshtrace app reaches its sidecar
through HTTP_PROXY, so an opaque connection names its destination with `CONNECT host:port` (as
grpcio does when `http_proxy` is set). The Service port's protocol decides what the tunnel
carries: TCP-class ports are proxied as bytes, HTTP-class ports are served as HTTP by the same
listener (HTTP/1.1; h2 where the sidecar speaks it), `auto` ports are detected from the first
bytes. Between two sidecars a TCP connection travels as one HTTP/1.1 exchange to the peer's
inbound listener (over mTLS when the pair has it), both bodies chunked, carrying the peer
metadata Istio exchanges for TCP; the inbound connects to the app port the Service port targets.
Both report Istio's `istio_tcp_*` metrics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Final

from meshtrace import accesslog
from meshtrace.sidecar import proxy as px
from meshtrace.sidecar.backend import ConnectFailure
from meshtrace.sidecar.config import SidecarConfig
from meshtrace.sidecar.conn import Downstream, PeerClosed
from meshtrace.sidecar.http1 import HttpError, RequestHead, encode_head, simple_response, split_authority
from meshtrace.sidecar.metrics import PEER_HEADER, PEER_ID_HEADER, Counter, Observation
from meshtrace.sidecar.protocols import AUTO, detected, handling, looks_like_http
from meshtrace.sidecar.rbac import DENIED_BODY
from meshtrace.sidecar.rbac import Request as RbacRequest
from meshtrace.sidecar.routing import BLACKHOLE
from meshtrace.sidecar.tunnel import ChunkedEnd, End, RawEnd, splice

if TYPE_CHECKING:
    from meshtrace.sidecar.proxy import Proxy, Route

# Marks the sidecar-to-sidecar exchange that carries one TCP connection (its value: the protocol).
TUNNEL_HEADER: Final = "x-meshtrace-tunnel"
ESTABLISHED: Final = b"HTTP/1.1 200 Connection established\r\n\r\n"
TCP_IDLE_TIMEOUT_S: Final = 3600.0  # Envoy's tcp_proxy idle_timeout default


def is_tunnel(kind: str, head: RequestHead) -> bool:
    """Whether this request opens a tunnel rather than being proxied as one HTTP request."""
    return head.method == "CONNECT" or (kind == px.INBOUND and TUNNEL_HEADER in head.index)


async def serve_tunnel(proxy: Proxy, ds: Downstream, head: RequestHead, kind: str) -> None:
    """One CONNECT (outbound) or sidecar tunnel (inbound); the connection ends with it."""
    try:
        if kind == px.OUTBOUND and head.method == "CONNECT":
            await _outbound(proxy, ds, head)
        elif kind == px.INBOUND and head.method != "CONNECT":
            await _inbound(proxy, ds, head)
        else:  # the gateway and the inbound take no CONNECT from clients (Envoy: not configured)
            raise px.LocalReply(501, f"CONNECT is not supported on the {kind} listener")
    except px.LocalReply as reply:
        ds.writer.write(simple_response(reply.status, reply.body.encode(), keep_alive=False))
        await ds.linger_close()


async def _outbound(proxy: Proxy, ds: Downstream, head: RequestHead) -> None:
    cfg = proxy.cfg
    try:
        host, port = split_authority(head.target)
        if not host or port is None:
            raise HttpError(400, "CONNECT needs a host:port target")
        route = proxy._route(px.OUTBOUND, f"http://{head.target}/", None, cfg)
    except HttpError as exc:
        raise px.LocalReply(exc.status, exc.detail) from None
    if route.cluster == BLACKHOLE:
        raise px.LocalReply(502, f"{head.target} is this sidecar's own listener", "NR")
    protocol = route.service.port_spec(port).protocol if route.service is not None else AUTO
    mode = handling(protocol)
    if mode == "none":
        raise px.LocalReply(501, f"port {port} is {protocol}: Istio does not proxy it")
    if mode == "tcp":
        server, peer = await _open_upstream(proxy, route, cfg)
        ds.writer.write(ESTABLISHED)
        await _relay(proxy, RawEnd(ds.writer, ds.parser.rest), server, route, True, peer, cfg)
        return
    ds.writer.write(ESTABLISHED)
    client = RawEnd(ds.writer, ds.parser.rest)
    first = await client.peek(detected, proxy.timeouts.headers)
    if mode == "detect" and not looks_like_http(first):
        try:
            server, peer = await _open_upstream(proxy, route, cfg)
        except px.LocalReply:
            ds.writer.abort()  # the client was told 200 already: a reset, as Envoy's TCP proxy
            return
        await _relay(proxy, client, server, route, True, peer, cfg)
        return
    # HTTP inside the tunnel: the listener serves it as a connection of its own
    client.take_back()
    await proxy.serve(ds.writer, px.OUTBOUND)


async def _open_upstream(
    proxy: Proxy, route: Route, cfg: SidecarConfig
) -> tuple[End, tuple[str | None, str]]:
    """The upstream end and the peer (metadata, principal): a tunnel to the endpoint's sidecar,
    or a plain connection to a host without one."""
    target, ep = proxy._pick(route, set())
    timeout = proxy.timeouts.connect or None
    if ep is None or not ep.sidecar:
        local = proxy.pool.local_addr if target[0].startswith("127.") else None
        try:
            wire = await proxy.pool.backend.connect(*target, None, timeout, local)
        except ConnectFailure:
            raise px.LocalReply(503, px.RESET_BEFORE_HEADERS + "connection failure", "UF") from None
        return RawEnd(wire, []), (None, "")
    tls, check = proxy._upstream_tls(route, ep)
    try:
        up = await proxy.pool.acquire(*target, tls, check)
    except ConnectFailure:
        raise px.LocalReply(503, px.RESET_BEFORE_HEADERS + "connection failure", "UF") from None
    authority = f"{route.svc_fqdn}:{route.port}"
    headers = [
        ("host", authority),
        (TUNNEL_HEADER, "tcp"),
        ("transfer-encoding", "chunked"),
        (PEER_ID_HEADER, proxy.ident.node_id),
        (PEER_HEADER, proxy._peer_meta),
    ]
    up.writer.write(encode_head("POST / HTTP/1.1", headers))
    try:
        async with asyncio.timeout(timeout):
            resp = await up.response_head(False)
    except (PeerClosed, HttpError, TimeoutError, ConnectionError, OSError):
        proxy.pool.discard(up)
        raise px.LocalReply(503, px.RESET_BEFORE_HEADERS + "connection termination", "UC") from None
    if resp.status != 200:
        proxy.pool.discard(up)
        raise px.LocalReply(resp.status, f"the peer sidecar refused the tunnel ({resp.status})")
    return ChunkedEnd(up.writer, up.body_chunk), (resp.index.get(PEER_HEADER), ep.identity if tls else "")


async def _inbound(proxy: Proxy, ds: Downstream, head: RequestHead) -> None:
    """A peer sidecar's tunnel: to the app port the named Service port targets."""
    cfg = proxy.cfg
    try:
        host, port = split_authority(head.index.get("host", ""))
    except HttpError as exc:
        raise px.LocalReply(exc.status, exc.detail) from None
    svc = cfg.registry.lookup(host) or proxy._local.own_service
    if svc is None or port is None or port not in svc.ports:
        raise px.LocalReply(404, f"no route: no TCP port {host}:{port} on this workload", "NR")
    app_port = svc.app_port(port, proxy.ident.app_port)
    authorizer = cfg.security.authorizer
    if authorizer.active:
        # a TCP connection has no method or path: rules that need them do not match it
        why = authorizer.decide(RbacRequest(ds.principal, "", "", app_port))
        if why is not None:
            proxy.rbac_denied += 1
            raise px.LocalReply(403, DENIED_BODY, "RBAC")
    try:
        app = await proxy.pool.backend.connect(
            proxy.ident.app_host, app_port, None, proxy.timeouts.connect or None
        )
    except ConnectFailure:
        raise px.LocalReply(503, px.RESET_BEFORE_HEADERS + "connection failure", "UF") from None
    peer_raw = proxy._trusted_peer(ds, head)
    headers = [("transfer-encoding", "chunked")]
    if peer_raw is not None:
        headers += ((PEER_ID_HEADER, proxy.ident.node_id), (PEER_HEADER, proxy._peer_meta))
    ds.writer.write(encode_head("HTTP/1.1 200 OK", headers))
    route = proxy._route(px.INBOUND, "/", f"{host}:{port}", cfg)
    await _relay(
        proxy,
        ChunkedEnd(ds.writer, ds.body_chunk),
        RawEnd(app, []),
        route,
        False,
        (peer_raw, ds.principal),
        cfg,
    )


async def _relay(
    proxy: Proxy,
    client: End,
    server: End,
    route: Route,
    outbound: bool,
    peer: tuple[str | None, str],
    cfg: SidecarConfig,
) -> None:
    """Splice the tunnel, counting Istio's TCP metrics as the bytes go."""
    observation = Observation(
        outbound=outbound,
        peer_raw=peer[0],
        peer_principal=peer[1],
        service_fqdn=route.svc_fqdn,
        service_name=route.svc_name,
        service_namespace=route.svc_namespace,
        port=route.port,
        host=route.authority,
        status=0,
        flags="-",
        duration_ms=0.0,
        request_bytes=0,
        response_bytes=0,
    )
    cells = proxy.metrics.tcp_cells(observation)
    _add(cells, "TCP_OPENED_CONNECTIONS")(1)
    proxy.count("tcp.downstream_cx_total")
    start_ns, began = time.time_ns(), time.monotonic()
    received, sent = _Tally(_add(cells, "TCP_RECEIVED_BYTES")), _Tally(_add(cells, "TCP_SENT_BYTES"))
    # read before the splice closes both connections
    upstream = _address(server.wire.get_extra_info("peername"))
    local, remote = (_address(client.wire.get_extra_info(k)) for k in ("sockname", "peername"))
    try:
        await splice(client, server, TCP_IDLE_TIMEOUT_S, received, sent)
    finally:
        _add(cells, "TCP_CLOSED_CONNECTIONS")(1)
        if proxy.access_log:
            duration_ms = int((time.monotonic() - began) * 1000)
            entry = accesslog.tcp_entry(start_ns, received.total, sent.total, duration_ms)
            entry.upstream_host = f"{upstream[0]}:{upstream[1]}" if upstream else None
            entry.upstream_cluster = route.cluster
            entry.downstream_local, entry.downstream_remote = local, remote
            proxy.write_access_log(entry)


def _address(info: object) -> tuple[str, int] | None:
    """(host, port) of a socket address as asyncio reports it (IPv6 adds flow info and scope)."""
    if isinstance(info, tuple) and len(info) >= 2:
        return str(info[0]), int(info[1])
    return None


class _Tally:
    """A byte counter that also keeps the connection's total (for its access-log line)."""

    def __init__(self, add: Callable[[int], None]) -> None:
        self.add = add
        self.total = 0

    def __call__(self, n: int) -> None:
        self.total += n
        self.add(n)


def _add(cells: Mapping[str, Counter], key: str) -> Callable[[int], None]:
    """Adds to one TCP metric's counter (nothing when the metric is disabled)."""
    cell = cells.get(key)
    if cell is None:
        return lambda n: None

    def add(n: int) -> None:
        cell.value += n

    return add
