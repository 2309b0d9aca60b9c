"""The web UI in a real browser: Debian's chromium driven by Playwright, against a real
`meshtrace collector` (store exporter + query extension) fed by the official OTLP exporter.

Set MESHTRACE_UI_SCREENSHOTS=docs/img to save pictures of the views for the docs."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from opentelemetry import trace as otel_trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from playwright.sync_api import expect

SCRIPT_PROBE = "<script>alert(1)</script>"
IMG_PROBE = "<img src=x onerror=alert(2)>"
BOLD_PROBE = "<b>alice</b>"
MISSING_PARENT = 0x0BADC0FFEE0DDF00
MS = 1_000_000  # nanoseconds


class Page:
    """A browser page that records every JavaScript dialog (XSS would fire one) and every error."""

    def __init__(self, browser: Any, base: str) -> None:
        self.base = base
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.page = browser.new_page(viewport={"width": 1400, "height": 900}, accept_downloads=True)
        self.page.set_default_timeout(15_000)
        self.page.on("dialog", self._dialog)
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on("console", self._console)

    def _console(self, message: Any) -> None:
        # A 4xx answer the test asked for logs "Failed to load resource"; anything else (a CSP
        # violation, a script error) is a bug.
        if message.type == "error" and "Failed to load resource" not in message.text:
            self.errors.append(message.text)

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def goto(self, path: str) -> Any:
        self.page.goto(self.base + path)
        return self.page


def api_get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def wait_for(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout}s")
        time.sleep(0.1)


def send_trace(otlp_http: str) -> dict[str, str]:
    """A checkout through three services, sent by the official OTLP/HTTP exporter: frontend ->
    backend (an error), backend's database call (an error), and an inventory span whose parent
    was never exported. Returns the trace id and the span ids as lowercase hex."""
    start = time.time_ns() - 5_000 * MS
    providers = []

    def tracer(service: str, **resource: str) -> otel_trace.Tracer:
        provider = TracerProvider(resource=Resource.create({"service.name": service, **resource}))
        provider.add_span_processor(
            SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"http://{otlp_http}/v1/traces", timeout=5))
        )
        providers.append(provider)
        return provider.get_tracer("meshtrace-ui-test")

    frontend = tracer("frontend")
    backend = tracer("backend", **{"k8s.pod.name": IMG_PROBE})
    inventory = tracer("inventory")
    at = lambda ms: start + ms * MS  # noqa: E731

    root = frontend.start_span("GET /checkout", kind=SpanKind.SERVER, start_time=at(0))
    call = frontend.start_span(
        "GET backend", context=otel_trace.set_span_in_context(root), kind=SpanKind.CLIENT, start_time=at(5)
    )
    server = backend.start_span(
        "GET /api/cart",
        context=otel_trace.set_span_in_context(call),
        kind=SpanKind.SERVER,
        start_time=at(10),
        attributes={"xss": SCRIPT_PROBE, "http.response.status_code": 500},
    )
    server.add_event("cache miss", {"cart.owner": BOLD_PROBE}, timestamp=at(12))
    db = backend.start_span(
        "SELECT cart", context=otel_trace.set_span_in_context(server), kind=SpanKind.CLIENT, start_time=at(20)
    )
    db.set_status(Status(StatusCode.ERROR, "timeout"))
    db.end(end_time=at(70))
    server.set_status(Status(StatusCode.ERROR, "database timeout"))
    server.end(end_time=at(85))
    call.end(end_time=at(90))
    trace_id = root.get_span_context().trace_id
    lost_parent = NonRecordingSpan(
        SpanContext(trace_id, MISSING_PARENT, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    )
    orphan = inventory.start_span(
        "GET /stock",
        context=otel_trace.set_span_in_context(lost_parent),
        kind=SpanKind.SERVER,
        start_time=at(30),
    )
    orphan.end(end_time=at(60))
    root.end(end_time=at(100))
    for provider in providers:
        provider.shutdown()
    hexid = lambda span: format(span.get_span_context().span_id, "016x")  # noqa: E731
    return {
        "trace": format(trace_id, "032x"),
        "root": hexid(root),
        "server": hexid(server),
        "db": hexid(db),
        "orphan": hexid(orphan),
    }


def screenshot(page: Any, name: str) -> None:
    if os.environ.get("MESHTRACE_UI_SCREENSHOTS"):
        page.screenshot(path=str(Path(os.environ["MESHTRACE_UI_SCREENSHOTS"]) / name), full_page=True)


def classes(locator: Any) -> str:
    return str(locator.get_attribute("class") or "")


def cell(table: Any, key: str) -> str:
    """The value cell of a key/value table's row for `key`."""
    row = table.locator("tr", has=table.page.locator("th", has_text=key))
    return str(row.locator("td").first.inner_text())


