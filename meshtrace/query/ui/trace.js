// The trace page: header with the trace's numbers, a toolbar (timeline / flame graph, critical
// path, find, downloads) and either the waterfall (span tree with collapse/expand and inline span
// details) or the flame graph.

import * as api from "./api.js";
import { h, mount } from "./dom.js";
import {
  buildTrace, criticalPath, findSpans, flameLayout, fmtDuration, fmtTime, formatTags, httpRequest, operationStats,
  selfTime, serviceColor, tagValue, ticks, visibleNodes,
} from "./model.js";

export const ORPHAN_HELP =
  "Missing parent: this span names a parent span that is not in this trace. Trace context was " +
  "propagated, but the parent span never reached the store: the service that owns it did not export " +
  "it (no exporter, another collector, a different sampling decision), it was dropped on the way, or " +
  "it has not been flushed yet. In a mesh, check that every app copies all trace headers " +
  "(traceparent/tracestate, or every x-b3-* header) from its inbound request to its outbound calls.";

const KINDS = {
  server: ["server", "Server span: this service handled a request"],
  client: ["client", "Client span: this service called another"],
  producer: ["producer", "Producer span: this service sent a message"],
  consumer: ["consumer", "Consumer span: this service received a message"],
  internal: ["internal", "Internal span: work inside this service"],
};

/** The span kind as a small marker (Jaeger keeps it in the span.kind tag); nothing when unknown. */
function kindMarker(kind) {
  const known = KINDS[kind];
  if (!known) return null;
  return h("span", { class: ["kind", `kind-${kind}`], title: known[1], "data-kind": kind }, known[0]);
}

function namespaceOf(node) {
  const ns = tagValue(node.process.tags, "k8s.namespace.name");
  return ns === undefined ? "" : String(ns);
}

const NAME_WIDTH = "meshtrace.nameColumn";
const MIN_NAME_WIDTH = 160;

/**
 * The drag handle on the right edge of the name column: dragging (or ←/→ when focused) sets the
 * column's width for every row at once (a CSS variable on the trace body); the width is remembered.
 */
function nameResizer(body) {
  const clamp = (px) => Math.round(Math.min(Math.max(px, MIN_NAME_WIDTH), body.clientWidth - 200));
  const set = (px) => {
    const width = clamp(px);
    body.style.setProperty("--name-col", `${width}px`);
    handle.setAttribute("aria-valuenow", String(width));
    localStorage.setItem(NAME_WIDTH, String(width));
  };
  const current = () => body.querySelector(".waterfall-head .span-name").getBoundingClientRect().width;
  const handle = h("div", {
    class: "col-resizer", id: "name-resizer", role: "separator", tabindex: "0", "aria-orientation": "vertical",
    "aria-label": "Resize the name column (drag, or ← →)", title: "Drag to resize the name column",
    onpointerdown: (e) => {
      e.preventDefault();
      const startX = e.clientX;
      const startWidth = current();
      handle.setPointerCapture(e.pointerId);
      const move = (ev) => set(startWidth + ev.clientX - startX);
      const up = () => {
        handle.removeEventListener("pointermove", move);
        handle.removeEventListener("pointerup", up);
        handle.classList.remove("dragging");
      };
      handle.classList.add("dragging");
      handle.addEventListener("pointermove", move);
      handle.addEventListener("pointerup", up);
    },
    onkeydown: (e) => {
      if (e.key !== "ArrowLeft" && e.key !== "ArrowRight") return;
      e.preventDefault();
      set(current() + (e.key === "ArrowLeft" ? -24 : 24));
    },
  });
  return handle;
}

function swatch(service) {
  const el = h("span", { class: "swatch" });
  el.style.background = serviceColor(service);
  return el;
}

/** `/search` for the traces of `service` holding attribute key=value. */
function searchLink(service, key, value) {
  return `/search?${new URLSearchParams({ service, tags: formatTags({ [key]: String(value) }) })}`;
}

