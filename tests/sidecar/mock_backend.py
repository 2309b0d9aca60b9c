"""An in-memory `NetworkBackend` for the sidecar's unit tests (httpcore's mock backend is the
model): each upstream connection follows a script (refuse, hang, answer, answer slowly, reset
mid-answer), every request it receives is recorded, and `exchange` plays a client against a
`Proxy` over the same in-memory streams. No sockets, no processes.

Importable because conftest.py puts this folder on sys.path."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from meshtrace.sidecar.backend import ConnectFailure, Feeding
from meshtrace.sidecar.http1 import (
    Data,
    EndOfMessage,
    RequestHead,
    RequestParser,
    ResponseHead,
    ResponseParser,
    simple_response,
)


class MemoryStream(Feeding):
    """One side of an in-memory connection, with `backend.Stream`'s interface. What the code
    under test writes goes to `on_write`; `deliver` and `end` play the other side."""

    def __init__(self, extra: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.loop = asyncio.get_running_loop()
        self.eof = False
        self.closed = False
        self.aborted = False
        self.half_closed = False
        self.written = bytearray()
        self.on_write: Callable[[bytes], None] = self.written.extend
        self.extra = extra or {}
        self._waiter: asyncio.Future[None] | None = None
        self.tasks: set[asyncio.Task[None]] = set()  # the other side's, ended by close()

    # -- the other side
    def deliver(self, data: bytes) -> None:
        if not self.eof:
            self.feed(data)
            self._wake()

    def end(self) -> None:
        """The other side closes (or resets): the reader sees the end of the stream."""
        self.wake_eof()

    # -- backend.Stream (set_feed and put_back: Feeding, as the real Wire)
    async def wait(self) -> bool:
        if self.eof:
            return False
        self._waiter = waiter = self.loop.create_future()
        await waiter
        return True

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def wake_eof(self) -> None:
        self.eof = True
        self._wake()

    def write(self, data: bytes) -> None:
        if not self.closed:
            self.on_write(data)

    def buffered(self) -> int:
        return 0

    async def drain(self) -> None:
        if self.closed:
            raise ConnectionResetError("connection closed")

    def write_eof(self) -> None:
        self.half_closed = True

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True
        for task in self.tasks:
            task.cancel()
        self.loop.call_soon(self.wake_eof)  # as a transport's connection_lost follows close()

    def abort(self) -> None:
        self.aborted = True
        self.close()

    def get_extra_info(self, name: str) -> Any:
        return self.extra.get(name)


@dataclass(frozen=True)
class Sleep:
    """An answer step: wait this long before the next step."""

    seconds: float


@dataclass(frozen=True)
class Reset:
    """An answer step: the upstream closes the connection (what it sent so far stays sent)."""


Step = bytes | Sleep | Reset


def response(status: int = 200, body: bytes = b"ok", headers: list[tuple[str, str]] | None = None) -> bytes:
    """A complete keep-alive HTTP/1.1 response."""
    return simple_response(status, body, extra=headers)


@dataclass(frozen=True)
class Refuse:
    """A connection plan: the connect fails at once (ECONNREFUSED)."""


@dataclass(frozen=True)
class Hang:
    """A connection plan: the connect never completes (the connect timeout ends it)."""


@dataclass(frozen=True)
class Serve:
    """A connection plan: the connect succeeds; the n-th request on it gets `answers[n]` (a
    response's bytes, or a list of steps); requests beyond the script are answered by Reset."""

    answers: tuple[Step | list[Step], ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)  # get_extra_info, e.g. "peercert"


Plan = Refuse | Hang | Serve


@dataclass
class Received:
    head: RequestHead
    body: bytes


@dataclass
class Connect:
    host: str
    port: int
    tls: bool
    local_addr: tuple[str, int] | None


class MockBackend:
    """`NetworkBackend` over scripted upstreams: `script(host, port, *plans)` queues a plan per
    connection to that address. A connect with no plan left is refused and noted in `unscripted`."""

    def __init__(self) -> None:
        self.plans: dict[tuple[str, int], list[Plan]] = {}
        self.connects: list[Connect] = []
        self.received: dict[tuple[str, int], list[Received]] = {}
        self.streams: list[MemoryStream] = []
        self.unscripted: list[tuple[str, int]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def script(self, host: str, port: int, *plans: Plan) -> None:
        self.plans.setdefault((host, port), []).extend(plans)

    def requests_to(self, host: str, port: int) -> list[Received]:
        return self.received.get((host, port), [])

    async def connect(
        self,
        host: str,
        port: int,
        tls: ssl.SSLContext | None = None,
        timeout: float | None = None,
        local_addr: tuple[str, int] | None = None,
    ) -> MemoryStream:
        self.connects.append(Connect(host, port, tls is not None, local_addr))
        await asyncio.sleep(0)  # a connect always yields to the loop, even a refused one
        plans = self.plans.get((host, port))
        if not plans:
            self.unscripted.append((host, port))
            raise ConnectFailure(f"{host}:{port}: Connection refused (not scripted)")
        plan = plans.pop(0)
        if isinstance(plan, Refuse):
            raise ConnectFailure(f"{host}:{port}: Connection refused")
        if isinstance(plan, Hang):
            try:
                async with asyncio.timeout(timeout):
                    await asyncio.Event().wait()
            except TimeoutError:
                raise ConnectFailure(f"{host}:{port}: timeout") from None
        assert isinstance(plan, Serve)
        stream = MemoryStream({"peername": (host, port), **plan.extra})
        self.streams.append(stream)
        self._serve(stream, (host, port), list(plan.answers))
        return stream

    def _serve(
        self, stream: MemoryStream, address: tuple[str, int], answers: list[Step | list[Step]]
    ) -> None:
        """Parse what the proxy writes; answer each complete request with the next script."""
        parser = RequestParser()
        body = bytearray()
        head: list[RequestHead] = []

        def on_write(data: bytes) -> None:
            parser.feed(data)
            while parser.events:
                event = parser.events.popleft()
                if isinstance(event, RequestHead):
                    head[:] = [event]
                    body.clear()
                elif isinstance(event, Data):
                    body.extend(event.data)
                elif isinstance(event, EndOfMessage):
                    self.received.setdefault(address, []).append(Received(head[0], bytes(body)))
                    answer = answers.pop(0) if answers else Reset()
                    steps = answer if isinstance(answer, list) else [answer]
                    task = stream.loop.create_task(self._play(stream, steps))
                    for tasks in (self._tasks, stream.tasks):
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)

        stream.on_write = on_write

    @staticmethod
    async def _play(stream: MemoryStream, steps: list[Step]) -> None:
        for step in steps:
            if stream.closed:
                return
            if isinstance(step, Sleep):
                await asyncio.sleep(step.seconds)
            elif isinstance(step, Reset):
                stream.end()
                return
            else:
                stream.deliver(step)

    async def settle(self) -> None:
        """Let scripted answers still being played finish."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


@dataclass
class Answer:
    head: ResponseHead
    body: bytes
    complete: bool  # the whole message arrived (False: the proxy cut it short)


def answers(data: bytes) -> list[Answer]:
    """The responses in what the proxy wrote to its client."""
    parser = ResponseParser()
    parser.feed(bytes(data))
    out: list[Answer] = []
    for event in parser.events:
        if isinstance(event, ResponseHead):
            out.append(Answer(event, b"", False))
        elif isinstance(event, Data):
            out[-1].body += event.data
        elif isinstance(event, EndOfMessage):
            out[-1].complete = True
    return out


async def exchange(
    serve: Callable[[MemoryStream], Any], *requests: bytes, peer: tuple[str, int] = ("127.0.0.2", 40000)
) -> list[Answer]:
    """Send `requests` (raw bytes, pipelined) on one client connection to `serve` (e.g.
    `lambda s: proxy.serve(s, OUTBOUND)`), close the client's side and return the answers."""
    stream = MemoryStream({"peername": peer, "sockname": ("127.0.0.1", 15001)})
    for request in requests:
        stream.deliver(request)
    stream.end()
    await serve(stream)
    return answers(stream.written)
