"""Byte tunnels: two connection ends spliced both ways, with half-close (one side's end of input
becomes the other side's), backpressure (a side is read only as fast as the other drains) and
an idle timeout. Used for TCP passthrough (`tcpproxy`) and WebSocket upgrades (`upgrade`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Final, Protocol

from meshtrace.sidecar.backend import Stream
from meshtrace.sidecar.conn import PeerClosed
from meshtrace.sidecar.http1 import LAST_CHUNK, encode_chunk

WRITE_HIGH_WATER: Final = 256 * 1024
# Envoy's TCP proxy idle timeout (1 h) is checked this often at most
IDLE_CHECK_S: Final = 30.0


class End(Protocol):
    """One side of a tunnel: what it received (None once its input ended) and what to send it."""

    wire: Stream

    async def receive(self) -> bytes | None: ...

    def send(self, data: bytes) -> None: ...

    def send_eof(self) -> None: ...


class RawEnd:
    """A connection carrying the tunnel's bytes as they are (an app, or an upgraded HTTP/1.1
    connection); `first` are bytes that came with the head that opened the tunnel."""

    def __init__(self, wire: Stream, first: list[bytes]) -> None:
        self.wire = wire
        self._chunks: deque[bytes] = deque(c for c in first if c)
        wire.set_feed(self._chunks.append)

    async def receive(self) -> bytes | None:
        chunks = self._chunks
        while not chunks:
            if not await self.wire.wait() and not chunks:
                return None
        data = b"".join(chunks)
        chunks.clear()
        return data

    async def peek(self, enough: Callable[[bytes], bool], timeout: float) -> bytes:
        """The first bytes, once `enough` says so (or the input ends, or `timeout` passes); kept
        for `receive` (protocol detection reads them without taking them)."""
        chunks = self._chunks
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout or None):
                while not enough(b"".join(chunks)) and await self.wire.wait():
                    pass
        return b"".join(chunks)

    def take_back(self) -> None:
        """Give the unread bytes back to the wire, for an HTTP listener to parse them."""
        self.wire.put_back(b"".join(self._chunks))
        self._chunks.clear()

    def send(self, data: bytes) -> None:
        self.wire.write(data)

    def send_eof(self) -> None:
        # TLS has no half-close in asyncio: the stream ignores it and the connection closes
        # when the tunnel ends
        self.wire.write_eof()


class ChunkedEnd:
    """The other sidecar of a TCP tunnel: bytes travel as HTTP/1.1 chunks of one streamed
    exchange, and the last chunk is the half-close (TLS between sidecars has none of its own,
    as HBONE uses an HTTP/2 stream's END_STREAM). `read` is the parser's body reader."""

    def __init__(self, wire: Stream, read: Callable[[], Awaitable[bytes | None]]) -> None:
        self.wire = wire
        self._read = read

    async def receive(self) -> bytes | None:
        return await self._read()

    def send(self, data: bytes) -> None:
        self.wire.write(encode_chunk(data))

    def send_eof(self) -> None:
        if not self.wire.is_closing():
            self.wire.write(LAST_CHUNK)


async def _pump(src: End, dst: End, count: Callable[[int], None], seen: list[float]) -> None:
    loop = src.wire.loop
    while (data := await src.receive()) is not None:
        seen[0] = loop.time()
        dst.send(data)
        count(len(data))
        if dst.wire.buffered() > WRITE_HIGH_WATER:
            await dst.wire.drain()
    dst.send_eof()


async def splice(
    client: End,
    server: End,
    idle_timeout: float,
    upstream: Callable[[int], None],
    downstream: Callable[[int], None],
) -> bool:
    """Copy bytes both ways until both directions ended (True) or either side failed or the
    tunnel was idle for `idle_timeout` (False); `upstream`/`downstream` count the bytes each
    way. Both connections are closed when it returns."""
    loop = client.wire.loop
    seen = [loop.time()]
    pending = {
        loop.create_task(_pump(client, server, upstream, seen)),
        loop.create_task(_pump(server, client, downstream, seen)),
    }
    clean = True
    try:
        while pending:
            check = min(idle_timeout, IDLE_CHECK_S) if idle_timeout else None
            done, pending = await asyncio.wait(pending, timeout=check, return_when=asyncio.FIRST_EXCEPTION)
            if any(t.exception() is not None for t in done):
                clean = False
                break
            if idle_timeout and loop.time() - seen[0] >= idle_timeout:
                clean = False
                break
    finally:
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError, PeerClosed, ConnectionError, OSError):
                await task
        for end in (client, server):
            (end.wire.close if clean else end.wire.abort)()
    return clean
