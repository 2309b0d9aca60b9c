"""The UI reads at a glance (issue 13): service colours that never look like errors and do not
move, unmistakable error traces, result titles with the request, span-kind markers, pod names, a
resizable name column, a dependency graph of workloads (app + sidecar), and a sticky toolbar
without a gap. Mesh-shaped traces (gateway -> sidecar -> app -> sidecar -> sidecar -> app), sent by
the official OTLP/HTTP exporter to a real `meshtrace collector`, in Debian's chromium.

Set MESHTRACE_UI_SCREENSHOTS=docs/img to save the pictures docs/ui.md shows."""

from __future__ import annotations

import colorsys
import re
import time
from typing import Any

import pytest
from opentelemetry import trace as otel_trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode
from playwright.sync_api import expect

from tests.ui.test_ui_browser import MS, Page, api_get, screenshot, wait_for

GATEWAY = "istio-ingressgateway.istio-system"
ROUTE = "frontend.default.svc.cluster.local:8080/*"
OK_TRACES = 20  # with one failing trace: a 1-in-21 (4.8 %) error rate on the gateway's edge


class Mesh:
    """One tracer provider per service, as the gateway, sidecars and apps each export their own."""

    def __init__(self, otlp_http: str) -> None:
        self.endpoint = f"http://{otlp_http}/v1/traces"
        self.providers: dict[str, TracerProvider] = {}

    def tracer(self, service: str, **resource: str) -> otel_trace.Tracer:
        if service not in self.providers:
            provider = TracerProvider(resource=Resource.create({"service.name": service, **resource}))
            provider.add_span_processor(
                SimpleSpanProcessor(OTLPSpanExporter(endpoint=self.endpoint, timeout=5))
            )
            self.providers[service] = provider
        return self.providers[service].get_tracer("meshtrace-ui-test")

    def request(self, path: str, fail: bool, start: int, query_ms: int = 2) -> str:
        """One request through the mesh as `up` runs it (the backend's query takes `query_ms`);
        returns the trace id."""
        at = lambda ms: start + ms * MS  # noqa: E731
        ctx = otel_trace.set_span_in_context
        sidecar_tags = {"http.method": "GET", "http.url": f"http://frontend:8080{path}?q=1"}
        gw = self.tracer(GATEWAY)
        root = gw.start_span(
            ROUTE,
            kind=SpanKind.SERVER,
            start_time=at(0),
            attributes={**sidecar_tags, "upstream_cluster": f"outbound|8080||{ROUTE.split(':')[0]}"},
        )
        inbound = self.tracer("frontend.default").start_span(
            "frontend.default.svc.cluster.local:8080/*",
            context=ctx(root),
            kind=SpanKind.SERVER,
            start_time=at(1),
            attributes={
                **sidecar_tags,
                "node_id": "sidecar~127.0.1.2~frontend-1.default~default.svc.cluster.local",
            },
        )
        frontend = self.tracer("frontend", **{"k8s.pod.name": "frontend-1", "k8s.namespace.name": "default"})
        app = frontend.start_span(
            f"GET {path}",
            context=ctx(inbound),
            kind=SpanKind.SERVER,
            start_time=at(2),
            attributes={"http.request.method": "GET", "url.path": path},
        )
        call = frontend.start_span("GET", context=ctx(app), kind=SpanKind.CLIENT, start_time=at(3))
        outbound = self.tracer("frontend.default").start_span(
            "backend.default.svc.cluster.local:8080/*",
            context=ctx(call),
            kind=SpanKind.CLIENT,
            start_time=at(4),
        )
        backend_in = self.tracer("backend.default").start_span(
            "backend.default.svc.cluster.local:8080/*",
            context=ctx(outbound),
            kind=SpanKind.SERVER,
            start_time=at(5),
        )
        backend = self.tracer("backend", **{"k8s.pod.name": "backend-0", "k8s.namespace.name": "default"})
        served = backend.start_span(
            "GET /users", context=ctx(backend_in), kind=SpanKind.SERVER, start_time=at(6)
        )
        query = backend.start_span(
            "SELECT users", context=ctx(served), kind=SpanKind.INTERNAL, start_time=at(7)
        )
        query.end(end_time=at(7 + query_ms))
        spans = [served, backend_in, outbound, call, app, inbound, root]
        for i, span in enumerate(spans):
            if fail:
                span.set_status(Status(StatusCode.ERROR, "backend failed"))
            span.end(end_time=at(8 + query_ms + i))
        return format(root.get_span_context().trace_id, "032x")

    def shutdown(self) -> None:
        for provider in self.providers.values():
            provider.shutdown()


def stored(base: str, trace_id: str, spans: int) -> bool:
    try:
        data = api_get(f"{base}/api/traces/{trace_id}")["data"]
    except OSError:
        return False
    return bool(data) and len(data[0]["spans"]) == spans


