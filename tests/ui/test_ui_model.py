"""The UI's pure modules (span tree, critical path, flame layout, form parsing, graph layout),
imported into a real chromium page; the page's files are answered from the package directory, so
these need no server."""

from __future__ import annotations

import colorsys
from pathlib import Path
from typing import Any

UI_DIR = Path(__file__).resolve().parents[2] / "meshtrace" / "query" / "ui"


def _serve_ui(route: Any) -> None:
    """Answer the UI's own files from the package directory (module tests need no server)."""
    path = route.request.url.split("://", 1)[1].split("/", 1)[1].split("?")[0]
    if path.startswith("static/"):
        target = UI_DIR / path.removeprefix("static/")
        ctype = "text/javascript" if target.suffix == ".js" else "text/plain"
        route.fulfill(status=200, body=target.read_text(), content_type=ctype)
    else:
        route.fulfill(status=200, body="<!doctype html><title>t</title>", content_type="text/html")


MODEL_CASES = """async () => {
  const m = await import('/static/model.js');
  const g = await import('/static/graph.js');
  const sp = (id, parent, start, duration, service = 'a', tags = []) => ({
    traceID: 't', spanID: id, operationName: 'op-' + id, startTime: start, duration, tags, logs: [],
    references: parent ? [{refType: 'CHILD_OF', traceID: 't', spanID: parent}] : [], processID: service,
  });
  const trace = (spans) => ({traceID: 't', spans, processes: {a: {serviceName: 'a', tags: []},
                                                              b: {serviceName: 'b', tags: []}}});
  const out = {};
  // root 0-100 with children c1 10-40 and c2 30-90 (overlapping), grandchild g 35-80 under c2.
  const t1 = m.buildTrace(trace([sp('r', null, 0, 100), sp('c1', 'r', 10, 30), sp('c2', 'r', 30, 60, 'b'),
                                 sp('g', 'c2', 35, 45, 'b', [{key: 'error', type: 'bool', value: true}]),
                                 sp('o', 'gone', 50, 5)]));
  out.order = t1.nodes.map((n) => n.id);
  out.orphans = t1.orphans.map((n) => n.id);
  out.errors = t1.errorCount;
  out.rootName = t1.rootSpan.operation;
  out.critical = m.criticalPath(t1).map((s) => [s.id, s.start, s.end]);
  const rows = m.flameLayout(t1);
  out.flame = Object.fromEntries([...rows].map(([n, r]) => [n.id, r]));
  const t3 = m.buildTrace(trace([sp('p', null, 0, 100), sp('k1', 'p', 0, 10), sp('k2', 'p', 5, 10),
                                 sp('k3', 'p', 20, 10), sp('k4', 'k2', 6, 2)]));
  out.flame3 = Object.fromEntries([...m.flameLayout(t3)].map(([n, r]) => [n.id, r]));
  out.visible = m.visibleNodes(t1, new Set(['r'])).map((n) => n.id);
  out.find = [...m.findSpans(t1, 'error=true')].map((n) => n.id);
  out.self = Object.fromEntries(t1.nodes.map((n) => [n.id, m.selfTime(n)]));
  out.stats = m.operationStats(t1).map((r) => [r.service, r.operation, r.count, r.errors, r.total, r.self]);
  const q = await import('/static/search.js');
  const now = Date.parse('2026-01-02T03:04:05Z');
  const query = (text) => q.apiQuery(new URLSearchParams(text), now);
  out.query = query('service=s&tags=a%3D1&errors=1&lookback=15m&minDuration=5ms');
  out.custom = query('service=s&lookback=custom&start=2026-01-02T03:00&end=2026-01-02T03:30');
  out.backwards = query('service=s&lookback=custom&start=2026-01-02T03:30&end=2026-01-02T03:00');
  out.badLimit = query('service=s&limit=0');
  out.offset = new Date(2026, 0, 2, 3, 0).getTime();
  // a parent cycle and a self-parent still give a forest
  const t2 = m.buildTrace(trace([sp('x', 'y', 0, 10), sp('y', 'x', 1, 5), sp('z', 'z', 2, 3)]));
  out.cycle = t2.nodes.map((n) => [n.id, n.depth]).sort();
  out.tags = m.parseTags('a=1 b="two words" c=x\\\\"y');
  out.badTags = m.parseTags('a=1 oops');
  out.roundTrip = m.parseTags(m.formatTags({k: 'v w', e: '', q: 'say "hi"'}));
  out.durations = [m.isDuration('1.5s'), m.isDuration('100ms'), m.isDuration('abc'), m.isDuration('')];
  out.fmt = [m.fmtDuration(850), m.fmtDuration(12345), m.fmtDuration(1240000), m.fmtDuration(125e6)];
  out.ticks = [m.ticks(120000, 4), m.ticks(120000, 4, true)];
  out.color = [m.serviceColor('frontend') === m.serviceColor('frontend'), m.serviceColor('x').length];
  const link = (parent, child, callCount) => ({parent, child, callCount});
  const links = [link('a', 'b', 3), link('b', 'c', 1), link('c', 'a', 1), link('a', 'c', 2)];
  const layout = g.layoutDependencies(links);
  out.layers = Object.fromEntries(layout.nodes.map((n) => [n.name, n.x]));
  out.backEdges = layout.edges.filter((e) => e.back).map((e) => e.parent + '>' + e.child);
  out.skipEdges = layout.edges.filter((e) => e.skip).map((e) => e.parent + '>' + e.child);
  out.wide = g.layoutDependencies(links, {width: 2000, nodeWidth: 200}).width;
  const tag = (key, value) => ({key, value});
  out.http = [
    m.httpRequest({tags: [tag('http.method', 'GET'), tag('http.url', 'http://h:80/a/b?x=1')]}),
    m.httpRequest({tags: [tag('http.request.method', 'POST'), tag('url.path', '/p'), tag('http.url', 'http://h/q')]}),
    m.httpRequest({tags: [tag('http.method', 'PUT'), tag('http.target', '/t?y')]}),
    m.httpRequest({tags: [tag('upstream_cluster', 'outbound|8080||b.default.svc.cluster.local')]}),
    m.httpRequest({tags: []}),
  ];
  out.proxyPods = [m.proxyPod('sidecar~10.0.0.5~frontend-0.default~default.svc.cluster.local'),
                   m.proxyPod('router~127.0.0.1~istio-ingressgateway-0.istio-system~istio-system.svc.cluster.local'),
                   m.proxyPod('x~1~2'), m.proxyPod(undefined)];
  out.palette = Array.from({length: 400}, (_, i) => m.serviceColor('svc-' + i));
  const mesh = [link('gw.istio-system', 'fe.default', 10), link('fe.default', 'fe', 10),
                link('fe', 'fe.default', 4), link('fe.default', 'be.default', 4),
                link('be.default', 'be', 4), link('lonely.x', 'be', 1)];
  mesh[3].errorCount = 1;
  const grouped = g.groupWorkloads(mesh);
  out.grouped = grouped.links.map((l) => [l.parent, l.child, l.callCount, l.errorCount ?? null]);
  out.members = Object.fromEntries(grouped.members);
  return out;
}"""


