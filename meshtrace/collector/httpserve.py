"""Start an aiohttp application on host:port and print its ready line with the real port."""

from __future__ import annotations

from aiohttp import web

from meshtrace import ready

SHUTDOWN_TIMEOUT_S = 2.0


async def serve(app: web.Application, host: str, port: int, component: str) -> web.AppRunner:
    """The running runner; `runner.addresses` holds the bound address (port 0 resolved)."""
    # A client stalled mid-body must not hold shutdown for aiohttp's default 60 s. Bodies are
    # decompressed by meshtrace.httpbody (bounded, streaming), never by aiohttp.
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
        auto_decompress=False,
    )
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    ready.announce(component, host, bound_port(runner, port))
    return runner


def bound_port(runner: web.AppRunner, asked: int) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return asked