@pytest.fixture
def mesh_traces(collector: tuple[str, str]) -> dict[str, str]:
    """OK_TRACES good requests and one that fails, oldest first; the failing one is the newest."""
    base, otlp = collector
    mesh = Mesh(otlp)
    start = time.time_ns() - 60_000 * MS
    ids = {"ok": "", "error": ""}
    for i in range(OK_TRACES):
        query_ms = 2 + (i * 7) % 13  # durations that differ, as real ones do
        ids["ok"] = mesh.request("/api/data", fail=False, start=start + i * 1000 * MS, query_ms=query_ms)
    ids["error"] = mesh.request("/api/data", fail=True, start=start + OK_TRACES * 1000 * MS, query_ms=30)
    mesh.shutdown()
    wait_for(lambda: stored(base, ids["error"], 8) and stored(base, ids["ok"], 8), "the traces stored")
    return ids


BBOX = "(el) => { const b = el.getBBox(); return { x: b.x, width: b.width }; }"


def rgb(css: str) -> tuple[int, ...]:
    return tuple(int(v) for v in re.findall(r"\d+", css)[:3])


def looks_red(css: str) -> bool:
    r, g, b = (v / 255 for v in rgb(css))
    hue, _, saturation = colorsys.rgb_to_hls(r, g, b)
    return saturation > 0.3 and (hue < 25 / 360 or hue > 330 / 360)


def style(locator: Any, prop: str) -> str:
    return str(locator.evaluate(f"(el) => getComputedStyle(el).{prop}"))


def test_colours_errors_and_titles_on_the_search_page(
    browser: Any, collector: tuple[str, str], mesh_traces: dict[str, str]
) -> None:
    base, otlp = collector
    ui = Page(browser, base)
    page = ui.goto(f"/search?service={GATEWAY}&lookback=1h&limit=8")
    ok = page.locator(f'.result[data-trace-id="{mesh_traces["ok"]}"]')
    bad = page.locator(f'.result[data-trace-id="{mesh_traces["error"]}"]')
    ok.wait_for()
    screenshot(page, "search.png")

    # The gateway roots every trace: its colour is never red, on the dots, bars and chips alike.
    gateway_colour = style(ok.locator(".result-bar"), "backgroundColor")
    assert not looks_red(gateway_colour), gateway_colour
    ok_dot = page.locator(f'.scatter .dot[data-trace-id="{mesh_traces["ok"]}"]')
    assert not looks_red(style(ok_dot, "fill"))
    # An error trace is red, with a dark ring, and its row carries a red "!" and a red edge.
    bad_dot = page.locator(f'.scatter .dot[data-trace-id="{mesh_traces["error"]}"]')
    assert looks_red(style(bad_dot, "fill"))
    stroke = lambda dot: float(style(dot, "strokeWidth").removesuffix("px"))  # noqa: E731
    assert stroke(bad_dot) > stroke(ok_dot)
    assert style(bad_dot, "stroke") != style(bad_dot, "fill")
    assert bad.locator(".result-title .error-icon").inner_text() == "!"
    assert looks_red(style(bad, "borderLeftColor"))
    assert ok.locator(".error-icon").count() == 0

    # The title: Jaeger's "service: operation", then the request's method and path (from the
    # gateway's http.method / http.url tags).
    assert ok.locator(".result-service").inner_text() == GATEWAY
    assert ok.locator(".result-operation").inner_text() == ROUTE
    assert ok.locator(".result-request").inner_text().split() == ["GET", "/api/data?q=1"]

    # Colours are the same after a reload even when a new service (sorted first) has arrived.
    chip_colour = lambda p: style(  # noqa: E731
        p.locator(".result .chip", has_text="frontend.default").first.locator(".swatch"), "backgroundColor"
    )
    before = chip_colour(page)
    mesh = Mesh(otlp)
    mesh.tracer("aaa-first").start_span("x").end()
    mesh.shutdown()
    wait_for(lambda: "aaa-first" in api_get(f"{base}/api/services")["data"], "the new service")
    page.reload()
    ok.wait_for()
    assert chip_colour(page) == before
    assert ui.dialogs == [] and ui.errors == []
    page.close()


