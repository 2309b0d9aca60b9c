"""Connections: the thin socket shell around `http1` parsers. A downstream connection hands out
requests and their body chunks as they arrive (pull-based: no task per connection beyond the
server's own, no body buffering); upstream connections live in a keep-alive pool per address."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Final

from meshtrace.sidecar.http1 import END, HttpError, RequestHead, RequestParser, ResponseHead, ResponseParser

READ_SIZE: Final = 65536
MAX_IDLE_PER_ADDRESS: Final = 64


class PeerClosed(Exception):
    """The other side closed or reset the connection before the message was complete."""


def _take_ready(events: deque[object]) -> tuple[list[bytes], bool]:
    """Body chunks already parsed (no waiting) and whether the body is complete: lets the proxy
    write a head and the body that came with it in one send."""
    chunks: list[bytes] = []
    while events:
        item = events[0]
        if item is END:
            events.popleft()
            return chunks, True
        if not isinstance(item, bytes):
            return chunks, False
        chunks.append(item)
        events.popleft()
    return chunks, False


class ClientGone(PeerClosed):
    """The downstream client closed or reset its connection."""


class ConnectFailure(Exception):
    """Connecting to the upstream failed (refused, unreachable, timeout)."""


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


def _close(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        writer.close()


class Downstream:
    """One client connection. `next_head()` waits for a request head; `body_chunk()` returns
    the next de-chunked body piece, or None when the request body is complete."""

    __slots__ = ("_timer", "eof", "local", "parser", "peer", "reader", "timed_out", "timeouts", "writer")

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeouts: Timeouts
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.timeouts = timeouts
        self.parser = RequestParser()
        self.eof = False
        self.timed_out = False
        self._timer: asyncio.TimerHandle | None = None
        peer = writer.get_extra_info("peername") or ("", 0)
        local = writer.get_extra_info("sockname") or ("", 0)
        self.peer: tuple[str, int] = (peer[0], peer[1])
        self.local: tuple[str, int] = (local[0], local[1])

    async def _fill(self) -> bool:
        if self.eof:
            return False
        try:
            data = await self.reader.read(READ_SIZE)
        except (ConnectionError, OSError):
            data = b""
        if not data:
            self.eof = True
            return False
        self.parser.feed(data)
        return True

    def _on_idle(self) -> None:
        self._timer = None
        self.timed_out = True
        if self.parser.in_message:
            # slowloris: a request started but its head never finished
            self.parser.events.append(HttpError(408, "request header timeout"))
            self.parser.failed = True
        self.reader.feed_eof()

    async def next_head(self) -> RequestHead | HttpError | None:
        """The next request head, an error to answer (then close), or None when the client left."""
        events = self.parser.events
        if not events:
            loop = asyncio.get_running_loop()
            t = self.timeouts
            if t.idle:
                self._timer = loop.call_later(t.idle, self._on_idle)
            try:
                while not events:
                    began = self.parser.in_message
                    if not await self._fill():
                        break
                    if not began and self.parser.in_message and t.headers:
                        if self._timer is not None:
                            self._timer.cancel()
                        self._timer = loop.call_later(t.headers, self._on_idle)
            finally:
                if self._timer is not None:
                    self._timer.cancel()
                    self._timer = None
            if not events:
                return None
        while events:
            item = events.popleft()
            if isinstance(item, RequestHead | HttpError):
                return item
            # END (or unread body) of the previous request
        return await self.next_head()

    async def body_chunk(self) -> bytes | None:
        events = self.parser.events
        while not events:
            if not await self._fill():
                raise ClientGone("downstream closed during request body")
        item = events.popleft()
        if item is END:
            return None
        if isinstance(item, HttpError):
            raise item
        assert isinstance(item, bytes)
        return item

    def ready_body(self) -> tuple[list[bytes], bool]:
        return _take_ready(self.parser.events)

    def close(self) -> None:
        _close(self.writer)

    async def linger_close(self, seconds: float = 1.0, limit: int = 1 << 20) -> None:
        """Close after an error answer without losing it: closing with unread input makes the
        kernel send RST, which can destroy the answer before the client reads it."""
        with contextlib.suppress(Exception):
            await self.writer.drain()
            if self.writer.can_write_eof():
                self.writer.write_eof()
            async with asyncio.timeout(seconds):
                seen = 0
                while seen < limit and (data := await self.reader.read(READ_SIZE)):
                    seen += len(data)
        self.close()


class Upstream:
    """One connection to an upstream; reusable after a complete keep-alive response."""

    __slots__ = ("_parser", "_until_close", "key", "reader", "reused", "writer")

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key: tuple[str, int]
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.key = key
        self.reused = False
        self._parser = ResponseParser()
        self._until_close = False

    def usable(self) -> bool:
        return not self.writer.is_closing() and not self.reader.at_eof()

    async def _fill(self) -> bool:
        try:
            data = await self.reader.read(READ_SIZE)
        except (ConnectionError, OSError):
            data = b""
        if not data:
            return False
        self._parser.feed(data)
        return True

    async def response_head(self, head_request: bool) -> ResponseHead:
        """The final response head (1xx interim responses skipped). Raises PeerClosed, HttpError."""
        self._parser = parser = ResponseParser()
        events = parser.events
        while True:
            while not events:
                if not await self._fill():
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
                    events.append(END)
                self._until_close = (
                    not item.chunked
                    and item.content_length is None
                    and item.status
                    not in (
                        204,
                        304,
                    )
                )
                return item
            # END of an interim response: keep reading

    async def body_chunk(self) -> bytes | None:
        events = self._parser.events
        while not events:
            if not await self._fill():
                if self._until_close:
                    events.append(END)
                    break
                raise PeerClosed("upstream closed during response body")
        item = events.popleft()
        if item is END:
            return None
        if isinstance(item, HttpError):
            raise PeerClosed(item.detail)
        assert isinstance(item, bytes)
        return item

    def ready_body(self) -> tuple[list[bytes], bool]:
        return _take_ready(self._parser.events)

    @property
    def until_close(self) -> bool:
        return self._until_close


class Pool:
    """Keep-alive upstream connections by (host, port)."""

    def __init__(self, connect_timeout: float, local_ip: str | None = None) -> None:
        self.connect_timeout = connect_timeout
        # connect from the pod address, as a pod's traffic does
        self.local_addr = (local_ip, 0) if local_ip else None
        self.idle: dict[tuple[str, int], list[Upstream]] = {}
        self.opened = 0

    async def acquire(self, host: str, port: int) -> Upstream:
        key = (host, port)
        idle = self.idle.get(key)
        while idle:
            up = idle.pop()
            if up.usable():
                up.reused = True
                return up
            _close(up.writer)
        try:
            async with asyncio.timeout(self.connect_timeout or None):
                local = self.local_addr if host.startswith("127.") else None
                reader, writer = await asyncio.open_connection(
                    host, port, limit=READ_SIZE * 2, local_addr=local
                )
        except (OSError, TimeoutError) as exc:
            raise ConnectFailure(
                f"{host}:{port}: {exc.strerror if isinstance(exc, OSError) else 'timeout'}"
            ) from exc
        self.opened += 1
        return Upstream(reader, writer, key)

    def release(self, up: Upstream, reusable: bool) -> None:
        if reusable and up.usable():
            idle = self.idle.setdefault(up.key, [])
            if len(idle) < MAX_IDLE_PER_ADDRESS:
                idle.append(up)
                return
        _close(up.writer)

    def discard(self, up: Upstream) -> None:
        _close(up.writer)

    def close_all(self) -> None:
        for conns in self.idle.values():
            for up in conns:
                _close(up.writer)
        self.idle.clear()