def stored_trace(base: str, otlp: str) -> dict[str, str]:
    ids = send_trace(otlp)

    def complete() -> bool:
        try:
            data = api_get(f"{base}/api/traces/{ids['trace']}")["data"]
        except urllib.error.HTTPError:
            return False
        return bool(data) and len(data[0]["spans"]) == 5

    wait_for(complete, "the 5 spans stored")
    return ids


def test_search_results_trace_view_and_span_detail(browser: Any, collector: tuple[str, str]) -> None:
    base, otlp = collector
    ids = stored_trace(base, otlp)
    ui = Page(browser, base)

    # Deep link to a search; the result names the trace by its root span.
    page = ui.goto("/search?service=frontend&lookback=1h")
    result = page.locator(f'.result[data-trace-id="{ids["trace"]}"]')
    result.wait_for()
    assert page.locator("#result-count").inner_text() == "1 trace"
    title = result.locator(".result-title")
    assert title.locator(".result-service").inner_text() + ": " + title.locator(
        ".result-operation"
    ).inner_text() == ("frontend: GET /checkout")
    assert result.locator(".span-count").inner_text() == "5 spans"
    assert result.locator(".error-badge").inner_text() == "2 errors"
    assert result.locator(".orphan-badge").inner_text() == "1 missing parent"
    chips = result.locator(".chip").all_inner_texts()
    assert sorted(c.split()[0] for c in chips) == ["backend", "frontend", "inventory"]
    assert page.locator(f'.scatter .dot[data-trace-id="{ids["trace"]}"]').count() == 1
    assert page.locator("#service").input_value() == "frontend"

    # Result -> trace view.
    result.locator("a.result-link").click()
    page.wait_for_url(f"**/trace/{ids['trace']}")
    assert page.locator("#stat-spans").inner_text() == "5"
    assert page.locator("#stat-services").inner_text() == "3"
    assert page.locator("#stat-errors").inner_text() == "2"
    assert page.locator(".trace-name").inner_text().replace("\n", "") == "frontend: GET /checkout"
    assert page.locator(".span-row").count() == 5

    # The span whose parent never arrived is marked and explained.
    orphan = page.locator(f'.span-row[data-span-id="{ids["orphan"]}"]')
    assert "is-orphan" in classes(orphan)
    assert "Missing parent" in (orphan.locator(".orphan-marker").get_attribute("title") or "")
    banner = page.locator("#orphan-banner").inner_text()
    assert "1 span points at a parent that is not in this trace" in banner
    assert page.locator(".span-row.is-orphan").count() == 1

    # Span detail: attribute, event and resource values are shown as literal text, never run.
    page.locator(f'.span-row[data-span-id="{ids["server"]}"]').click()
    detail = page.locator(f'.span-detail[data-span-id="{ids["server"]}"]')
    detail.wait_for()
    assert cell(detail.locator("table.attributes"), "xss") == SCRIPT_PROBE
    assert cell(detail.locator("table.resource"), "k8s.pod.name") == IMG_PROBE
    assert "cache miss" in detail.locator(".logs").inner_text()
    assert BOLD_PROBE in detail.locator(".logs").inner_text()
    assert "ERROR: database timeout" in detail.inner_text()
    assert page.locator(f'.span-row[data-span-id="{ids["server"]}"] .log-tick').count() == 1
    assert page.evaluate("document.querySelectorAll('main script, main img, main b').length") == 0
    assert ui.dialogs == []

    # Critical path: on by default along the root's chain, off with the toggle.
    assert "on-critical" in classes(page.locator(f'.span-row[data-span-id="{ids["root"]}"]'))
    assert "on-critical" in classes(page.locator(f'.span-row[data-span-id="{ids["db"]}"]'))
    assert "on-critical" not in classes(orphan)
    page.locator("#critical").click()
    assert page.locator(".span-row.on-critical").count() == 0
    page.locator("#critical").click()

    # Find in trace highlights the matching span.
    page.locator("#find").fill("cache miss")
    assert page.locator("#match-count").inner_text() == "1 match"
    assert page.locator(".span-row.match").get_attribute("data-span-id") == ids["server"]
    page.locator("#find").press("Escape")
    assert page.locator(".span-row.match").count() == 0
    page.locator(".trace-header button.chip", has_text="inventory").click()
    assert page.locator("#match-count").inner_text() == "1 match"
    assert page.locator(".span-row.match").get_attribute("data-span-id") == ids["orphan"]
    page.locator("#find").press("Escape")

    # Collapse the root: only the root and the orphan (a separate top-level tree) stay visible.
    page.locator(f'.span-row[data-span-id="{ids["root"]}"] .twisty').click()
    assert page.locator(".span-row").count() == 2
    page.locator("#expand-all").click()
    assert page.locator(".span-row").count() == 5

    # Keyboard: arrows move between rows, Enter opens the span's details.
    page.locator(f'.span-row[data-span-id="{ids["root"]}"]').focus()
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Enter")
    assert page.locator(".span-detail").count() == 2  # the server span's and the focused client span's

    # Flame graph: one box per span; clicking the orphan shows its explanation.
    page.locator("#view-flame").click()
    assert page.locator(".flame-box").count() == 5
    page.locator(f'.flame-box[data-span-id="{ids["orphan"]}"]').click()
    screenshot(page, "flame-graph.png")
    assert "Missing parent" in page.locator(".orphan-callout").inner_text()
    assert "not in this trace" in page.locator(".span-detail").inner_text()

    # Statistics: one row per service and operation, sortable; a service opens its spans.
    page.locator("#view-stats").click()
    rows = page.locator("#stats-table tbody tr")
    assert rows.count() == 5
    screenshot(page, "statistics.png")
    db_row = rows.filter(has_text="SELECT cart")
    # operation, spans, errors, total, mean, max, self time
    expected = ["SELECT cart", "1", "1", "50ms", "50ms", "50ms", "50ms"]
    assert db_row.locator("td").all_inner_texts()[1:] == expected
    page.locator('#stats-table button.sort[data-key="count"]').click()
    page.locator('#stats-table button.sort[data-key="operation"]').click()
    assert rows.first.locator("td").nth(1).inner_text() == "GET /api/cart"
    rows.filter(has_text="GET /stock").locator("button.linkish").click()
    assert page.locator("#view-timeline").get_attribute("aria-pressed") == "true"
    assert page.locator(".span-row.match").get_attribute("data-span-id") == ids["orphan"]

    # Downloads: the trace as Jaeger JSON and as OTLP/JSON.
    with page.expect_download() as jaeger_download:
        page.locator("#download-jaeger").click()
    jaeger = json.loads(Path(jaeger_download.value.path()).read_text())
    assert jaeger["data"][0]["traceID"] == ids["trace"]
    with page.expect_download() as otlp_download:
        page.locator("#download-otlp").click()
    otlp_json = json.loads(Path(otlp_download.value.path()).read_text())
    assert sum(len(s["spans"]) for rs in otlp_json["resourceSpans"] for s in rs["scopeSpans"]) == 5

    assert ui.dialogs == []
    assert ui.errors == []
    page.close()