def test_waterfall_kinds_pods_errors_and_resizable_names(
    browser: Any, collector: tuple[str, str], mesh_traces: dict[str, str]
) -> None:
    base, _ = collector
    ui = Page(browser, base)
    page = ui.goto(f"/trace/{mesh_traces['error']}")
    rows = page.locator(".span-row")
    expect(rows).to_have_count(8)

    # Every row says its span kind.
    kinds = rows.evaluate_all("rows => rows.map(r => r.querySelector('.kind')?.dataset.kind)")
    assert kinds == ["server", "server", "server", "client", "client", "server", "server", "internal"]
    # App spans name their pod (k8s.pod.name), in the row and in the details.
    app_row = rows.filter(has_text="GET /api/data").first
    assert app_row.locator(".pod").inner_text() == "frontend-1"
    # A sidecar's pod comes from its Envoy node id; its row leaves room for the route instead.
    assert rows.nth(1).locator(".pod").count() == 0
    rows.nth(1).click()
    assert "Pod\nfrontend-1\n" in page.locator(".span-detail .facts").first.inner_text()
    rows.nth(1).click()
    app_row.click()
    facts = page.locator(".span-detail .facts").first.inner_text()
    assert "Pod\nfrontend-1 (namespace default)" in facts
    # The failing trace: a red "!" in the header; error rows have a red edge and a red "!".
    assert page.locator("#trace-title .error-icon").count() == 1
    assert page.locator(".span-row.is-error .error-icon").count() == 7
    assert looks_red(style(page.locator(".span-row.is-error .span-name").first, "boxShadow"))
    # The request in the trace's title, as in the results.
    assert page.locator("#trace-request").inner_text().split() == ["GET", "/api/data?q=1"]

    # The name column: dragging its handle widens every row's name cell, and the width is
    # remembered across page loads.
    name = rows.first.locator(".span-name")
    before = name.bounding_box()["width"]
    handle = page.locator("#name-resizer").bounding_box()
    x, y = handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 80, y, steps=4)
    page.mouse.move(x + 150, y, steps=4)
    page.mouse.up()
    after = name.bounding_box()["width"]
    assert abs(after - (before + 150)) <= 2, (before, after)
    assert abs(rows.last.locator(".span-name").bounding_box()["width"] - after) <= 1
    page.locator("#name-resizer").focus()
    page.keyboard.press("ArrowLeft")
    assert abs(name.bounding_box()["width"] - (after - 24)) <= 2
    page.reload()
    expect(rows).to_have_count(8)
    assert abs(rows.first.locator(".span-name").bounding_box()["width"] - (after - 24)) <= 2

    # The picture for the docs: a good request, the frontend's span open at its pod.
    page = ui.goto(f"/trace/{mesh_traces['ok']}")
    page.locator(".span-row", has_text="GET /api/data").first.click()
    page.locator(".span-detail .detail-section").first.wait_for()
    page.evaluate("document.querySelectorAll('.span-detail details').forEach((d) => { d.open = false; })")
    screenshot(page, "trace-view.png")
    page = ui.goto(f"/trace/{mesh_traces['error']}")
    rows = page.locator(".span-row")

    # The sticky toolbar starts at (or under) the header's bottom edge: nothing shows between.
    page.set_viewport_size({"width": 1400, "height": 420})
    for row in rows.all():
        row.click()
    page.mouse.wheel(0, 900)
    page.wait_for_timeout(200)
    top_bar = page.locator(".topbar").bounding_box()
    toolbar = page.locator(".toolbar").bounding_box()
    assert toolbar["y"] <= top_bar["y"] + top_bar["height"], (top_bar, toolbar)
    assert ui.dialogs == [] and ui.errors == []
    page.close()


def test_dependency_graph_of_workloads(
    browser: Any, collector: tuple[str, str], mesh_traces: dict[str, str]
) -> None:
    base, _ = collector
    ui = Page(browser, base)
    page = ui.goto("/dependencies")
    page.locator("#dep-graph").wait_for()

    # An app and its sidecar are one workload: gateway -> frontend -> backend, no loops.
    nodes = page.locator(".dep-node")
    expect(nodes).to_have_count(3)
    names = nodes.evaluate_all("ns => ns.map(n => n.dataset.service)")
    assert sorted(names) == ["backend", "frontend", GATEWAY]
    assert page.locator('.dep-node[data-service="frontend"]').get_attribute("data-members") == (
        "frontend frontend.default"
    )
    assert page.locator(".dep-edge").count() == 2
    # One failure in 21 calls: shown amber with its rate, not red.
    edge = page.locator(f'.dep-edge[data-parent="{GATEWAY}"][data-child="frontend"]')
    assert edge.locator(".edge-label").text_content() == f"{OK_TRACES + 1} calls · 4.8% errors"
    assert "some-errors" in (edge.get_attribute("class") or "")
    assert "has-errors" not in (edge.get_attribute("class") or "")
    assert not looks_red(style(edge.locator("path"), "stroke"))

    # Names are whole and fit their boxes; the graph uses the page's width.
    for node in nodes.all():
        label = node.locator(".node-label")
        assert label.text_content() == node.get_attribute("data-service")
        text = label.evaluate(BBOX)
        box = node.locator("rect").first.evaluate(BBOX)
        assert text["x"] + text["width"] <= box["x"] + box["width"]
    graph = page.locator("#dep-graph").bounding_box()
    assert graph["width"] >= 0.9 * page.locator(".deps-content").bounding_box()["width"]
    # Edge labels sit on opaque pills: no curve runs through their text.
    pill = edge.locator(".edge-pill")
    assert style(pill, "fill") == style(page.locator("#dep-graph"), "backgroundColor")
    screenshot(page, "dependencies.png")

    # The toggle shows each app and its sidecar apart, as the store records them.
    page.locator("#dep-sidecars").check()
    page.wait_for_url("**/dependencies?lookback=24h&sidecars=apart")
    expect(nodes).to_have_count(5)
    assert page.locator(".dep-edge").count() == 5
    page.reload()
    expect(nodes).to_have_count(5)
    assert page.locator("#dep-sidecars").is_checked()
    assert ui.dialogs == [] and ui.errors == []
    page.close()
