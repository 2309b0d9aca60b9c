"""HTTP/2 stream proxying: each request stream on an h2 listener connection goes upstream as an
h2 stream (Envoy's USE_DOWNSTREAM_PROTOCOL), multiplexed over pooled upstream connections, with
the Proxy's own routing, authorization, tracing decision and recording per stream, gRPC status,
`grpc-timeout` and Istio's retry policy for gRPC (`grpc.py`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from h2.errors import ErrorCodes

from meshtrace.sidecar import grpc
from meshtrace.sidecar.backend import AsyncioBackend, ConnectFailure, NetworkBackend
from meshtrace.sidecar.backend import Stream as NetworkStream
from meshtrace.sidecar.h2conn import (
    END,
    MAX_HEADER_LIST_SIZE,
    Data,
    H2Conn,
    Head,
    Headers,
    Stream,
    StreamEvent,
    StreamGone,
    Trailers,
    header_list_size,
)
from meshtrace.sidecar.http1 import HOP_BY_HOP, RequestHead
from meshtrace.sidecar.metrics import PEER_HEADER, PEER_ID_HEADER
from meshtrace.sidecar.proxy import REWRITTEN, Exchange
from meshtrace.sidecar.routing import INBOUND, LocalReply

if TYPE_CHECKING:
    from meshtrace.sidecar.config import Endpoint, SidecarConfig
    from meshtrace.sidecar.proxy import Proxy, Route

log = logging.getLogger("meshtrace.sidecar")

REPLAY_LIMIT: Final = 64 * 1024  # as HTTP/1.1: request bodies up to this are kept for retries
# connection-specific fields RFC 9113 8.2.2 forbids in HTTP/2; REWRITTEN: those the proxy writes
_CONNECTION_SPECIFIC: Final = (HOP_BY_HOP - {"te"}) | {"host"}
_NOT_FORWARDED_UP: Final = _CONNECTION_SPECIFIC | REWRITTEN
_NOT_FORWARDED_DOWN: Final = _CONNECTION_SPECIFIC | {PEER_HEADER, PEER_ID_HEADER}
TE_OK: Final = "trailers"
# a grpc-timeout that passed: Envoy's HTTP connection manager ends the stream at the route's max
# stream duration, which Istio's routes take from grpc-timeout (grpc_timeout_header_max: 0)
DURATION_TIMEOUT: Final = "downstream duration timeout"
MAX_DURATION: Final = "max_duration_timeout"
RESET_BEFORE_HEADERS: Final = "upstream connect error or disconnect/reset before headers. reset reason: "


@dataclass(slots=True)
class Caller:
    """The downstream side of one stream, as the Proxy's checks read it."""

    peer: tuple[str, int]
    local: tuple[str, int]
    principal: str


class Replay:
    """The request body kept for a retry (until it outgrows REPLAY_LIMIT) and how it ended."""

    __slots__ = ("chunks", "ended", "kept", "size", "trailers")

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.trailers: Headers | None = None
        self.ended = False
        self.kept = True
        self.size = 0

    def add(self, data: bytes) -> None:
        self.size += len(data)
        if self.kept and self.size <= REPLAY_LIMIT:
            self.chunks.append(data)
        else:
            self.kept, self.chunks = False, []

    @property
    def replayable(self) -> bool:
        return self.ended and self.kept


def request_head(headers: Headers) -> RequestHead:
    """The h2 request as the Proxy's RequestHead: pseudo-headers give method, target (`:path`)
    and Host (`:authority`); raw_size is the header list size."""
    pseudo = {k: v for k, v in headers if k.startswith(":")}
    regular = [(k, v) for k, v in headers if not k.startswith(":")]
    index: dict[str, str] = {}
    for k, v in regular:
        # RFC 9113 8.2.3: cookie crumbs are joined with "; ", other repeats with ", "
        sep = "; " if k == "cookie" else ", "
        index[k] = f"{index[k]}{sep}{v}" if k in index else v
    authority = pseudo.get(":authority") or index.get("host", "")
    index["host"] = authority
    cl = index.get("content-length", "")
    return RequestHead(
        headers=regular,
        index=index,
        version="2",
        keep_alive=True,
        chunked=False,
        content_length=int(cl) if cl.isdigit() else None,
        names=[k for k, _ in regular],
        method=pseudo.get(":method", "GET"),
        target=pseudo.get(":path", "/"),
        raw_size=header_list_size(headers),
    )