def test_search_form_deep_links_and_bad_input(browser: Any, collector: tuple[str, str]) -> None:
    base, otlp = collector
    ids = stored_trace(base, otlp)
    ui = Page(browser, base)

    # A bad duration in a deep link is named, and no request is made with it.
    page = ui.goto("/search?service=frontend&minDuration=abc")
    expect(page.locator("#form-error")).to_contain_text("minDuration")

    # The form writes its state into the URL: attributes and errors-only.
    page.locator("#service").select_option("backend")
    page.locator("#minDuration").fill("")
    page.locator("#tags").fill('http.response.status_code=500 cart.owner="<b>alice</b>"')
    page.locator("#errors").check()
    page.locator("#find").click()
    page.locator(f'.result[data-trace-id="{ids["trace"]}"]').wait_for()
    assert "service=backend" in page.url and "errors=1" in page.url
    assert page.locator("#tags").input_value() == 'http.response.status_code=500 cart.owner="<b>alice</b>"'

    # Reloading the deep link gives the same search.
    page.reload()
    page.locator(f'.result[data-trace-id="{ids["trace"]}"]').wait_for()

    # inventory's only span has no error: errors-only finds nothing.
    page = ui.goto("/search?service=inventory&errors=1")
    page.locator(".results .empty").wait_for()
    assert "No traces found" in page.locator(".results .empty").inner_text()

    # A malformed attributes field names the token.
    page.locator("#tags").fill("oops")
    page.locator("#find").click()
    expect(page.locator("#form-error")).to_contain_text('attributes: "oops" is not key=value')

    # A scatter dot opens its trace, by mouse and by keyboard.
    page = ui.goto("/search?service=inventory")
    page.locator(f'.scatter .dot[data-trace-id="{ids["trace"]}"]').click()
    page.wait_for_url(f"**/trace/{ids['trace']}")
    page.go_back()
    page.locator(f'.scatter .dot[data-trace-id="{ids["trace"]}"]').focus()
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/trace/{ids['trace']}")

    # Live: with the switch on, a trace sent after the search shows up without a click.
    page = ui.goto("/search?service=inventory")
    expect(page.locator("#result-count")).to_have_text("1 trace")
    page.locator("#live").check()
    later = send_trace(otlp)["trace"]
    expect(page.locator(f'.result[data-trace-id="{later}"]')).to_be_visible(timeout=20_000)
    expect(page.locator("#result-count")).to_have_text("2 traces")
    assert page.locator("#live").is_checked()
    page.locator("#live").uncheck()

    # Deep link to one span of a trace, with Jaeger UI's uiFind; "/" jumps to find-in-trace.
    page = ui.goto(f"/trace/{ids['trace']}?span={ids['server']}&uiFind=cart.owner")
    expect(page.locator(f'.span-detail[data-span-id="{ids["server"]}"]')).to_be_visible()
    expect(page.locator("#match-count")).to_have_text("1 match")
    page.locator("body").press("Escape")
    page.locator(f'.span-row[data-span-id="{ids["db"]}"]').click()
    page.locator(f'.span-detail[data-span-id="{ids["db"]}"] .span-link').click()
    page.wait_for_url(f"**/trace/{ids['trace']}?span={ids['db']}")
    expect(page.locator(f'.span-detail[data-span-id="{ids["db"]}"]')).to_be_visible()
    page.keyboard.press("/")
    expect(page.locator("#find")).to_be_focused()

    # An attribute's "find traces" link searches for it, markup and all, through the URL and form.
    page = ui.goto(f"/trace/{ids['trace']}?span={ids['server']}")
    row = page.locator("table.attributes tr", has=page.locator("th", has_text="xss"))
    row.hover()
    row.locator("a", has_text="find traces").click()
    page.locator(f'.result[data-trace-id="{ids["trace"]}"]').wait_for()
    assert page.locator("#service").input_value() == "backend"
    assert page.locator("#tags").input_value() == f"xss={SCRIPT_PROBE}"

    # Several ids in the lookup box list those traces; the unknown one is named.
    unknown = "0123456789abcdef0123456789abcdef"
    page.locator("#lookup-id").fill(f"{ids['trace']}, {unknown}")
    page.locator("#lookup-id").press("Enter")
    page.locator(f'.result[data-trace-id="{ids["trace"]}"]').wait_for()
    assert page.locator("#result-count").inner_text() == "1 trace"
    assert page.locator("#missing-ids").inner_text() == f"Not found: {unknown}"

    # Trace id lookup in the header; an unknown id says so.
    page.locator("#lookup-id").fill("00000000000000000000000000000abc")
    page.locator("#lookup-id").press("Enter")
    page.wait_for_url("**/trace/00000000000000000000000000000abc")
    expect(page.locator("#trace-error")).to_contain_text("not found")

    # A 200 that is not JSON (a proxy's or captive portal's page) is named as such, not as
    # "Cannot read properties of null" (what the UI said before tsc's null checks).
    page.route(
        "**/api/services", lambda route: route.fulfill(status=200, content_type="text/html", body="<p>portal")
    )
    page = ui.goto("/search")
    expect(page.locator("#form-error")).to_have_text("services: 200 OK: the answer is not JSON")
    page.unroute("**/api/services")
    assert ui.dialogs == [] and ui.errors == []
    page.close()


