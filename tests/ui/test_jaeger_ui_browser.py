"""The real Jaeger UI (a jaegertracing/jaeger-ui build) in Debian's chromium against meshtrace's
query API: search (api_v3 trace-summaries), a trace, the Monitor tab (SPM) and OTLP upload
(/api/transform).

No package from npm, PyPI or Debian ships a built Jaeger UI (its only source is its GitHub
repository), so CI cannot build one: set MESHTRACE_JAEGER_UI_DIR to a build
(`pnpm install && pnpm build` in jaeger-ui, then packages/jaeger-ui/build) to run this test;
without it the test is skipped with that reason.

The build's files are served by a small static server here that forwards `/api/*` to a real
query server over a real store, as Jaeger's query service serves its UI and API on one port.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from meshtrace.store.synthetic import FRONTEND, mesh_trace
from tests.query.conftest import serve_query

UI_ENV = "MESHTRACE_JAEGER_UI_DIR"
UI_DIR = Path(os.environ.get(UI_ENV, "")).expanduser() if os.environ.get(UI_ENV) else None

pytestmark = pytest.mark.skipif(
    UI_DIR is None or not (UI_DIR / "index.html").is_file(),
    reason=f"no Jaeger UI build: no npm, PyPI or Debian package ships one; build jaegertracing/jaeger-ui"
    f" and set {UI_ENV} to its packages/jaeger-ui/build",
)


def _ui_app(ui_dir: Path, api: str) -> web.Application:
    async def proxy(request: web.Request) -> web.Response:
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                request.method,
                api + request.path_qs,
                data=await request.read(),
                headers={"Content-Type": request.headers.get("Content-Type", "application/json")},
            ) as answer,
        ):
            body = await answer.read()
            return web.Response(body=body, status=answer.status, content_type=answer.content_type)

    async def files(request: web.Request) -> web.StreamResponse:
        path = (ui_dir / request.match_info["tail"]).resolve()
        if ui_dir.resolve() in path.parents and path.is_file():
            return web.FileResponse(path)
        return web.FileResponse(ui_dir / "index.html")  # the UI routes every other path itself

    app = web.Application()
    app.router.add_route("*", "/api/{tail:.*}", proxy)
    app.router.add_get("/{tail:.*}", files)
    return app


@pytest.fixture(scope="module")
def jaeger_ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(UI base URL, trace id of a stored mesh trace)."""
    assert UI_DIR is not None
    with serve_query(tmp_path_factory.mktemp("jaeger-ui") / "traces.db") as running:
        request = mesh_trace(time.time_ns() - 60 * 10**9, random.Random(3), error=True)
        running.store.write(request.SerializeToString()).result(10)
        trace_id = request.resource_spans[0].scope_spans[0].spans[0].trace_id.hex()
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()

        async def start() -> web.AppRunner:
            runner = web.AppRunner(_ui_app(UI_DIR, running.url), access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            return runner

        runner = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
        port = next(a[1] for a in runner.addresses if isinstance(a, tuple))
        try:
            yield f"http://127.0.0.1:{port}", trace_id
        finally:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
            loop.close()


def test_search_shows_the_stored_trace(browser: Any, jaeger_ui: tuple[str, str]) -> None:
    base, trace_id = jaeger_ui
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    end = time.time_ns() // 1000
    search = f"/search?service={FRONTEND}&limit=20&start={end - 3600 * 10**6}&end={end}&lookback=1h"
    with page.expect_response(lambda r: "/api/v3/trace-summaries" in r.url, timeout=30_000) as answer:
        page.goto(base + search)
    assert answer.value.status == 200
    assert [s["traceId"] for s in answer.value.json()["summaries"]] == [trace_id]
    page.get_by_text(trace_id[:7]).first.wait_for(timeout=30_000)
    with page.expect_response(lambda r: f"/api/traces/{trace_id}" in r.url, timeout=30_000) as opened:
        page.goto(f"{base}/trace/{trace_id}")
    assert opened.value.status == 200
    page.close()


def test_monitor_tab_reads_spm_series(browser: Any, jaeger_ui: tuple[str, str]) -> None:
    base, _ = jaeger_ui
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    with page.expect_response(lambda r: "/api/metrics/calls" in r.url, timeout=30_000) as answer:
        page.goto(f"{base}/monitor?service={FRONTEND}&spanKind=server")
    assert answer.value.status == 200
    assert answer.value.json()["name"] in ("service_call_rate", "service_operation_call_rate")
    page.close()


def test_otlp_upload_goes_through_transform(browser: Any, jaeger_ui: tuple[str, str], tmp_path: Path) -> None:
    base, _ = jaeger_ui
    fixture = json.loads((Path(__file__).parents[1] / "query" / "upstream" / "jaeger_v1.json").read_text())
    upload = tmp_path / "otlp.json"
    upload.write_text(json.dumps(fixture["transform"]["input"]))
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(f"{base}/search")
    with page.expect_response(lambda r: "/api/transform" in r.url, timeout=30_000) as answer:
        page.locator("input[type=file]").first.set_input_files(str(upload))
    assert answer.value.status == 200
    assert answer.value.json()["data"][0]["traceID"] == "83a9efd15c1c98a977e0711cc93ee28b"
    page.close()
