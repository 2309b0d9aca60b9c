"""Connections: `http1` parsers over a `backend.Stream`. A downstream connection hands out
requests and their body chunks as they arrive (pull-based: no task per connection beyond the
server's own, no body buffering); upstream connections live in a keep-alive pool per address,
opened through a `backend.NetworkBackend`. The listeners (`serve`, `SniffingServer`) accept on
asyncio sockets."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import ssl
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, Final

from meshtrace.sidecar.backend import AsyncioBackend, ConnectFailure, NetworkBackend, Stream, Wire
from meshtrace.sidecar.http1 import (
    END_OF_MESSAGE,
    Data,
    EndOfMessage,
    Event,
    HttpError,
    RequestHead,
    RequestParser,
    ResponseHead,
    ResponseParser,
)

MAX_IDLE_PER_ADDRESS: Final = 64


class PeerClosed(Exception):
    """The other side closed or reset the connection before the message was complete."""


def _take_ready(events: deque[Event]) -> tuple[list[bytes], bool]:
    """Body chunks already parsed (no waiting) and whether the body is complete: lets the proxy
    write a head and the body that came with it in one send."""
    chunks: list[bytes] = []
    while events:
        item = events[0]
        if isinstance(item, Data):
            chunks.append(item.data)
        elif isinstance(item, EndOfMessage):
            events.popleft()
            return chunks, True
        else:
            return chunks, False
        events.popleft()
    return chunks, False


class ClientGone(PeerClosed):
    """The downstream client closed or reset its connection."""


class Timeouts:
    """Per-listener timeouts in seconds (0 = none). Envoy's stream idle timeout is 5 min, its
    downstream idle timeout 1 h; the header timeout is the slowloris guard."""

    def __init__(
        self, idle: float = 300.0, headers: float = 10.0, connect: float = 10.0, upstream: float = 0.0
    ) -> None:
        self.idle = idle
        self.headers = headers
        self.connect = connect
        self.upstream = upstream


Handler = Callable[[Wire], Coroutine[Any, Any, None]]


class _Accepted(Wire):
    """A Wire that runs `handler` as one task per accepted connection."""

    def __init__(self, handler: Handler, tasks: set[asyncio.Task[None]]) -> None:
        super().__init__()
        self._handler = handler
        self._tasks = tasks  # the listener's, so running handlers are not garbage-collected

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        task = self.loop.create_task(self._handler(self))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _accepted(handler: Handler) -> Callable[[], Wire]:
    """The protocol factory of a listener running `handler` per connection."""
    return functools.partial(_Accepted, handler, set())


async def serve(handler: Handler, host: str, port: int) -> asyncio.Server:
    """A listening server (not yet serving) running `handler` as one task per connection."""
    return await asyncio.get_running_loop().create_server(
        _accepted(handler), host, port, reuse_address=True, backlog=1024, start_serving=False
    )


TLS_RECORD_HANDSHAKE: Final = 0x16  # the first byte of a TLS ClientHello


class RefuseConnection(Exception):
    """The listener's policy refuses this connection (plaintext to a STRICT mTLS port)."""


# first byte is TLS -> the context to terminate TLS with, None for plaintext; or RefuseConnection
TlsChoice = Callable[[bool], ssl.SSLContext | None]


class SniffingServer:
    """A listener that reads nothing but peeks at each connection's first byte before choosing
    plaintext or TLS for it, as Envoy's TLS inspector does, so one port can accept both (Istio's
    PERMISSIVE mode). The peeked byte stays in the socket for the TLS or HTTP layer."""

    def __init__(
        self, sock: socket.socket, factory: Callable[[], Wire], choose: TlsChoice, timeouts: Timeouts
    ) -> None:
        self.sockets = [sock]
        self._factory = factory
        self._choose = choose
        self._timeouts = timeouts
        self._task: asyncio.Task[None] | None = None
        self._setups: set[asyncio.Task[None]] = set()
        self.handshake_errors = 0

    async def start_serving(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._accept_loop())

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self.sockets[0].close()

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        sock = self.sockets[0]
        while True:
            try:
                conn, _ = await loop.sock_accept(sock)
            except OSError:  # EMFILE and the like: the listener stays, as Envoy's does
                await asyncio.sleep(0.01)
                continue
            task = loop.create_task(self._setup(conn))
            self._setups.add(task)
            task.add_done_callback(self._setups.discard)

    async def _first_byte(self, conn: socket.socket) -> bytes:
        loop = asyncio.get_running_loop()
        readable: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not readable.done():
                readable.set_result(None)

        loop.add_reader(conn.fileno(), wake)
        try:
            async with asyncio.timeout(self._timeouts.headers or None):
                await readable
        finally:
            loop.remove_reader(conn.fileno())
        return conn.recv(1, socket.MSG_PEEK)

    async def _setup(self, conn: socket.socket) -> None:
        conn.setblocking(False)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            first = await self._first_byte(conn)
            if not first:
                conn.close()
                return
            ctx = self._choose(first[0] == TLS_RECORD_HANDSHAKE)
            loop = asyncio.get_running_loop()
            if ctx is None:
                await loop.connect_accepted_socket(self._factory, conn)
            else:
                timeout = self._timeouts.headers or None
                await loop.connect_accepted_socket(
                    self._factory, conn, ssl=ctx, ssl_handshake_timeout=timeout
                )
        except RefuseConnection:  # counted by the chooser, which knows why
            conn.close()
        except (OSError, TimeoutError, ssl.SSLError, ConnectionError):
            self.handshake_errors += 1
            conn.close()
        except Exception:  # never leak a socket, whatever went wrong
            conn.close()
            raise


