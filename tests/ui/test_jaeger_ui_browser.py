"""The real Jaeger UI (a jaegertracing/jaeger-ui build) in Debian's chromium against meshtrace's
query API: search (api_v3 trace-summaries), a trace and its archive button, the Monitor tab
(SPM) and OTLP upload (/api/transform).

No package from npm, PyPI or Debian ships a built Jaeger UI (its only source is its GitHub
repository), so CI cannot build one: set MESHTRACE_JAEGER_UI_DIR to a build
(`pnpm install && pnpm build` in jaeger-ui, then packages/jaeger-ui/build) to run this test;
without it the test is skipped with that reason.

The query server serves the build itself (`jaeger_ui`, as the query extension's `jaeger_ui:`
option does), over a real store.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meshtrace.store.synthetic import FRONTEND, mesh_trace
from tests.query.conftest import serve_query

UI_ENV = "MESHTRACE_JAEGER_UI_DIR"
UI_DIR = Path(os.environ.get(UI_ENV, "")).expanduser() if os.environ.get(UI_ENV) else None

pytestmark = pytest.mark.skipif(
    UI_DIR is None or not (UI_DIR / "index.html").is_file(),
    reason=f"no Jaeger UI build: no npm, PyPI or Debian package ships one; build jaegertracing/jaeger-ui"
    f" and set {UI_ENV} to its packages/jaeger-ui/build",
)


@pytest.fixture(scope="module")
def jaeger_ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(base URL of the query server serving the build, trace id of a stored mesh trace)."""
    path = tmp_path_factory.mktemp("jaeger-ui") / "traces.db"
    with serve_query(path, jaeger_ui=UI_DIR) as running:
        request = mesh_trace(time.time_ns() - 60 * 10**9, random.Random(3), error=True)
        running.store.write(request.SerializeToString()).result(10)
        yield running.url, request.resource_spans[0].scope_spans[0].spans[0].trace_id.hex()


class ApiLog:
    """Every /api/ answer a page got: none may be an error."""

    def __init__(self, page: Any) -> None:
        self.answers: list[tuple[str, int]] = []
        page.on("response", self._seen)

    def _seen(self, response: Any) -> None:
        if "/api/" in response.url:
            self.answers.append((response.url, response.status))

    def wait_for(self, part: str, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while sum(part in url for url, _ in self.answers) < count:
            assert time.monotonic() < deadline, f"fewer than {count} {part} answers: {self.answers}"
            time.sleep(0.1)

    def check(self) -> None:
        assert self.answers and all(status < 400 for _, status in self.answers), self.answers


def test_search_shows_the_stored_trace(browser: Any, jaeger_ui: tuple[str, str]) -> None:
    base, trace_id = jaeger_ui
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    log = ApiLog(page)
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
    with page.expect_response(lambda r: f"/api/archive/{trace_id}" in r.url, timeout=30_000) as archived:
        page.get_by_role("button", name="Archive Trace").click()
    assert archived.value.status == 200
    log.check()
    page.close()


def test_monitor_tab_reads_spm_series(browser: Any, jaeger_ui: tuple[str, str]) -> None:
    base, _ = jaeger_ui
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    log = ApiLog(page)
    with page.expect_response(lambda r: "/api/metrics/calls" in r.url, timeout=30_000) as answer:
        page.goto(f"{base}/monitor?service={FRONTEND}&spanKind=server")
    assert answer.value.json()["name"] in ("service_call_rate", "service_operation_call_rate")
    # one page: latencies at 3 quantiles, calls, errors, then the same three per operation
    log.wait_for("/api/metrics/", 8)
    log.check()
    page.close()


def test_otlp_upload_goes_through_transform(browser: Any, jaeger_ui: tuple[str, str], tmp_path: Path) -> None:
    base, _ = jaeger_ui
    fixture = json.loads((Path(__file__).parents[1] / "query" / "upstream" / "jaeger_v1.json").read_text())
    upload = tmp_path / "otlp.json"
    upload.write_text(json.dumps(fixture["transform"]["input"]))
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(f"{base}/search")
    page.get_by_role("tab", name="Upload").click()
    with page.expect_response(lambda r: "/api/transform" in r.url, timeout=30_000) as answer:
        page.locator("input[type=file]").first.set_input_files(str(upload))
    assert answer.value.status == 200
    assert answer.value.json()["data"][0]["traceID"] == "83a9efd15c1c98a977e0711cc93ee28b"
    page.get_by_text("telemetrygen").first.wait_for(timeout=30_000)  # the uploaded trace is listed
    page.close()
