"""WebSocket through two real sidecars with aiohttp's client and server: the upgrade request is
proxied (routed, traced, peer metadata exchanged), the 101 turns both hops into byte tunnels,
messages (small and large, text and binary) go both ways, and each sidecar records one span and
one request (status 101) for the upgrade. Upgrade types other than websocket stay 501.

Before: every Upgrade was refused with 501."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from sidecar_helpers import raw

BACKEND = "backend.default.svc.cluster.local"


async def _echo(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == aiohttp.WSMsgType.TEXT:
            await ws.send_str(msg.data.upper())
        elif msg.type == aiohttp.WSMsgType.BINARY:
            await ws.send_bytes(msg.data[::-1])
    return ws


def test_websocket_through_two_sidecars(
    meshtrace_process: Any, tmp_path: Path, harness: Any, servers: Any
) -> None:
    be_ip, fe_ip, rx_ip = harness.loopback(), harness.loopback(), harness.loopback()
    rx, received = harness.otlp_receiver(rx_ip)
    servers(rx)
    endpoint = f"http://{rx_ip}:{rx.port}"

    procs: dict[str, Any] = {}

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/ws", _echo)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, be_ip, 0)
        await site.start()
        app_port = int(runner.addresses[0][1])
        try:
            fe_reg = harness.service("frontend", fe_ip, harness.free_port(fe_ip))
            be = harness.start_sidecar(
                meshtrace_process,
                tmp_path,
                "backend",
                be_ip,
                app_port,
                harness.config_doc("backend", endpoint, 100.0, fe_reg),
            )
            reg = harness.service("backend", be_ip, be.listeners["inbound"][1], 8080, app_port)
            fe = harness.start_sidecar(
                meshtrace_process, tmp_path, "frontend", fe_ip, harness.free_port(fe_ip),
                harness.config_doc("frontend", endpoint, 100.0, reg),
            )  # fmt: skip
            procs.update(fe=fe, be=be)
            proxy = f"http://{fe.address('outbound')}"
            async with (
                aiohttp.ClientSession() as session,
                session.ws_connect(
                    "http://backend:8080/ws", proxy=proxy, timeout=aiohttp.ClientWSTimeout(ws_close=10)
                ) as ws,
            ):
                await ws.send_str("hello")
                assert (await ws.receive(timeout=10)).data == "HELLO"
                big = bytes(range(256)) * 1024  # 256 KiB in one frame
                await ws.send_bytes(big)
                assert (await ws.receive(timeout=10)).data == big[::-1]
                await ws.send_str("again")
                assert (await ws.receive(timeout=10)).data == "AGAIN"
                await ws.close()
            # an upgrade Istio does not enable is refused, nothing forwarded
            answer = raw(
                fe.address("outbound"),
                b"GET /ws HTTP/1.1\r\nHost: backend:8080\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
            )
            assert answer.startswith(b"HTTP/1.1 501 "), answer
        finally:
            await runner.cleanup()

    asyncio.run(main())
    spans = received.wait(2, timeout=15)
    upgrade = [(svc, s) for svc, s in spans if s.name.startswith(f"{BACKEND}:8080")]
    assert {svc for svc, _ in upgrade} == {"frontend.default", "backend.default"}, spans
    for _, span in upgrade:
        attrs = {a.key: a.value.string_value for a in span.attributes}
        assert attrs["http.status_code"] == "101"
        assert attrs["upstream_cluster"]  # a routed request, not a local reply
    assert len({s.trace_id for _, s in upgrade}) == 1  # one trace across both sidecars
    for proc, reporter in ((procs["fe"], "source"), (procs["be"], "destination")):
        with urllib.request.urlopen(f"http://{proc.address('stats')}/stats/prometheus", timeout=5) as r:
            lines = [ln for ln in r.read().decode().splitlines() if ln.startswith("istio_requests_total{")]
        assert any(f'reporter="{reporter}"' in ln and 'response_code="101"' in ln for ln in lines), lines