class H2Pool:
    """Upstream h2 connections by (host, port, tls): a request takes a connection with a free
    stream slot (the peer's MAX_CONCURRENT_STREAMS), else opens another. A connection that got
    GOAWAY takes no new streams and leaves the pool once its streams are done."""

    def __init__(
        self,
        connect_timeout: float,
        local_ip: str | None = None,
        idle_timeout: float = 0.0,
        backend: NetworkBackend | None = None,
    ) -> None:
        self.backend: NetworkBackend = backend or AsyncioBackend()
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.local_addr = (local_ip, 0) if local_ip else None
        self.conns: dict[tuple[str, int, bool], list[H2Conn]] = {}
        self._connecting: dict[tuple[str, int, bool], asyncio.Task[H2Conn]] = {}
        self._readers: set[asyncio.Task[None]] = set()
        self.opened = 0

    async def acquire(
        self, host: str, port: int, tls: ssl.SSLContext | None, check: Callable[[NetworkStream], None] | None
    ) -> H2Conn:
        """A connection with a free stream slot. While one is being opened for the address,
        other requests wait for it rather than each opening their own (Envoy queues them on
        the pending connection too)."""
        key = (host, port, tls is not None)
        while True:
            for conn in list(self.conns.get(key, ())):
                if conn.capacity() > 0:
                    return conn
            pending = self._connecting.get(key)
            if pending is not None and pending.done():
                # finished, its done callback not yet run: awaiting it would not yield, and this
                # loop would spin without ever letting that callback (or anything else) run
                self._forget_pending(key, pending)
                pending = None
            if pending is None:
                pending = asyncio.get_running_loop().create_task(self._connect(key, tls, check))
                self._connecting[key] = pending
                pending.add_done_callback(lambda t: self._forget_pending(key, t))
            # its failure (ConnectFailure) is every waiting request's; once it is up, look again
            # for a slot: the requests that waited share it as its limit allows
            await asyncio.shield(pending)

    def _forget_pending(self, key: tuple[str, int, bool], task: asyncio.Task[H2Conn]) -> None:
        if self._connecting.get(key) is task:
            del self._connecting[key]

    async def _connect(
        self,
        key: tuple[str, int, bool],
        tls: ssl.SSLContext | None,
        check: Callable[[NetworkStream], None] | None,
    ) -> H2Conn:
        """A new connection, returned once the peer's SETTINGS arrived (its stream limit)."""
        host, port, _ = key
        local = self.local_addr if host.startswith("127.") else None
        wire = await self.backend.connect(host, port, tls, self.connect_timeout or None, local)
        if check is not None:
            try:
                check(wire)
            except ConnectFailure:
                wire.abort()
                raise
        conn = H2Conn(wire, client_side=True)
        conn.start()
        conn.close_when_idle(self.idle_timeout)
        conn.on_idle = lambda c: self._tidy(key, c)
        task = asyncio.get_running_loop().create_task(conn.run())
        self._readers.add(task)
        task.add_done_callback(self._readers.discard)
        self.opened += 1
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.connect_timeout or None):
                await conn.settled.wait()
        if conn.closed or not conn.settled.is_set():
            conn.close()
            why = conn.error or "not an HTTP/2 server"
            raise ConnectFailure(f"{host}:{port}: no HTTP/2 SETTINGS ({why})")
        self.conns.setdefault(key, []).append(conn)
        return conn

    def _tidy(self, key: tuple[str, int, bool], conn: H2Conn) -> None:
        """Drop a closed connection, or a GOAWAY'd one whose streams are done."""
        if conn.closed or (conn.goaway and not conn.streams):
            conns = self.conns.get(key, [])
            if conn in conns:
                conns.remove(conn)
            if not conn.closed:
                conn.close()

    def close_all(self) -> None:
        for conns in self.conns.values():
            for conn in list(conns):
                conn.close()
        self.conns.clear()