async def serve_sniffing(
    handler: Handler, host: str, port: int, choose: TlsChoice, timeouts: Timeouts
) -> SniffingServer:
    """Like `serve`, for a listener that takes TLS and/or plaintext by the first byte."""
    sock = socket.create_server((host, port), reuse_port=False, backlog=1024)
    sock.setblocking(False)
    return SniffingServer(sock, _accepted(handler), choose, timeouts)


class Downstream:
    """One client connection. `next_head()` waits for a request head; `body_chunk()` returns
    the next de-chunked body piece, or None when the request body is complete."""

    __slots__ = (
        "_idle_since",
        "_timer",
        "_waiting",
        "local",
        "parser",
        "peer",
        "principal",
        "timed_out",
        "timeouts",
        "writer",
    )

    def __init__(self, wire: Stream, timeouts: Timeouts) -> None:
        self.writer = wire
        self.timeouts = timeouts
        self.parser = RequestParser()
        wire.set_feed(self.parser.feed)
        self.timed_out = False
        self._timer: asyncio.TimerHandle | None = None
        self._waiting = False  # in next_head, waiting for a request to begin
        self._idle_since = 0.0
        peer = wire.get_extra_info("peername") or ("", 0)
        local = wire.get_extra_info("sockname") or ("", 0)
        self.peer: tuple[str, int] = (peer[0], peer[1])
        self.local: tuple[str, int] = (local[0], local[1])
        self.principal = ""  # the peer's verified SPIFFE id on an mTLS connection

    def _idle_check(self) -> None:
        """The idle timer stays armed across requests (arming and cancelling one per request
        costs more than the request logic): when it fires early it re-arms for the remainder."""
        self._timer = None
        loop = self.writer.loop
        if self._waiting and not self.parser.in_message:
            due = self._idle_since + self.timeouts.idle
            if loop.time() >= due:
                self._on_idle()
                return
        else:
            due = loop.time() + self.timeouts.idle
        self._timer = loop.call_at(due, self._idle_check)

    def _on_idle(self) -> None:
        self.timed_out = True
        if self.parser.in_message:
            # slowloris: a request started but its head never finished
            self.parser.events.append(HttpError(408, "request header timeout"))
            self.parser.failed = True
        self.writer.wake_eof()

    async def next_head(self) -> RequestHead | HttpError | None:
        """The next request head, an error to answer (then close), or None when the client left."""
        events = self.parser.events
        if not events:
            loop = self.writer.loop
            t = self.timeouts
            self._idle_since = loop.time()
            if t.idle and self._timer is None:
                self._timer = loop.call_at(self._idle_since + t.idle, self._idle_check)
            self._waiting = True
            header_timer = None
            try:
                while not events:
                    if header_timer is None and t.headers and self.parser.in_message:
                        # a request has begun: its head must now complete in time
                        header_timer = loop.call_later(t.headers, self._on_idle)
                    if not await self.writer.wait():
                        break
            finally:
                self._waiting = False
                if header_timer is not None:
                    header_timer.cancel()
            if not events:
                self.stop_timer()
                return None
        while events:
            item = events.popleft()
            if isinstance(item, RequestHead | HttpError):
                return item
            # the unread body (or its end) of the previous request
        return await self.next_head()

    async def body_chunk(self) -> bytes | None:
        events = self.parser.events
        while not events:
            if not await self.writer.wait():
                raise ClientGone("downstream closed during request body")
        item = events.popleft()
        if isinstance(item, Data):
            return item.data
        if isinstance(item, HttpError):
            raise item
        assert isinstance(item, EndOfMessage)
        return None

    def ready_body(self) -> tuple[list[bytes], bool]:
        return _take_ready(self.parser.events)

    def stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self) -> None:
        self.stop_timer()
        self.writer.close()

    async def linger_close(self, seconds: float = 1.0, limit: int = 1 << 20) -> None:
        """Close after an error answer without losing it: closing with unread input makes the
        kernel send RST, which can destroy the answer before the client reads it."""
        wire = self.writer
        seen = [0]

        def count(data: bytes) -> None:
            seen[0] += len(data)

        wire.set_feed(count)
        with contextlib.suppress(Exception):
            await wire.drain()
            wire.write_eof()
            async with asyncio.timeout(seconds):
                while seen[0] < limit and await wire.wait():
                    pass
        self.close()