def test_model_functions(browser: Any) -> None:
    """The pure modules (span tree, critical path, flame layout, form parsing, graph layout)."""
    page = browser.new_page()
    page.route("http://meshtrace.test/**", _serve_ui)
    page.goto("http://meshtrace.test/")
    out = page.evaluate(MODEL_CASES)
    page.close()
    assert out["order"] == ["r", "c1", "c2", "g", "o"]
    assert out["orphans"] == ["o"]
    assert out["errors"] == 1
    assert out["rootName"] == "op-r"
    # Walking back from the root's end: root's tail, c2 until g's end, g, c2 before g, c1 up to
    # c2's start, then the root's head. The orphan's own tree is not the root's latency.
    assert out["critical"] == [
        ["r", 0, 10],
        ["c1", 10, 30],
        ["c2", 30, 35],
        ["g", 35, 80],
        ["c2", 80, 90],
        ["r", 90, 100],
    ]
    # c1 and c2 overlap in time, so c2's subtree goes below c1's; the orphan's tree comes after
    # the root's (rows 0-3) and an empty row.
    assert out["flame"] == {"r": 0, "c1": 1, "c2": 2, "g": 3, "o": 5}
    # k2 overlaps k1 and goes below it (with its child k4 under it); k3 starts after k1 ended
    # and reuses k1's row.
    assert out["flame3"] == {"p": 0, "k1": 1, "k2": 2, "k4": 3, "k3": 1}
    assert out["visible"] == ["r", "o"]
    assert out["find"] == ["g"]
    # r 0-100 has children c1 10-40 and c2 30-90 (union 10-90); c2 30-90 has g 35-80.
    assert out["self"] == {"r": 20, "c1": 30, "c2": 15, "g": 45, "o": 5}
    assert out["stats"] == [
        ["b", "op-g", 1, 1, 45, 45],
        ["a", "op-c1", 1, 0, 30, 30],
        ["a", "op-r", 1, 0, 100, 20],
        ["b", "op-c2", 1, 0, 60, 15],
        ["a", "op-o", 1, 0, 5, 5],
    ]
    now_us = 1767323045000 * 1000
    assert out["query"] == {
        "params": {
            "service": "s",
            "operation": "",
            "tags": '{"a":"1","error":"true"}',
            "minDuration": "5ms",
            "maxDuration": "",
            "start": str(now_us - 15 * 60 * 1_000_000),
            "end": str(now_us),
            "limit": "20",
        }
    }
    # Custom ranges are local times in the browser's zone.
    start_us = out["offset"] * 1000
    assert out["custom"]["params"]["start"] == str(start_us)
    assert out["custom"]["params"]["end"] == str(start_us + 30 * 60 * 1_000_000)
    assert out["backwards"] == {"error": "end: must be after start"}
    assert out["badLimit"] == {"error": 'limit: "0" is not a positive number'}
    assert out["cycle"] == [["x", 0], ["y", 1], ["z", 0]]
    assert out["tags"] == {"tags": {"a": "1", "b": "two words", "c": 'x\\"y'}}
    assert out["badTags"] == {"error": 'attributes: "oops" is not key=value'}
    assert out["roundTrip"] == {"tags": {"k": "v w", "e": "", "q": 'say "hi"'}}
    assert out["durations"] == [True, True, False, True]
    assert out["fmt"] == ["850µs", "12.3ms", "1.24s", "2m 5s"]
    assert out["ticks"] == [[0, 50000, 100000], [0, 50000, 100000, 150000]]
    assert out["color"] == [True, 7]
    assert out["layers"]["a"] < out["layers"]["b"] < out["layers"]["c"]
    assert out["backEdges"] == ["c>a"]
    assert out["skipEdges"] == ["a>c"]
    assert out["wide"] == 2000  # the columns spread over the width on offer
    assert out["http"] == [
        {"method": "GET", "path": "/a/b?x=1"},
        {"method": "POST", "path": "/p"},
        {"method": "PUT", "path": "/t?y"},
        {"method": "", "path": "outbound|8080||b.default.svc.cluster.local"},
        {"method": "", "path": ""},
    ]
    # A sidecar's or the gateway's pod comes from its Envoy node id.
    assert out["proxyPods"] == ["frontend-0", "istio-ingressgateway-0", "", ""]
    # No service is ever drawn red (red means error), and the hash spreads over the palette.
    colours = set(out["palette"])
    assert len(colours) == 16
    for colour in colours:
        r, g, b = (int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5))
        hue, _, saturation = colorsys.rgb_to_hls(r, g, b)
        assert not (saturation > 0.3 and (hue < 25 / 360 or hue > 330 / 360)), colour
    # An app and its sidecar (`<app>.<namespace>`) fold into one workload; calls between the two
    # halves vanish, the rest add up; a dotted name with no app partner stays as it is.
    assert out["grouped"] == [
        ["gw.istio-system", "fe", 10, None],
        ["fe", "be", 4, 1],
        ["lonely.x", "be", 1, None],
    ]
    assert out["members"] == {
        "be": ["be", "be.default"],
        "fe": ["fe", "fe.default"],
        "gw.istio-system": ["gw.istio-system"],
        "lonely.x": ["lonely.x"],
    }