class H2Proxy:
    """The Proxy's HTTP/2 side: serves h2 downstream connections stream by stream."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.pool = H2Pool(proxy.timeouts.connect, proxy.ident.ip, proxy.timeouts.idle, proxy.pool.backend)
        self._tasks: set[asyncio.Task[None]] = set()

    async def serve(self, wire: NetworkStream, kind: str, principal: str) -> None:
        """One downstream h2 connection until it ends; each request stream runs as its task."""
        peer = wire.get_extra_info("peername") or ("", 0)
        local = wire.get_extra_info("sockname") or ("", 0)
        caller = Caller((peer[0], peer[1]), (local[0], local[1]), principal)
        conn = H2Conn(wire, client_side=False)
        loop = asyncio.get_running_loop()
        mine: set[asyncio.Task[None]] = set()

        def on_request(stream: Stream) -> None:
            task = loop.create_task(self.stream(stream, kind, caller))
            mine.add(task)
            self._tasks.add(task)
            task.add_done_callback(mine.discard)
            task.add_done_callback(self._tasks.discard)

        conn.on_request = on_request
        conn.start()
        conn.close_when_idle(self.proxy.timeouts.idle)
        self.proxy.count(f"{kind}.downstream_cx_http2_total")  # Envoy's per-listener stat
        self.proxy.connections += 1
        try:
            await conn.run()
        finally:
            self.proxy.connections -= 1
        if conn.error:
            self.proxy.count(f"{kind}.http2.rx_protocol_error")
            log.info("%s: h2 connection from %s:%s closed: %s", kind, *caller.peer, conn.error)
        if mine:  # streams see the connection gone (StreamGone) and record themselves
            await asyncio.wait(mine, timeout=5.0)

    async def stream(self, ds: Stream, kind: str, caller: Caller) -> None:
        """One request stream: route, decide, forward, record (the h2 `_exchange`)."""
        proxy = self.proxy
        cfg = proxy.cfg
        try:
            first = await ds.next_event()
        except StreamGone:
            ds.finish()
            return
        assert isinstance(first, Head)
        head = request_head(first.headers)
        ex = Exchange(kind, head, time.time_ns(), time.perf_counter(), caller.peer, caller.local)
        ex.protocol = "HTTP/2"
        call = grpc.GrpcCall.of(head) if grpc.is_grpc(head.index.get("content-type")) else None
        ex.grpc = call
        try:
            await self._exchange(ds, first, ex, caller, cfg, call)
        except LocalReply as reply:
            ex.flags.update(reply.flags)
            ex.status, ex.details = reply.status, reply.details
            # a passed grpc-timeout is DEADLINE_EXCEEDED, whatever its HTTP status maps to
            deadline = grpc.DEADLINE_EXCEEDED if reply.details == MAX_DURATION else None
            await self._local_reply(ds, ex, reply.status, reply.body, call, deadline)
        except StreamGone:
            ex.flags.add("DC")
            with contextlib.suppress(Exception):
                ds.reset(ErrorCodes.CANCEL)
        except Exception:  # one bad stream must never take the connection down
            log.exception("%s: unexpected error on an h2 stream", kind)
            ex.status = ex.status or 500
            with contextlib.suppress(Exception):
                ds.reset(ErrorCodes.INTERNAL_ERROR)
        finally:
            ds.finish()
            proxy._record(ex, cfg)

    async def _local_reply(
        self,
        ds: Stream,
        ex: Exchange,
        status: int,
        body: str,
        call: grpc.GrpcCall | None,
        grpc_status: int | None = None,
    ) -> None:
        """Answer on the stream: a trailers-only gRPC answer for gRPC requests (the HTTP status
        mapped as Envoy maps it, unless `grpc_status` says), else the status and a text body."""
        try:
            if call is not None:
                call.status = grpc.http_to_grpc(status) if grpc_status is None else grpc_status
                call.message = body
                ex.status = 200
                ds.send_headers(grpc.local_reply_headers(call.status, body), end=True)
            else:
                data = body.encode()
                ds.send_headers(
                    [
                        (":status", str(status)),
                        ("content-type", "text/plain"),
                        ("content-length", str(len(data))),
                    ]
                )
                await ds.send_data(data, end=True)
                ex.response_body = len(data)
        except StreamGone:
            ex.flags.add("DC")
        # the rest of the request is not wanted: RST_STREAM(NO_ERROR) per RFC 9113 8.1
        with contextlib.suppress(Exception):
            if not ds.remote_ended:
                ds.reset(ErrorCodes.NO_ERROR)

    async def _exchange(
        self,
        ds: Stream,
        first: Head,
        ex: Exchange,
        caller: Caller,
        cfg: SidecarConfig,
        call: grpc.GrpcCall | None,
    ) -> None:
        proxy = self.proxy
        head = ex.head
        if head.raw_size > MAX_HEADER_LIST_SIZE:
            raise LocalReply(431, "request headers too large")
        if head.method == "CONNECT":
            raise LocalReply(501, "CONNECT is not supported")
        route, extra = proxy._admit(ex, caller, "2", cfg)
        up_headers = [
            (":method", head.method),
            (":scheme", "http"),
            (":authority", route.authority),
            (":path", route.path),
            # RFC 9113 8.2.2: TE only as "trailers" (which gRPC requires)
            *((k, v) for k, v in head.headers if k not in _NOT_FORWARDED_UP and (k != "te" or v == TE_OK)),
            *extra,
        ]
        deadline = grpc.parse_timeout(head.index.get("grpc-timeout"))
        upstream = self.proxy.timeouts.upstream or None
        bound = min(b for b in (deadline, upstream, float("inf")) if b is not None)
        if bound == float("inf"):
            await self._forward(ds, first, ex, route, up_headers, call)
            return
        try:
            async with asyncio.timeout(bound):
                await self._forward(ds, first, ex, route, up_headers, call)
        except TimeoutError:
            by_deadline = bound == deadline
            if not by_deadline:
                ex.flags.add("UT")
            if ex.status:  # the answer had begun: the stream can only be reset
                ds.reset(ErrorCodes.CANCEL)
                return
            if by_deadline:
                raise LocalReply(408, DURATION_TIMEOUT, details=MAX_DURATION) from None
            raise LocalReply(504, "upstream request timeout", "UT") from None

    async def _forward(
        self,
        ds: Stream,
        first: Head,
        ex: Exchange,
        route: Route,
        up_headers: Headers,
        call: grpc.GrpcCall | None,
    ) -> None:
        """Attempts (Istio's retry policy) until an answer to forward, then stream it back."""
        proxy = self.proxy
        policy = grpc.RetryPolicy(attempts=route.attempts)
        replay = Replay()
        replay.ended = first.end
        pump: asyncio.Task[None] | None = None
        holder: list[Stream] = []
        tried: set[Endpoint] = set()
        attempt = 0
        try:
            while True:
                attempt += 1
                # nothing of the request consumed yet, or all of it kept for a replay
                can_retry = attempt < policy.attempts and (pump is None or replay.replayable)
                target, ep = proxy._pick(route, tried)
                ex.upstream_host = f"{target[0]}:{target[1]}"
                try:
                    up = await self._open(ex, route, target, ep, up_headers, replay)
                except (ConnectFailure, StreamGone) as exc:
                    if ep is not None:
                        tried.add(ep)
                    if can_retry and "connect-failure" in policy.retry_on:
                        continue
                    ex.details = "upstream_reset_before_response_started{connection_failure}"
                    flags = ("UF", "URX") if attempt > 1 else ("UF",)
                    raise LocalReply(503, RESET_BEFORE_HEADERS + "connection failure", *flags) from exc
                holder[:] = [up]
                ds.linked = up  # a client reset cancels the upstream stream
                sent = time.perf_counter()
                if pump is None:
                    pump = asyncio.get_running_loop().create_task(self._pump(ds, holder, replay, ex, call))
                elif replay.chunks or replay.trailers:
                    await self._replay(up, replay)
                try:
                    resp = await self._response_head(up)
                except StreamGone as gone:
                    up.finish()
                    if ds.gone is not None:
                        raise ds.gone from None
                    if ep is not None:
                        tried.add(ep)
                    if gone.refused and can_retry and grpc.retry_reason(policy, None, None, refused=True):
                        continue
                    why = "remote refused stream reset" if gone.refused else "remote reset"
                    ex.details = "upstream_reset_before_response_started{remote_reset}"
                    raise LocalReply(503, RESET_BEFORE_HEADERS + why, "UR") from None
                status = int(dict(resp.headers).get(":status", "0") or 0)
                gstatus = grpc.status_of(dict(resp.headers)) if resp.end else None
                # the request must be complete (and kept) by now for a retry to replay it
                can_retry = attempt < policy.attempts and (pump is None or pump.done()) and replay.replayable
                if can_retry and grpc.retry_reason(policy, status, gstatus):
                    up.reset(ErrorCodes.CANCEL)
                    if ep is not None:
                        tried.add(ep)
                    continue
                if attempt > 1 and (status >= 500 or gstatus not in (None, grpc.OK)):
                    ex.flags.add("URX")
                ex.upstream_ms = str(int((time.perf_counter() - sent) * 1000))
                await self._respond(ds, up, resp, ex, call)
                return
        finally:
            await self._abandon(pump, holder)

    async def _open(
        self,
        ex: Exchange,
        route: Route,
        target: tuple[str, int],
        ep: Endpoint | None,
        up_headers: Headers,
        replay: Replay,
    ) -> Stream:
        """An upstream stream for one attempt (mTLS to a mesh endpoint when the hop is)."""
        tls, check = self.proxy._upstream_tls(route, ep, h2=True)
        conn = await self.pool.acquire(*target, tls, check)
        bodiless = replay.ended and not replay.chunks and not replay.trailers
        up = conn.open_stream(up_headers, end=bodiless)
        if ep is not None:  # a mesh endpoint: its principal when the hop is mTLS
            ex.peer_principal = ep.identity if tls is not None else ""
        return up

    @staticmethod
    async def _abandon(pump: asyncio.Task[None] | None, holder: list[Stream]) -> None:
        """After the exchange, however it ended: stop the request pump and reset an upstream
        stream left open (a timeout, an error)."""
        if pump is not None and not pump.done():
            pump.cancel()
            with contextlib.suppress(BaseException):
                await pump
        if holder and holder[0].gone is None and holder[0].id in holder[0].conn.streams:
            holder[0].reset(ErrorCodes.CANCEL)

    @staticmethod
    async def _response_head(up: Stream) -> Head:
        while True:
            event = await up.next_event()
            if isinstance(event, Head) and not event.informational:
                return event
            if not isinstance(event, Head):
                raise StreamGone("upstream sent no response head", ErrorCodes.PROTOCOL_ERROR)

    @staticmethod
    async def _replay(up: Stream, replay: Replay) -> None:
        for i, chunk in enumerate(replay.chunks):
            last = i == len(replay.chunks) - 1 and replay.trailers is None
            await up.send_data(chunk, end=last)
        if replay.trailers is not None:
            up.send_trailers(replay.trailers)

    async def _pump(
        self, ds: Stream, holder: list[Stream], replay: Replay, ex: Exchange, call: grpc.GrpcCall | None
    ) -> None:
        """The request body (and trailers), downstream to the current upstream stream, each DATA
        acknowledged once written. A client reset cancels the upstream stream."""
        if replay.ended:
            return
        try:
            while True:
                event = await ds.next_event()
                up = holder[0]
                if isinstance(event, Data):
                    replay.add(event.data)
                    ex.request_body += len(event.data)
                    if call is not None:
                        call.requests.feed(event.data)
                    await up.send_data(event.data, end=event.end)
                    ds.ack(event.flow)
                    if event.end:
                        break
                elif isinstance(event, Trailers):
                    replay.trailers = event.headers
                    up.send_trailers(event.headers)
                    break
                elif event is END:
                    await up.send_data(b"", end=True)
                    break
            replay.ended = True
        except StreamGone:
            if ds.gone is not None and holder:
                holder[0].reset(ErrorCodes.CANCEL)

    async def _respond(
        self, ds: Stream, up: Stream, resp: Head, ex: Exchange, call: grpc.GrpcCall | None
    ) -> None:
        """Stream the answer back: head, DATA (acknowledged upstream as written downstream),
        trailers; gRPC status from the trailers or a trailers-only head."""
        proxy = self.proxy
        index = dict(resp.headers)
        headers = [(k, v) for k, v in resp.headers if k not in _NOT_FORWARDED_DOWN]
        if ex.kind == INBOUND:
            if ex.peer_raw is not None:
                headers += ((PEER_ID_HEADER, proxy.ident.node_id), (PEER_HEADER, proxy._peer_meta))
        else:
            if ex.route is not None and ex.route.service is not None:
                ex.peer_raw = index.get(PEER_HEADER)
            headers.append(("x-envoy-upstream-service-time", ex.upstream_ms))
        ex.status = int(index.get(":status", "0") or 0)
        ex.details = "via_upstream"
        ex.response_head = header_list_size(resp.headers)
        if call is not None and resp.end:
            self._grpc_status(call, index)
        try:
            ds.send_headers(headers, end=resp.end)
            if not resp.end:
                await self._relay_body(ds, up, ex, call)
        except StreamGone:
            if ds.gone is not None:
                ex.flags.add("DC")
                up.reset(ErrorCodes.CANCEL)
            else:
                ex.flags.add("UR")  # upstream reset mid-answer: the client's stream is reset too
                ex.details = "upstream_reset_after_response_started{remote_reset}"
                code = up.gone.code if up.gone is not None else ErrorCodes.INTERNAL_ERROR
                with contextlib.suppress(Exception):
                    ds.reset(code)
        finally:
            up.finish()

    async def _relay_body(self, ds: Stream, up: Stream, ex: Exchange, call: grpc.GrpcCall | None) -> None:
        while True:
            event: StreamEvent = await up.next_event()
            if isinstance(event, Data):
                ex.response_body += len(event.data)
                if call is not None:
                    call.responses.feed(event.data)
                await ds.send_data(event.data, end=event.end)
                up.ack(event.flow)
                if event.end:
                    return
            elif isinstance(event, Trailers):
                if call is not None:
                    self._grpc_status(call, dict(event.headers))
                ds.send_trailers([(k, v) for k, v in event.headers if k not in _NOT_FORWARDED_DOWN])
                return
            elif event is END:
                await ds.send_data(b"", end=True)
                return

    @staticmethod
    def _grpc_status(call: grpc.GrpcCall, index: dict[str, str]) -> None:
        call.status = grpc.status_of(index)
        call.message = index.get("grpc-message")

    def close(self) -> None:
        self.pool.close_all()