/** A key/value table; with `service`, each row links to a search for that attribute. */
function kvTable(items, cls, service) {
  if (!items.length) return h("p", { class: "none" }, "none");
  return h("table", { class: ["kv", cls] }, h("tbody", {}, items.map(({ key, value, type }) =>
    h("tr", {}, h("th", { scope: "row" }, key),
      h("td", { class: type ? `t-${type}` : undefined }, value === undefined ? "" : String(value)),
      service === undefined ? null : h("td", { class: "kv-action" },
        h("a", { href: searchLink(service, key, value), "data-nav": "", title: `Traces of ${service} with ${key}=${value}` },
          "find traces"))))));
}

function section(title, count, body, open = true) {
  return h("details", { class: "detail-section", open: open || undefined },
    h("summary", {}, title, h("span", { class: "count" }, String(count))), body);
}

function statusOf(node) {
  const code = tagValue(node.span.tags, "otel.status_code");
  const desc = tagValue(node.span.tags, "otel.status_description");
  if (node.error) return { text: desc ? `ERROR: ${desc}` : "ERROR", cls: "status-error" };
  return { text: code || "UNSET", cls: code === "OK" ? "status-ok" : "status-unset" };
}

function spanDetail(node, model, actions) {
  const t0 = model.start;
  const status = statusOf(node);
  let parent;
  if (node.orphan) {
    parent = h("span", { class: "orphan-text" }, `${node.parentId} (missing from this trace)`);
  } else if (node.parent) {
    parent = h("button", { type: "button", class: "linkish", onclick: () => actions.reveal(node.parent) },
      `${node.parent.id} (${node.parent.service}: ${node.parent.operation})`);
  } else {
    parent = "none (root span)";
  }
  const facts = [
    ["Service", h("span", {}, swatch(node.service), node.service)],
    ["Operation", node.operation],
    ["Span ID", h("code", {}, node.id)],
    ["Parent", parent],
    ["Kind", node.kind || "unspecified"],
    node.pod ? ["Pod", h("span", { class: "pod-fact" }, node.pod,
      namespaceOf(node) ? h("span", { class: "muted" }, ` (namespace ${namespaceOf(node)})`) : null)] : null,
    ["Start", `+${fmtDuration(node.start - t0)} (${fmtTime(node.start)})`],
    ["Duration", fmtDuration(node.duration)],
    ["Self time", `${fmtDuration(selfTime(node))} (not in child spans)`],
    ["Status", h("span", { class: status.cls }, status.text)],
  ];
  const refs = (node.span.references || []).map((ref) => {
    const local = (!ref.traceID || ref.traceID === model.traceID) && model.byId.get(ref.spanID);
    let target;
    if (local) {
      target = h("button", { type: "button", class: "linkish", onclick: () => actions.reveal(local) },
        `${ref.spanID} (${local.service}: ${local.operation})`);
    } else if (ref.traceID && ref.traceID !== model.traceID) {
      target = h("a", { href: `/trace/${encodeURIComponent(ref.traceID)}`, "data-nav": "" },
        `trace ${ref.traceID}, span ${ref.spanID}`);
    } else {
      target = h("span", { class: "orphan-text" }, `${ref.spanID} (not in this trace)`);
    }
    return h("li", {}, h("span", { class: "ref-type" }, ref.refType || "CHILD_OF"), " ", target);
  });
  const logs = (node.span.logs || []).map((log) => {
    const name = (log.fields || []).find((f) => f.key === "event");
    return h("li", { class: "log" },
      h("div", { class: "log-head" }, h("span", { class: "log-time" }, `+${fmtDuration(log.timestamp - t0)}`),
        " ", name ? String(name.value) : "log"),
      kvTable((log.fields || []).filter((f) => f !== name)));
  });
  const warnings = node.span.warnings || [];
  return h(
    "div", { class: "span-detail", "data-span-id": node.id, role: "region", "aria-label": `Details of ${node.operation}` },
    node.orphan ? h("p", { class: "orphan-callout", role: "note" }, "⚠ ", ORPHAN_HELP) : null,
    h("a", {
      class: "span-link", href: `/trace/${encodeURIComponent(model.traceID)}?span=${encodeURIComponent(node.id)}`,
      "data-nav": "", title: "A link that opens this trace at this span",
    }, "Link to this span"),
    h("dl", { class: "facts" }, facts.filter(Boolean).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
    section("Attributes", (node.span.tags || []).length, kvTable(node.span.tags || [], "attributes", node.service)),
    section("Events", logs.length, logs.length ? h("ul", { class: "logs" }, logs) : h("p", { class: "none" }, "none")),
    section("Resource", (node.process.tags || []).length + 1,
      kvTable([{ key: "service.name", value: node.service }, ...(node.process.tags || [])], "resource")),
    section("References", refs.length, refs.length ? h("ul", { class: "refs" }, refs) : h("p", { class: "none" }, "none")),
    warnings.length ? section("Warnings", warnings.length, h("ul", {}, warnings.map((w) => h("li", {}, w)))) : null,
  );
}

function downloadLinks(traceID) {
  return h("span", { class: "downloads" },
    h("a", { class: "button", id: "download-otlp", href: api.exportUrl(traceID, "otlp"), download: `trace-${traceID}.otlp.json` },
      "⤓ OTLP/JSON"),
    h("a", { class: "button", id: "download-jaeger", href: api.exportUrl(traceID, "jaeger"), download: `trace-${traceID}.jaeger.json` },
      "⤓ Jaeger JSON"));
}

function header(model, onService) {
  const root = model.rootSpan;
  const request = root ? httpRequest(root.span) : { method: "", path: "" };
  const title = root
    ? [h("span", { class: "trace-name" }, swatch(root.service), h("span", { class: "trace-service" }, root.service), ": ",
      h("span", { class: "trace-operation" }, root.operation)),
    request.method || request.path
      ? h("span", { class: "result-request", id: "trace-request" },
        request.method ? h("span", { class: "method" }, request.method) : null,
        request.path ? h("span", { class: "path" }, request.path) : null)
      : null]
    : ["empty trace"];
  const stat = (label, value, id) => h("div", { class: "stat" }, h("dt", {}, label), h("dd", { id }, value));
  return h("section", { class: "trace-header" },
    h("h1", { id: "trace-title", class: model.errorCount ? "has-errors" : undefined },
      model.errorCount ? h("span", { class: "error-icon", title: "this trace has errors", "aria-label": "has errors" }, "!") : null,
      title, h("code", { class: "trace-id", id: "trace-id" }, model.traceID)),
    h("dl", { class: "stats" },
      stat("Start", fmtTime(model.start), "stat-start"),
      stat("Duration", fmtDuration(model.duration), "stat-duration"),
      stat("Services", String(model.services.length), "stat-services"),
      stat("Depth", String(model.depth), "stat-depth"),
      stat("Spans", String(model.nodes.length), "stat-spans"),
      stat("Errors", String(model.errorCount), "stat-errors")),
    h("ul", { class: "chips" }, model.services.map((svc) => h("li", {},
      h("button", { type: "button", class: "chip", title: `Find ${svc.name}'s spans`, onclick: () => onService(svc.name) },
        swatch(svc.name), svc.name, h("span", { class: "count" }, String(svc.count)))))),
    model.orphans.length
      ? h("p", { class: "banner warn", id: "orphan-banner", role: "note" },
        `⚠ ${model.orphans.length} span${model.orphans.length === 1 ? " points" : "s point"} at a parent that is not in this trace` +
          (model.hasRoot ? "" : " (the root span is missing too)") + ". ",
        h("span", { class: "hint", title: ORPHAN_HELP, tabindex: "0" }, "Why?"))
      : null,
    model.warnings.map((w) => h("p", { class: "banner" }, w)),
  );
}

function timeRuler(model) {
  const marks = ticks(model.duration, 4);
  return h("div", { class: "ruler", "aria-hidden": "true" }, marks.map((v) => {
    const tick = h("span", { class: "tick" }, fmtDuration(v));
    tick.style.left = `${model.duration ? (100 * v) / model.duration : 0}%`;
    return tick;
  }));
}

/**
 * Render the trace page for `traceID` into `root`. `q` may name a span to open (`span=<id>`) and
 * a find-in-trace text (`uiFind=`, Jaeger UI's parameter).
 */
export async function renderTrace(root, traceID, q = new URLSearchParams()) {
  document.title = `Trace ${traceID.slice(0, 7)} · meshtrace`;
  mount(root, h("p", { class: "loading" }, "Loading trace…"));
  let model;
  try {
    model = buildTrace(await api.trace(traceID));
  } catch (err) {
    mount(root, h("p", { class: "banner error", role: "alert", id: "trace-error" }, err.message));
    return;
  }
  const root0 = model.rootSpan;
  if (root0) document.title = `${root0.service}: ${root0.operation} · meshtrace`;

  const state = {
    view: "timeline",
    collapsed: new Set(),
    open: new Set(),
    selected: null,
    critical: true,
    hits: new Set(),
  };
  const critical = criticalPath(model);
  const criticalNodes = new Set(critical.map((seg) => model.byId.get(seg.id)));
  const pct = (us) => `${model.duration ? (100 * (us - model.start)) / model.duration : 0}%`;
  const width = (us) => `${model.duration ? Math.max((100 * us) / model.duration, 0.2) : 100}%`;
  const body = h("section", { class: "trace-body" });
  const savedWidth = Number(localStorage.getItem(NAME_WIDTH));
  if (savedWidth > 0) body.style.setProperty("--name-col", `${savedWidth}px`);
  const rowsByNode = new Map();
  const nodeByRow = new WeakMap();
  const detailsByNode = new Map();

  const matchCount = h("span", { class: "match-count", id: "match-count", "aria-live": "polite" });
  const find = h("input", {
    id: "find", type: "search", placeholder: "Find in trace  ( / )", autocomplete: "off", spellcheck: "false",
    "aria-label": "Find in trace",
  });
  const VIEWS = { timeline: "Timeline", flame: "Flame graph", stats: "Statistics" };
  const viewButtons = Object.keys(VIEWS).map((v) => h("button", {
    type: "button", id: `view-${v}`, class: "seg", "aria-pressed": String(state.view === v),
    onclick: () => setView(v),
  }, VIEWS[v]));
  function setView(v) {
    state.view = v;
    for (const b of viewButtons) b.setAttribute("aria-pressed", String(b.id === `view-${v}`));
    draw();
  }
  const criticalButton = h("button", {
    type: "button", id: "critical", "aria-pressed": "true",
    title: "Highlight the chain of spans that determined the trace's latency",
    onclick: () => {
      state.critical = !state.critical;
      criticalButton.setAttribute("aria-pressed", String(state.critical));
      draw();
    },
  }, "Critical path");
  const expandAll = h("button", { type: "button", id: "expand-all", onclick: () => { state.collapsed.clear(); draw(); } },
    "Expand all");
  const collapseAll = h("button", {
    type: "button", id: "collapse-all",
    onclick: () => {
      for (const n of model.nodes) if (n.children.length && n.depth >= 1) state.collapsed.add(n.id);
      draw();
    },
  }, "Collapse all");
  const toolbar = h("div", { class: "toolbar", role: "toolbar", "aria-label": "Trace view" },
    h("span", { class: "segmented" }, viewButtons), criticalButton, expandAll, collapseAll,
    h("span", { class: "find" }, find, matchCount), downloadLinks(model.traceID));

  let hitIndex = -1;
  const applyFind = () => {
    state.hits = findSpans(model, find.value);
    matchCount.textContent = find.value.trim() ? `${state.hits.size} match${state.hits.size === 1 ? "" : "es"}` : "";
    for (const [node, el] of rowsByNode) el.classList.toggle("match", state.hits.has(node));
    body.classList.toggle("finding", Boolean(find.value.trim()));
    hitIndex = -1;
  };
  find.addEventListener("input", applyFind);
  find.addEventListener("keydown", (e) => {
    if (e.key === "Escape") {
      find.value = "";
      applyFind();
    } else if (e.key === "Enter" && state.hits.size) {
      e.preventDefault();
      const ordered = model.nodes.filter((n) => state.hits.has(n));
      hitIndex = (hitIndex + 1) % ordered.length;
      reveal(ordered[hitIndex], false);
      const el = rowsByNode.get(ordered[hitIndex]);
      if (el) el.scrollIntoView({ block: "center" });
    }
  });

  /** Expand the ancestors of `node`, scroll to it and (optionally) open its details and focus it. */
  function reveal(node, openDetail = true) {
    let hidden = false;
    for (let p = node.parent; p; p = p.parent) hidden = state.collapsed.delete(p.id) || hidden;
    if (state.view !== "timeline") {
      if (openDetail) state.selected = node;
      draw();
      return;
    }
    if (hidden) draw();
    const el = rowsByNode.get(node);
    if (!el) return;
    if (openDetail && !state.open.has(node)) toggleDetail(node);
    el.scrollIntoView({ block: "nearest" });
  }
  const actions = { reveal };

  function waterfallRow(node, criticalByNode) {
    const hasKids = node.children.length > 0;
    const collapsed = state.collapsed.has(node.id);
    const toggle = hasKids
      ? h("button", { type: "button", class: "twisty", tabindex: "-1", "aria-label": collapsed ? "Expand" : "Collapse" },
        collapsed ? "▸" : "▾")
      : h("span", { class: "twisty-space" });
    const name = h("div", { class: "span-name" }, toggle,
      node.error ? h("span", { class: "error-icon", title: "error" }, "!") : null,
      kindMarker(node.kind), swatch(node.service),
      h("span", { class: "svc" }, node.service), h("span", { class: "op" }, node.operation),
      // An app's pod tells its replicas apart; a proxy's (from its node id) is in the details,
      // so the long route names of sidecar rows keep their room.
      node.appPod ? h("span", { class: "pod", title: `pod ${node.appPod}` }, node.appPod) : null,
      collapsed ? h("span", { class: "hidden-count" }, `+${countDescendants(node)}`) : null,
      node.orphan
        ? h("span", { class: "orphan-marker", title: ORPHAN_HELP, "aria-label": "missing parent" }, "⚠ missing parent")
        : null);
    name.style.paddingLeft = `${0.25 + node.depth * 0.8}rem`;
    const bar = h("div", { class: "bar" });
    bar.style.left = pct(node.start);
    bar.style.width = width(node.duration);
    bar.style.backgroundColor = serviceColor(node.service); // not `background`: error stripes are an image
    const label = h("span", { class: "bar-label" }, fmtDuration(node.duration));
    const startFrac = model.duration ? (node.start - model.start) / model.duration : 0;
    if (startFrac > 0.7) {
      // Late spans carry their label on the left of the bar, inside the track.
      label.style.right = `${100 - startFrac * 100}%`;
    } else {
      label.style.left = `calc(${pct(node.start)} + ${width(node.duration)} + 4px)`;
    }
    const track = h("div", { class: "track" }, bar, label);
    for (const log of node.span.logs || []) {
      const tick = h("div", { class: "log-tick" });
      tick.style.left = pct(log.timestamp);
      track.append(tick);
    }
    for (const seg of criticalByNode.get(node) || []) {
      const mark = h("div", { class: "critical-seg" });
      mark.style.left = pct(seg.start);
      mark.style.width = width(seg.end - seg.start);
      track.append(mark);
    }
    const row = h("div", {
      class: ["span-row", node.error && "is-error", node.orphan && "is-orphan",
        state.critical && criticalNodes.has(node) && "on-critical", state.hits.has(node) && "match",
        state.open.has(node) && "open"],
      role: "treeitem", tabindex: "-1", "aria-level": String(node.depth + 1),
      "aria-expanded": hasKids ? String(!collapsed) : undefined,
      "aria-selected": String(state.selected === node),
      "data-span-id": node.id, "data-service": node.service,
      title: `${node.service}: ${node.operation}${node.kind ? ` (${node.kind})` : ""}` +
        `${node.pod ? ` in pod ${node.pod}` : ""} — ${fmtDuration(node.duration)}${node.error ? " — error" : ""}`,
    }, name, track);
    rowsByNode.set(node, row);
    nodeByRow.set(row, node);
    return row;
  }

  /** Open or close a span's details in place: no redraw, so it stays fast on big traces. */
  function toggleDetail(node) {
    state.selected = node;
    const row = rowsByNode.get(node);
    if (state.open.has(node)) {
      state.open.delete(node);
      detailsByNode.get(node)?.remove();
      detailsByNode.delete(node);
    } else {
      state.open.add(node);
      const detail = spanDetail(node, model, actions);
      detailsByNode.set(node, detail);
      row.after(detail);
    }
    row.classList.toggle("open", state.open.has(node));
    for (const el of rowsByNode.values()) {
      el.setAttribute("aria-selected", "false");
      el.tabIndex = -1;
    }
    row.setAttribute("aria-selected", "true");
    row.tabIndex = 0;
    row.focus();
  }

  function toggleCollapsed(node) {
    if (state.collapsed.has(node.id)) state.collapsed.delete(node.id);
    else state.collapsed.add(node.id);
    state.selected = node;
    draw();
    rowsByNode.get(node)?.focus();
  }

  function drawWaterfall() {
    const criticalByNode = new Map();
    if (state.critical) {
      for (const seg of critical) {
        const node = model.byId.get(seg.id);
        if (!criticalByNode.has(node)) criticalByNode.set(node, []);
        criticalByNode.get(node).push(seg);
      }
    }
    const tree = h("div", { class: "waterfall", id: "waterfall", role: "tree", "aria-label": "Spans" });
    const nodes = visibleNodes(model, state.collapsed);
    const rows = document.createDocumentFragment();
    for (const node of nodes) {
      rows.append(waterfallRow(node, criticalByNode));
      if (state.open.has(node)) {
        const detail = spanDetail(node, model, actions);
        detailsByNode.set(node, detail);
        rows.append(detail);
      }
    }
    tree.append(rows);
    const focusRow = rowsByNode.get(state.selected) || rowsByNode.get(nodes[0]);
    if (focusRow) focusRow.tabIndex = 0; // one tab stop; arrows move inside the tree
    // One listener for all rows (thousands of spans): the row under the event names the span.
    tree.addEventListener("keydown", (e) => treeKeys(e, nodes));
    tree.addEventListener("click", (e) => {
      const row = e.target.closest(".span-row");
      if (!row) return;
      const node = nodeByRow.get(row);
      if (e.target.closest(".twisty")) toggleCollapsed(node);
      else toggleDetail(node);
    });
    return [h("div", { class: "waterfall-head" }, h("div", { class: "span-name" }, "Service: operation", nameResizer(body)),
      h("div", { class: "track" }, timeRuler(model))), tree];
  }

  function treeKeys(e, nodes) {
    const row = e.target.closest(".span-row");
    if (!row) return;
    const node = nodeByRow.get(row);
    const i = nodes.indexOf(node);
    const focus = (n) => {
      if (!n) return;
      state.selected = n;
      for (const el of rowsByNode.values()) el.tabIndex = -1;
      const el = rowsByNode.get(n);
      el.tabIndex = 0;
      el.focus();
    };
    switch (e.key) {
      case "ArrowDown": focus(nodes[i + 1]); break;
      case "ArrowUp": focus(nodes[i - 1]); break;
      case "Home": focus(nodes[0]); break;
      case "End": focus(nodes[nodes.length - 1]); break;
      case "ArrowRight":
        if (state.collapsed.has(node.id)) toggleCollapsed(node);
        else focus(node.children[0]);
        break;
      case "ArrowLeft":
        if (node.children.length && !state.collapsed.has(node.id)) toggleCollapsed(node);
        else focus(node.parent);
        break;
      case "Enter":
      case " ":
        toggleDetail(node);
        break;
      default:
        return;
    }
    e.preventDefault();
  }

  let flameRows = null; // the layout depends only on the trace: computed once

  /** Select a flame-graph box: move the highlight and swap the details, without a redraw. */
  function selectFlame(node, detailSlot) {
    rowsByNode.get(state.selected)?.classList.remove("selected");
    state.selected = node;
    rowsByNode.get(node).classList.add("selected");
    detailSlot.replaceWith(spanDetail(node, model, actions));
  }

  function drawFlame() {
    flameRows = flameRows || flameLayout(model);
    const height = Math.max(...flameRows.values(), 0) + 1;
    const graph = h("div", { class: "flame", id: "flame", role: "group", "aria-label": "Flame graph" });
    graph.style.height = `${height * 1.6}rem`;
    const wrap = h("div", { class: "flame-wrap" }, timeRuler(model), graph);
    const detail = () => wrap.nextElementSibling;
    for (const node of model.nodes) {
      const box = h("div", {
        class: ["flame-box", node.error && "is-error", node.orphan && "is-orphan",
          state.critical && criticalNodes.has(node) && "on-critical", state.hits.has(node) && "match",
          state.selected === node && "selected"],
        tabindex: "0", role: "button", "data-span-id": node.id,
        title: `${node.service}: ${node.operation} — ${fmtDuration(node.duration)}` +
          (node.orphan ? `\n\n${ORPHAN_HELP}` : ""),
      }, node.orphan ? "⚠ " : "", node.operation, h("span", { class: "flame-svc" }, ` ${node.service}`));
      box.style.left = pct(node.start);
      box.style.width = width(node.duration);
      box.style.top = `${flameRows.get(node) * 1.6}rem`;
      box.style.setProperty("--c", serviceColor(node.service));
      rowsByNode.set(node, box);
      nodeByRow.set(box, node);
      graph.append(box);
    }
    // One listener pair for every box, as in the waterfall.
    graph.addEventListener("click", (e) => {
      const box = e.target.closest(".flame-box");
      if (box) selectFlame(nodeByRow.get(box), detail());
    });
    graph.addEventListener("keydown", (e) => {
      const box = e.target.closest(".flame-box");
      if (box && (e.key === "Enter" || e.key === " ")) {
        e.preventDefault();
        selectFlame(nodeByRow.get(box), detail());
      }
    });
    return [wrap, state.selected ? spanDetail(state.selected, model, actions)
      : h("p", { class: "empty" }, "Click a box to see the span's details.")];
  }

  function draw() {
    rowsByNode.clear();
    detailsByNode.clear();
    const showInTimeline = (name) => {
      setView("timeline");
      findService(name);
    };
    const views = { timeline: drawWaterfall, flame: drawFlame, stats: () => statsTable(model, showInTimeline) };
    mount(body, views[state.view]());
    body.classList.toggle("finding", Boolean(find.value.trim()));
  }

  const findService = (name) => {
    find.value = name;
    applyFind();
    find.focus();
  };
  mount(root, header(model, findService), toolbar, body);
  draw();
  if (q.get("uiFind")) {
    find.value = q.get("uiFind");
    applyFind();
  }
  const linked = q.get("span") && model.byId.get(q.get("span"));
  if (linked) reveal(linked);
  return { focusFind: () => find.focus() };
}

const STAT_COLUMNS = [
  ["service", "Service", (r) => r.service],
  ["operation", "Operation", (r) => r.operation],
  ["count", "Spans", (r) => String(r.count)],
  ["errors", "Errors", (r) => String(r.errors)],
  ["total", "Total", (r) => fmtDuration(r.total)],
  ["mean", "Mean", (r) => fmtDuration(r.mean)],
  ["max", "Max", (r) => fmtDuration(r.max)],
  ["self", "Self time", (r) => fmtDuration(r.self)],
];

/** The statistics view: one row per service and operation; headers sort, a service finds its spans. */
function statsTable(model, onService) {
  const rows = operationStats(model);
  const body = h("tbody");
  let sortKey = "self";
  let descending = true;
  const headers = STAT_COLUMNS.map(([key, label]) => h("th", { scope: "col", class: !["service", "operation"].includes(key) && "num" },
    h("button", { type: "button", class: "sort", "data-key": key, onclick: () => sortBy(key) }, label)));
  const fill = () => {
    const sign = descending ? -1 : 1;
    const sorted = [...rows].sort((a, b) =>
      sign * (typeof a[sortKey] === "string" ? a[sortKey].localeCompare(b[sortKey]) : a[sortKey] - b[sortKey]));
    mount(body, sorted.map((r) => h("tr", {}, STAT_COLUMNS.map(([key, , text]) => {
      if (key !== "service") return h("td", { class: [key !== "operation" && "num", key === "errors" && r.errors && "bad"] }, text(r));
      return h("td", {}, h("button", { type: "button", class: "linkish", onclick: () => onService(r.service) }, swatch(r.service), r.service));
    }))));
    headers.forEach((th, i) => th.setAttribute("aria-sort",
      STAT_COLUMNS[i][0] === sortKey ? (descending ? "descending" : "ascending") : "none"));
  };
  function sortBy(key) {
    descending = key === sortKey ? !descending : !["service", "operation"].includes(key);
    sortKey = key;
    fill();
  }
  fill();
  return h("table", { class: "stats-table", id: "stats-table" }, h("thead", {}, h("tr", {}, headers)), body);
}

function countDescendants(node) {
  let n = 0;
  const walk = (x) => {
    for (const c of x.children) {
      n += 1;
      walk(c);
    }
  };
  walk(node);
  return n;
}