def test_dependency_graph_and_upload(browser: Any, collector: tuple[str, str], tmp_path: Path) -> None:
    base, otlp = collector
    ui = Page(browser, base)

    # An empty store: the landing page says so and shows the traces once they arrive.
    page = ui.goto("/")
    expect(page.locator("#no-traces")).to_contain_text("No traces stored yet")
    ids = stored_trace(base, otlp)
    expect(page.locator(f'.result[data-trace-id="{ids["trace"]}"]')).to_be_visible(timeout=20_000)
    assert page.url == base + "/"

    page = ui.goto("/dependencies")
    page.locator("#dep-graph").wait_for()
    services = sorted(page.locator(".dep-node").evaluate_all("nodes => nodes.map(n => n.dataset.service)"))
    assert services == ["backend", "frontend"]
    edge = page.locator('.dep-edge[data-parent="frontend"][data-child="backend"]')
    assert edge.locator(".edge-label").text_content() == "1 call · 100% errors"
    assert "has-errors" in classes(edge)
    assert page.locator("#dep-table tbody tr").count() == 1
    page.locator('.dep-node[data-service="backend"]').click()
    page.wait_for_url("**/search?service=backend")

    # Upload an OTLP/JSON file (the file exporter's format): the UI imports it and opens the trace.
    # Its services carry markup too, and one calls the other, so they reach the graph.
    trace_id = "5b8efff798038103d269b633813fc60c"
    now = time.time_ns()

    def resource_spans(service: str, span: dict[str, Any]) -> dict[str, Any]:
        name = {"key": "service.name", "value": {"stringValue": service}}
        return {"resource": {"attributes": [name]}, "scopeSpans": [{"spans": [span]}]}

    root = {
        "traceId": trace_id,
        "spanId": "eee19b7ec3c1b174",
        "name": "uploaded <script>alert(3)</script>",
        "kind": 2,
        "startTimeUnixNano": str(now - 50 * MS),
        "endTimeUnixNano": str(now),
    }
    child = {
        "traceId": trace_id,
        "spanId": "eee19b7ec3c1b175",
        "parentSpanId": "eee19b7ec3c1b174",
        "name": "SELECT",
        "kind": 2,
        "startTimeUnixNano": str(now - 40 * MS),
        "endTimeUnixNano": str(now - 10 * MS),
    }
    caller, callee = "imported <svg onload=alert(4)>", "imported-db"
    line = {"resourceSpans": [resource_spans(caller, root), resource_spans(callee, child)]}
    upload = tmp_path / "spans.jsonl"
    upload.write_text(json.dumps(line) + "\n")
    page.locator("#upload").set_input_files(str(upload))
    page.wait_for_url(f"**/trace/{trace_id}")
    assert page.locator(".trace-name").inner_text().replace("\n", "") == (
        f"{caller}: uploaded <script>alert(3)</script>"
    )
    expect(page.locator("#toast")).to_contain_text("Imported spans.jsonl: 2 new spans in 1 trace")
    # The same file again: nothing is stored twice, and the toast says so.
    page.locator("#upload").set_input_files(str(upload))
    expect(page.locator("#toast")).to_contain_text(
        "Imported spans.jsonl: 0 new spans, 2 already stored in 1 trace"
    )
    # the toast comes before the trace page is drawn again: wait for its rows
    expect(page.locator(".span-row")).to_have_count(2)
    page = ui.goto("/dependencies")
    node = page.locator(".dep-node", has_text=caller)
    expect(node).to_have_attribute("data-service", caller)
    assert node.locator(".node-label").text_content() == caller  # whole, however long
    assert node.locator("title").text_content() == f"{caller} — click to search its traces"
    assert page.locator("#dep-table").inner_text().count(caller) == 1
    assert page.evaluate("document.querySelectorAll('[onload], [onerror]').length") == 0

    # A file that is neither format: the server's reason is shown.
    bad = tmp_path / "bad.json"
    bad.write_text("not json\n")
    page.locator("#upload").set_input_files(str(bad))
    page.locator("#toast .toast-error").wait_for()
    expect(page.locator("#toast")).to_contain_text("Import of bad.json failed")
    assert ui.dialogs == [] and ui.errors == []
    page.close()
