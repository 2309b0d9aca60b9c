"""What both demo services share: their settings from the environment, tracing setup, and the
serve loop (listen on POD_IP:PORT, print the ready line, stop and flush spans on SIGTERM/SIGINT)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from aiohttp import web

from meshtrace import __version__, aio, ready
from meshtrace.sdk import init_tracer, instrument_aiohttp
from meshtrace.sdk.settings import parse_bounded
from meshtrace.sdk.tracer import Shutdown

log = logging.getLogger("meshtrace.demo")


@dataclass(frozen=True)
class Listen:
    host: str
    port: int


def listen_address(env: Mapping[str, str]) -> Listen:
    """POD_IP and PORT, as `meshtrace up` (and a Kubernetes pod spec) give them; 127.0.0.1:8080."""
    host = env.get("POD_IP", "").strip() or "127.0.0.1"
    raw = env.get("PORT", "").strip() or "8080"
    return Listen(host, parse_bounded("PORT", raw, int, 0, 65535, "a port number 0-65535", ValueError))


def setup_tracing(service: str) -> Shutdown:
    """The seed's `telemetry.InitTracer` for a demo service; OTEL_SERVICE_NAME overrides `service`."""
    shutdown = init_tracer(
        os.environ.get("OTEL_SERVICE_NAME", "").strip() or service,
        service_version=__version__,
    )
    instrument_aiohttp()
    return shutdown


async def serve(component: str, app: web.Application, where: Listen) -> None:
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, where.host, where.port).start()
        port = int(runner.addresses[0][1])
        ready.announce(component, where.host, port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("%s stopping", component)
    finally:
        await runner.cleanup()


def run(component: str, make_app: Callable[[], web.Application]) -> int:
    """Entry point of `python -m meshtrace.demo.<component>`; returns the exit status: 2 for a
    setting it cannot use (the message names the variable), 1 when it cannot listen."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(levelname)s %(message)s")
    try:
        where = listen_address(os.environ)
        shutdown = setup_tracing(component)
    except ValueError as err:  # includes SettingsError: a variable the SDK cannot use
        print(f"meshtrace {component}: {err}", file=sys.stderr)
        return 2
    try:
        app = make_app()  # after setup_tracing: the instrumentation patches web.Application
        aio.run(serve(component, app, where))
    except ValueError as err:
        print(f"meshtrace {component}: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"meshtrace {component}: cannot listen on {where.host}:{where.port}: {err}", file=sys.stderr)
        return 1
    finally:
        # Flush what the batch processor still holds: the last requests' spans.
        shutdown()
    return 0
