"""WebSocket through the sidecars: the upgrade request is proxied like any request (routing,
tracing headers, peer metadata, RBAC), and once the upstream answers 101 both connections become
one byte tunnel until either side closes. Istio's HTTP routes enable the `websocket` upgrade
only; other Upgrade values are refused with 501 by the parser (`http1`), as Envoy refuses an
upgrade its route does not enable. The request's span and metrics are recorded when the tunnel
ends (status 101, the tunnelled bytes as its sizes), as Envoy's stream lasts as long."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from meshtrace.sidecar import proxy as px
from meshtrace.sidecar.conn import ConnectFailure, Downstream, PeerClosed
from meshtrace.sidecar.http1 import HttpError, encode_head
from meshtrace.sidecar.metrics import PEER_HEADER, PEER_ID_HEADER
from meshtrace.sidecar.tunnel import RawEnd, splice

if TYPE_CHECKING:
    from meshtrace.sidecar.proxy import Exchange, Proxy, Route


async def forward_upgrade(
    proxy: Proxy, ds: Downstream, ex: Exchange, route: Route, extra: list[tuple[str, str]]
) -> None:
    """Send the upgrade request upstream (no retries: Envoy does not retry upgrades); a 101 turns
    the connection into a tunnel, any other answer is passed on and the connection closes."""
    head = ex.head
    upgrade = head.index["upgrade"]
    headers = head.forwardable(px.NOT_FORWARDED_UP)
    if "host" not in head.index:
        headers.append(("host", route.authority))
    headers += extra
    headers += (("connection", "upgrade"), ("upgrade", upgrade))
    target, ep = proxy._pick(route, set())
    ex.upstream_host = f"{target[0]}:{target[1]}"
    tls, check = proxy._upstream_tls(route, ep)
    try:
        up = await proxy.pool.acquire(*target, tls, check)
    except ConnectFailure:
        ex.details = "upstream_reset_before_response_started{connection_failure}"
        raise px.LocalReply(503, px.RESET_BEFORE_HEADERS + "connection failure", "UF") from None
    if ep is not None:
        ex.peer_principal = ep.identity if tls is not None else ""
    sent = time.perf_counter()
    up.writer.write(encode_head(f"{head.method} {route.path} HTTP/1.1", headers))
    try:
        resp = await up.response_head(False)
    except (PeerClosed, HttpError, ConnectionError, OSError):
        proxy.pool.discard(up)
        ex.details = "upstream_reset_before_response_started{connection_termination}"
        raise px.LocalReply(503, px.RESET_BEFORE_HEADERS + "connection termination", "UC") from None
    ex.upstream_ms = str(int((time.perf_counter() - sent) * 1000))
    if resp.status != 101:
        await proxy._respond(ds, ex, up, resp, True)
        return
    if ex.kind == px.INBOUND:
        answer = resp.forwardable()
        if ex.peer_raw is not None:
            answer += ((PEER_ID_HEADER, proxy.ident.node_id), (PEER_HEADER, proxy._peer_meta))
    else:
        if route.service is not None:
            ex.peer_raw = resp.index.get(PEER_HEADER)
        answer = resp.forwardable(px.NOT_FORWARDED_DOWN)
        answer.append(("x-envoy-upstream-service-time", ex.upstream_ms))
    answer += (("connection", "upgrade"), ("upgrade", resp.index.get("upgrade", upgrade)))
    ds.writer.write(encode_head(f"HTTP/1.1 101 {resp.reason or 'Switching Protocols'}", answer))
    ex.status, ex.details, ex.response_head = 101, "via_upstream", resp.raw_size

    def upstream(n: int) -> None:
        ex.request_body += n

    def downstream(n: int) -> None:
        ex.response_body += n

    client, server = RawEnd(ds.writer, ds.parser.rest), RawEnd(up.writer, up.upgraded_rest)
    if not await splice(client, server, proxy.timeouts.idle, upstream, downstream):
        ex.flags.add("UC" if up.writer.eof else "DC")
