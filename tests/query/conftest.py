"""A real query server on 127.0.0.1:<port 0> over a real store, served from its own event loop thread,
so contract tests speak plain HTTP to it."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from meshtrace.query.server import QueryServer
from meshtrace.store import TraceStore


@dataclass
class RunningQuery:
    url: str
    store: TraceStore


@contextlib.contextmanager
def serve_query(path: Path, jaeger_ui: Path | None = None, **store_options: Any) -> Iterator[RunningQuery]:
    """A store at `path` (TraceStore options as keywords) and a query server over it (serving a
    Jaeger UI build when `jaeger_ui` is given), both closed at the end."""
    store = TraceStore(path, **store_options)
    store.open()
    server = QueryServer(lambda: store, jaeger_ui=jaeger_ui)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> web.AppRunner:
        runner = web.AppRunner(server.app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return runner

    runner = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    port = next(a[1] for a in runner.addresses if isinstance(a, tuple))
    try:
        yield RunningQuery(f"http://127.0.0.1:{port}", store)
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
        store.close()


@pytest.fixture(scope="module")
def query_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningQuery]:
    with serve_query(Path(tmp_path_factory.mktemp("store")) / "traces.db") as running:
        yield running
