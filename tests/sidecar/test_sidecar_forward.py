"""Retries and the upstream pool as tables, over the in-memory network backend: the proxy's
real request path (`Proxy.serve`, `_forward`, `Pool`) against scripted upstreams that refuse,
hang, answer 503, reset before or during the answer, or answer late. No sockets, no processes."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest
from mock_backend import Hang, MockBackend, Plan, Refuse, Reset, Serve, Sleep, Step, exchange, response
from prometheus_client.parser import text_string_to_metric_families

from meshtrace.sidecar.backend import ConnectFailure, Stream
from meshtrace.sidecar.config import parse
from meshtrace.sidecar.conn import MAX_IDLE_PER_ADDRESS, Pool, Timeouts
from meshtrace.sidecar.proxy import REPLAY_LIMIT, Identity, Proxy
from meshtrace.sidecar.routing import OUTBOUND

A, B, C = "10.0.0.2", "10.0.0.3", "10.0.0.4"
PORT = 8080
BACKEND = "backend.default.svc.cluster.local"
GET = b"GET http://backend/x HTTP/1.1\r\nHost: backend\r\nConnection: close\r\n\r\n"


def post(body: bytes) -> bytes:
    head = f"POST http://backend/x HTTP/1.1\r\nHost: backend\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"Connection: close\r\n\r\n" + body


def proxy_for(backend: MockBackend, endpoints: tuple[str, ...], timeouts: Timeouts) -> Proxy:
    doc = {
        "services": {
            BACKEND: {"ports": [{"port": PORT}], "endpoints": [{"ip": ip, "port": PORT} for ip in endpoints]}
        }
    }
    cfg = parse(doc, "1", "frontend", "default", {"app": "frontend"})
    ident = Identity(
        "frontend", "default", "frontend-1", "10.0.0.1", {"app": "frontend"}, "127.0.0.1", 8080, "sidecar"
    )
    proxy = Proxy(ident, cfg, timeouts, access_log=False, backend=backend)
    proxy.listening({"inbound": ("10.0.0.1", 15006), "outbound": ("10.0.0.1", 15001)})
    return proxy


def requests_total(proxy: Proxy) -> list[tuple[str, str, float]]:
    """(response_code, response_flags, count) of istio_requests_total, as scraped."""
    text = "\n".join(proxy.metrics.exposition()) + "\n"
    return [
        (s.labels["response_code"], s.labels["response_flags"], s.value)
        for fam in text_string_to_metric_families(text)
        if fam.name == "istio_requests"
        for s in fam.samples
        if s.name == "istio_requests_total"
    ]


@dataclass
class Case:
    scripts: dict[str, list[Plan]]
    request: bytes = GET
    timeouts: Timeouts = field(default_factory=lambda: Timeouts(idle=0, headers=0, connect=1.0, upstream=0))
    endpoints: tuple[str, ...] = (A, B, C)
    # want
    status: int = 200
    flags: str = "-"
    tried: tuple[str, ...] = (A,)  # endpoints connected to, in order
    body: bytes | None = b"ok"  # the body the client got (None: not checked)
    complete: bool = True


PER_TRY = Timeouts(idle=0, headers=0, connect=1.0, upstream=0.05)
CONNECT_TIMEOUT = Timeouts(idle=0, headers=0, connect=0.02, upstream=0)
HEAD_THEN_RESET: list[Step] = [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf", Reset()]

# Istio's default retry policy (attempts=3; retryOn connect-failure and 503) over endpoints
# picked round-robin, each retry on an endpoint not tried yet
CASES = {
    "answered": Case({A: [Serve((response(),))]}),
    "refused, next endpoint answers": Case({A: [Refuse()], B: [Serve((response(),))]}, tried=(A, B)),
    "all refused: UF, retried": Case(
        {ip: [Refuse()] for ip in (A, B, C)}, status=503, flags="UF,URX", tried=(A, B, C), body=None
    ),
    "connect times out everywhere": Case(
        {ip: [Hang()] for ip in (A, B, C)},
        timeouts=CONNECT_TIMEOUT,
        status=503,
        flags="UF,URX",
        tried=(A, B, C),
        body=None,
    ),
    "503, next endpoint answers": Case(
        {A: [Serve((response(503),))], B: [Serve((response(),))]}, tried=(A, B)
    ),
    "503 on every attempt: URX, the last 503 passed on": Case(
        {ip: [Serve((response(503, b"busy"),))] for ip in (A, B, C)},
        status=503,
        flags="URX",
        tried=(A, B, C),
        body=b"busy",
    ),
    "reset before headers: UC, not retried": Case(
        {A: [Serve((Reset(),))]}, status=503, flags="UC", body=None
    ),
    "reset mid-body: UC, the client sees a cut answer": Case(
        {A: [Serve((HEAD_THEN_RESET,))]}, flags="UC", body=b"half", complete=False
    ),
    "slower than the per-try timeout: 504 UT, not retried": Case(
        {A: [Serve(([Sleep(0.5), response()],))]},
        timeouts=PER_TRY,
        status=504,
        flags="UT",
        body=b"upstream request timeout",
    ),
    # a wide margin: a loaded machine may stall the loop, and then both timers fire together
    "slow within the per-try timeout": Case(
        {A: [Serve(([Sleep(0.01), response()],))]}, timeouts=Timeouts(idle=0, headers=0, upstream=2.0)
    ),
    "one endpoint refusing: retries go back to it": Case(
        {A: [Refuse(), Refuse(), Serve((response(),))]}, endpoints=(A,), tried=(A, A, A)
    ),
    "a Service without endpoints: UH": Case(
        {}, endpoints=(), status=503, flags="UH", tried=(), body=b"no healthy upstream"
    ),
    "body over the replay limit: a 503 is not retried": Case(
        {A: [Serve((response(503),))], B: [Serve((response(),))]},
        request=post(b"x" * (REPLAY_LIMIT + 1)),
        status=503,
        body=None,
    ),
}


async def _run(case: Case) -> tuple[list[Any], MockBackend, Proxy]:
    backend = MockBackend()
    for ip, plans in case.scripts.items():
        backend.script(ip, PORT, *plans)
    proxy = proxy_for(backend, case.endpoints, case.timeouts)
    got = await exchange(lambda s: proxy.serve(s, OUTBOUND), case.request)
    await backend.settle()
    return got, backend, proxy


@pytest.mark.parametrize("name", CASES)
def test_retries(name: str) -> None:
    case = CASES[name]
    (answer,), backend, proxy = asyncio.run(_run(case))
    assert answer.head.status == case.status
    if case.body is not None:
        assert answer.body.rstrip(b"\n") == case.body
    assert answer.complete == case.complete
    assert tuple(c.host for c in backend.connects) == case.tried
    assert requests_total(proxy) == [(str(case.status), case.flags, 1.0)]
    assert not backend.unscripted


def test_retried_request_carries_the_same_body() -> None:
    case = Case(
        {A: [Serve((response(503),))], B: [Serve((response(),))]}, request=post(b"payload"), tried=(A, B)
    )
    (answer,), backend, _ = asyncio.run(_run(case))
    assert answer.head.status == 200
    assert [r.body for r in backend.requests_to(A, PORT) + backend.requests_to(B, PORT)] == [b"payload"] * 2


def test_retries_skip_endpoints_this_request_tried() -> None:
    """Three requests at once, each refused by its first endpoint: the round-robin would send
    each retry back to an endpoint that request already tried; the retry goes to the next one."""

    async def main() -> MockBackend:
        backend = MockBackend()
        for ip in (A, B, C):
            backend.script(ip, PORT, Refuse(), Serve((response(),)))
        proxy = proxy_for(backend, (A, B, C), Timeouts(idle=0, headers=0))
        requests = [GET.replace(b"/x", f"/{i}".encode()) for i in (1, 2, 3)]
        got = await asyncio.gather(*(exchange(lambda s: proxy.serve(s, OUTBOUND), r) for r in requests))
        assert [a.head.status for (a,) in got] == [200, 200, 200]
        return backend

    backend = asyncio.run(main())
    # first attempts: /1 -> A, /2 -> B, /3 -> C, all refused; the round-robin's next picks
    # would be A, B, C again
    received = {ip: [r.head.target for r in backend.requests_to(ip, PORT)] for ip in (A, B, C)}
    assert received == {A: ["/3"], B: ["/1"], C: ["/2"]}


def test_passthrough_is_not_retried() -> None:
    case = Case({"10.9.9.9": [Refuse(), Serve((response(),))]}, request=GET.replace(b"backend", b"10.9.9.9"))
    (answer,), backend, proxy = asyncio.run(_run(case))
    assert answer.head.status == 503 and [c.host for c in backend.connects] == ["10.9.9.9"]
    assert requests_total(proxy) == [("503", "UF", 1.0)]


KEEP_ALIVE = b"GET http://backend/x HTTP/1.1\r\nHost: backend\r\n\r\n"


@pytest.mark.parametrize(
    ("plans", "connects", "flags"),
    [
        # a kept-alive upstream connection serves the next request
        ([Serve((response(), response()))], 1, ["-", "-"]),
        # the pooled connection was closed by the upstream when reused: one uncounted retry on
        # a fresh connection (Envoy's reset on a reused connection)
        ([Serve((response(), Reset())), Serve((response(),))], 2, ["-", "-"]),
        # an answer with Connection: close is not pooled
        ([Serve((response(headers=[("connection", "close")]),)), Serve((response(),))], 2, ["-", "-"]),
    ],
)
def test_upstream_connection_reuse(plans: list[Plan], connects: int, flags: list[str]) -> None:
    async def main() -> tuple[list[Any], MockBackend, Proxy]:
        backend = MockBackend()
        backend.script(A, PORT, *plans)
        proxy = proxy_for(backend, (A,), Timeouts(idle=0, headers=0))
        got = await exchange(lambda s: proxy.serve(s, OUTBOUND), KEEP_ALIVE, KEEP_ALIVE)
        await backend.settle()
        return got, backend, proxy

    got, backend, proxy = asyncio.run(main())
    assert [a.head.status for a in got] == [200, 200]
    assert len(backend.connects) == connects
    assert requests_total(proxy) == [("200", flags[0], 2.0)]
    assert proxy.pool.opened == connects


# -- the pool on its own


def test_pool_reuses_released_connections_and_closes_discarded_ones() -> None:
    async def main() -> None:
        backend = MockBackend()
        backend.script(A, PORT, Serve(), Serve())
        pool = Pool(1.0, backend=backend)
        first = await pool.acquire(A, PORT)
        pool.release(first, True)
        again = await pool.acquire(A, PORT)
        assert again is first and again.reused and len(backend.connects) == 1
        pool.release(again, False)  # the exchange failed: closed, never reused
        assert backend.streams[0].closed
        fresh = await pool.acquire(A, PORT)
        assert fresh is not first and not fresh.reused and pool.opened == 2
        pool.discard(fresh)
        assert backend.streams[1].closed and not pool.idle.get((A, PORT, False))

    asyncio.run(main())


def test_pool_skips_idle_connections_the_upstream_closed() -> None:
    async def main() -> None:
        backend = MockBackend()
        backend.script(A, PORT, Serve(), Serve())
        pool = Pool(1.0, backend=backend)
        up = await pool.acquire(A, PORT)
        pool.release(up, True)
        backend.streams[0].end()  # the upstream closes it while idle
        fresh = await pool.acquire(A, PORT)
        assert fresh is not up and backend.streams[0].closed and len(backend.connects) == 2

    asyncio.run(main())


def test_pool_keeps_at_most_max_idle_per_address() -> None:
    async def main() -> None:
        backend = MockBackend()
        n = MAX_IDLE_PER_ADDRESS + 2
        backend.script(A, PORT, *[Serve() for _ in range(n)])
        pool = Pool(1.0, backend=backend)
        ups = [await pool.acquire(A, PORT) for _ in range(n)]
        for up in ups:
            pool.release(up, True)
        assert len(pool.idle[(A, PORT, False)]) == MAX_IDLE_PER_ADDRESS
        assert sum(s.closed for s in backend.streams) == n - MAX_IDLE_PER_ADDRESS
        pool.close_all()
        assert all(s.closed for s in backend.streams) and not pool.idle

    asyncio.run(main())


@pytest.mark.parametrize(
    ("local_ip", "host", "local_addr"),
    [
        ("127.0.0.9", "127.0.0.2", ("127.0.0.9", 0)),
        ("127.0.0.9", "10.0.0.2", None),
        (None, "127.0.0.2", None),
    ],
)
def test_pool_connects_from_the_pod_address_on_loopback(
    local_ip: str | None, host: str, local_addr: tuple[str, int] | None
) -> None:
    async def main() -> None:
        backend = MockBackend()
        backend.script(host, PORT, Serve())
        await Pool(1.0, local_ip, backend).acquire(host, PORT)
        assert backend.connects[0].local_addr == local_addr

    asyncio.run(main())


def test_pool_refuses_a_peer_its_check_rejects() -> None:
    def check(stream: Stream) -> None:
        if stream.get_extra_info("peercert") != "good":
            raise ConnectFailure("wrong peer")

    async def main() -> None:
        backend = MockBackend()
        backend.script(A, PORT, Serve(extra={"peercert": "bad"}), Serve(extra={"peercert": "good"}))
        pool = Pool(1.0, backend=backend)
        with pytest.raises(ConnectFailure):
            await pool.acquire(A, PORT, None, check)
        assert backend.streams[0].aborted and pool.opened == 0
        up = await pool.acquire(A, PORT, None, check)
        assert up.writer is backend.streams[1] and pool.opened == 1

    asyncio.run(main())


@pytest.mark.parametrize(("plan", "timeout"), [(Refuse(), 1.0), (Hang(), 0.01)])
def test_pool_connect_failures(plan: Plan, timeout: float) -> None:
    async def main() -> None:
        backend = MockBackend()
        backend.script(A, PORT, plan)
        pool = Pool(timeout, backend=backend)
        with pytest.raises(ConnectFailure):
            await pool.acquire(A, PORT)
        assert pool.opened == 0

    asyncio.run(main())