class Upstream:
    """One connection to an upstream; reusable after a complete keep-alive response."""

    __slots__ = ("_fresh_parser", "_parser", "_until_close", "key", "reused", "writer")

    def __init__(self, wire: Stream, key: tuple[str, int, bool]) -> None:
        self.writer = wire
        self.key = key
        self.reused = False
        self._parser = ResponseParser()
        self._fresh_parser = False  # the parser's state cannot carry over to the next response
        self._until_close = False
        wire.set_feed(self._parser.feed)

    def usable(self) -> bool:
        return not self.writer.eof and not self.writer.is_closing()

    async def response_head(self, head_request: bool) -> ResponseHead:
        """The final response head (1xx interim responses skipped). Raises PeerClosed, HttpError."""
        if self._fresh_parser:
            self._parser = ResponseParser()
            self.writer.set_feed(self._parser.feed)
        self._fresh_parser = head_request
        parser = self._parser
        events = parser.events
        while True:
            while not events:
                if not await self.writer.wait():
                    raise PeerClosed("upstream closed before response headers")
            item = events.popleft()
            if isinstance(item, HttpError):
                raise item
            if isinstance(item, ResponseHead):
                if 100 <= item.status < 200 and item.status != 101:
                    continue
                if head_request:
                    # a HEAD answer has no body whatever its Content-Length says
                    events.clear()
                    events.append(END_OF_MESSAGE)
                no_body = item.status in (204, 304)
                self._until_close = not item.chunked and item.content_length is None and not no_body
                return item
            # the end of an interim response: keep reading

    async def body_chunk(self) -> bytes | None:
        events = self._parser.events
        while not events:
            if not await self.writer.wait():
                if self._until_close:
                    return None
                raise PeerClosed("upstream closed during response body")
        item = events.popleft()
        if isinstance(item, Data):
            return item.data
        if isinstance(item, HttpError):
            raise PeerClosed(item.detail)
        assert isinstance(item, EndOfMessage)
        return None

    def ready_body(self) -> tuple[list[bytes], bool]:
        return _take_ready(self._parser.events)

    @property
    def until_close(self) -> bool:
        return self._until_close

    @property
    def upgraded_rest(self) -> list[bytes]:
        """After a 101 answer: the bytes that followed it (the tunnel's first)."""
        return self._parser.rest


class Pool:
    """Keep-alive upstream connections by (host, port, TLS), opened through `backend`; at most
    MAX_IDLE_PER_ADDRESS idle ones kept per address (the rest are closed on release)."""

    def __init__(
        self, connect_timeout: float, local_ip: str | None = None, backend: NetworkBackend | None = None
    ) -> None:
        self.connect_timeout = connect_timeout
        # connect from the pod address, as a pod's traffic does
        self.local_addr = (local_ip, 0) if local_ip else None
        self.backend: NetworkBackend = backend or AsyncioBackend()
        self.idle: dict[tuple[str, int, bool], list[Upstream]] = {}
        self.opened = 0

    async def acquire(
        self,
        host: str,
        port: int,
        tls: ssl.SSLContext | None = None,
        check: Callable[[Stream], None] | None = None,
    ) -> Upstream:
        """A connection to host:port, over (m)TLS with `tls`; `check` vets a new TLS peer
        (raising ConnectFailure refuses it). Raises ConnectFailure."""
        key = (host, port, tls is not None)
        idle = self.idle.get(key)
        while idle:
            up = idle.pop()
            if up.usable():
                up.reused = True
                return up
            up.writer.close()
        local = self.local_addr if host.startswith("127.") else None
        stream = await self.backend.connect(host, port, tls, self.connect_timeout or None, local)
        if check is not None:
            try:
                check(stream)
            except ConnectFailure:
                stream.abort()
                raise
        self.opened += 1
        return Upstream(stream, key)

    def release(self, up: Upstream, reusable: bool) -> None:
        """Back to the idle list when the exchange ended cleanly, else closed."""
        if reusable and up.usable():
            idle = self.idle.setdefault(up.key, [])
            if len(idle) < MAX_IDLE_PER_ADDRESS:
                idle.append(up)
                return
        up.writer.close()

    def discard(self, up: Upstream) -> None:
        up.writer.close()

    def close_all(self) -> None:
        for conns in self.idle.values():
            for up in conns:
                up.writer.close()
        self.idle.clear()
