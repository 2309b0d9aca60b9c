"""The sidecar's network behind a small interface (httpcore's `AsyncNetworkBackend` is the model):
a `NetworkBackend` connects to host:port, optionally over TLS and within a timeout, and gives a
`Stream`, the only thing the connection and pool code (`conn.py`) touch. `AsyncioBackend` is the
real one (asyncio or uvloop sockets through `Wire`); tests script upstreams with an in-memory one
(`tests/sidecar/mock_backend.py`).

A stream is push-based, not httpcore's `read()`: received bytes go straight to the parser set by
`set_feed` (no buffer and no copy in between), and `wait()` parks the one reader until more
arrives. That is what keeps the request path at one task round trip per read."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable
from typing import Any, Final, Protocol, cast

READ_BACKLOG: Final = 256 * 1024


class ConnectFailure(Exception):
    """Connecting to the upstream failed (refused, unreachable, timeout, TLS refused)."""


class Stream(Protocol):
    """One byte stream, either side of the proxy. Its write/drain/close interface is
    StreamWriter's; reading is `set_feed` + `wait`."""

    loop: asyncio.AbstractEventLoop  # kept by the stream: looking it up costs a syscall on 3.11
    eof: bool  # the peer has closed (or reset) its side

    def set_feed(self, feed: Callable[[bytes], None]) -> None:
        """Hand received bytes to `feed` from now on, starting with any that came before."""

    def put_back(self, data: bytes) -> None:
        """Keep `data` (read while sniffing the protocol) for the next `set_feed`."""

    async def wait(self) -> bool:
        """Wait for more bytes (fed as they come); False once the stream has ended."""

    def wake_eof(self) -> None:
        """Treat the stream as ended and wake the reader (timeouts use it)."""

    def write(self, data: bytes) -> None: ...

    def buffered(self) -> int:
        """Bytes written but not yet sent."""

    async def drain(self) -> None:
        """Wait until the write buffer is below its high-water mark; raises ConnectionResetError
        when the stream is closed."""

    def write_eof(self) -> None:
        """Half-close: no more writes, reading goes on (ignored where the transport has none)."""

    def is_closing(self) -> bool: ...

    def close(self) -> None: ...

    def abort(self) -> None:
        """Close at once, discarding what is buffered (a reset)."""

    def get_extra_info(self, name: str) -> Any:
        """asyncio's transport information: `peername`, `sockname`, `ssl_object`, `peercert`."""


class NetworkBackend(Protocol):
    async def connect(
        self,
        host: str,
        port: int,
        tls: ssl.SSLContext | None = None,
        timeout: float | None = None,
        local_addr: tuple[str, int] | None = None,
    ) -> Stream:
        """A connected stream, over TLS with `tls` (no SNI, no host name check: peers are
        checked by SPIFFE id). Raises ConnectFailure."""


class Feeding:
    """The feed half every `Stream` shares: received bytes go to the current parser (`feed`);
    until one takes over, and after a sniffer puts bytes back, they wait in order."""

    def __init__(self) -> None:
        self._pending: list[bytes] = []
        self.feed: Callable[[bytes], None] = self._pending.append

    def set_feed(self, feed: Callable[[bytes], None]) -> None:
        self.feed = feed
        pending, self._pending = self._pending, []
        for data in pending:
            feed(data)

    def put_back(self, data: bytes) -> None:
        self._pending = [data] if data else []
        self.feed = self._pending.append


class Wire(Feeding, asyncio.Protocol):
    """The asyncio `Stream`: received bytes go straight into the current parser (`feed`), no
    StreamReader buffer in between. Reading pauses while the consumer has not caught up
    (backpressure), writing follows the transport's flow control (`drain`)."""

    def __init__(self) -> None:
        super().__init__()
        self.transport: asyncio.Transport = cast(asyncio.Transport, None)
        self.eof = False
        self._waiter: asyncio.Future[None] | None = None
        self._drain: asyncio.Future[None] | None = None
        self._paused_writing = False
        self._paused_reading = False
        self._unread = 0  # bytes fed while nobody waited
        # kept, not looked up per wait: on Python 3.11 every asyncio.get_running_loop() is a
        # getpid() syscall (the fork check), three per proxied request
        self.loop = asyncio.get_running_loop()

    # -- protocol callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.feed(data)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)
            return
        self._unread += len(data)
        if self._unread > READ_BACKLOG and not self._paused_reading:
            # the consumer is far behind (a body faster than its upstream): stop reading until
            # it asks for more
            self._paused_reading = True
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self.wake_eof()
        # half-close: the answer to what was sent can still be written; we close later. TLS has
        # no half-close (the transport warns when asked for one).
        return self.transport.get_extra_info("sslcontext") is None

    def connection_lost(self, exc: Exception | None) -> None:
        self.wake_eof()
        self._wake_drain()

    def pause_writing(self) -> None:
        self._paused_writing = True

    def resume_writing(self) -> None:
        self._paused_writing = False
        self._wake_drain()

    # -- the Stream interface (set_feed and put_back: Feeding)
    def wake_eof(self) -> None:
        self.eof = True
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _wake_drain(self) -> None:
        drain = self._drain
        if drain is not None:
            self._drain = None
            if not drain.done():
                drain.set_result(None)

    async def wait(self) -> bool:
        if self.eof:
            return False
        self._unread = 0
        if self._paused_reading:
            self._paused_reading = False
            self.transport.resume_reading()
        self._waiter = waiter = self.loop.create_future()
        await waiter
        return True

    def write(self, data: bytes) -> None:
        self.transport.write(data)

    def buffered(self) -> int:
        return self.transport.get_write_buffer_size()

    async def drain(self) -> None:
        if self.transport.is_closing():
            raise ConnectionResetError("connection closed")
        if self._paused_writing:
            self._drain = self.loop.create_future()
            await self._drain
            if self.transport.is_closing():
                raise ConnectionResetError("connection closed")

    def write_eof(self) -> None:
        if not self.transport.is_closing() and self.transport.can_write_eof():
            self.transport.write_eof()

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.transport.close()

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.transport.abort()

    def get_extra_info(self, name: str) -> Any:
        return self.transport.get_extra_info(name)


class AsyncioBackend:
    """The real network: the running loop's sockets (uvloop's in the sidecar process)."""

    async def connect(
        self,
        host: str,
        port: int,
        tls: ssl.SSLContext | None = None,
        timeout: float | None = None,
        local_addr: tuple[str, int] | None = None,
    ) -> Wire:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                # server_hostname "": no SNI and no host name check; the peer is checked by its
                # SPIFFE id
                _, wire = await loop.create_connection(
                    Wire, host, port, local_addr=local_addr, ssl=tls, server_hostname="" if tls else None
                )
        except ssl.SSLError as exc:
            raise ConnectFailure(f"{host}:{port}: TLS error: {exc.reason or exc}") from exc
        except (OSError, TimeoutError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "timeout"
            raise ConnectFailure(f"{host}:{port}: {why}") from exc
        return wire
