// @ts-check
// The trace page: loads the trace, draws its header (the trace's numbers, services, warnings) and
// toolbar, and one of the views in the page body: the waterfall (waterfall.js), the flame graph
// (flame.js) or the statistics (trace-stats.js). The views share one TraceState (trace-state.js)
// and ask the page to redraw or to show a span through TraceActions.

import * as api from "./api.js";
import { h, mount } from "./dom.js";
import { drawFlame } from "./flame.js";
import { buildTrace, fmtDuration, fmtTime, httpRequest } from "./model.js";
import { ORPHAN_HELP } from "./span-detail.js";
import { createTraceState, swatch } from "./trace-state.js";
import { statsTable } from "./trace-stats.js";
import { createToolbar } from "./trace-toolbar.js";
import { drawWaterfall, restoreNameWidth, toggleDetail } from "./waterfall.js";

/** @typedef {import("./model.js").TraceModel} TraceModel */
/** @typedef {import("./model.js").SpanNode} SpanNode */
/** @typedef {import("./trace-state.js").TraceState} TraceState */
/** @typedef {import("./trace-state.js").TraceActions} TraceActions */
/** @typedef {import("./trace-toolbar.js").Toolbar} Toolbar */

/** The root span's name and the request it served. @param {TraceModel} model */
function title(model) {
  const root = model.rootSpan;
  if (!root) return ["empty trace"];
  const request = httpRequest(root.span);
  return [h("span", { class: "trace-name" }, swatch(root.service), h("span", { class: "trace-service" }, root.service), ": ",
    h("span", { class: "trace-operation" }, root.operation)),
  request.method || request.path
    ? h("span", { class: "result-request", id: "trace-request" },
      request.method ? h("span", { class: "method" }, request.method) : null,
      request.path ? h("span", { class: "path" }, request.path) : null)
    : null];
}

/** The banner over a trace whose spans point at parents it does not hold. @param {TraceModel} model */
function orphanBanner(model) {
  const n = model.orphans.length;
  if (!n) return null;
  return h("p", { class: "banner warn", id: "orphan-banner", role: "note" },
    `⚠ ${n} span${n === 1 ? " points" : "s point"} at a parent that is not in this trace` +
      (model.hasRoot ? "" : " (the root span is missing too)") + ". ",
    h("span", { class: "hint", title: ORPHAN_HELP, tabindex: "0" }, "Why?"));
}

/**
 * The header: title, numbers, a chip per service (click: find its spans), warnings.
 * @param {TraceModel} model @param {(service: string) => void} onService
 */
function header(model, onService) {
  /** @param {string} label @param {string} value @param {string} id */
  const stat = (label, value, id) => h("div", { class: "stat" }, h("dt", {}, label), h("dd", { id }, value));
  return h("section", { class: "trace-header" },
    h("h1", { id: "trace-title", class: model.errorCount ? "has-errors" : undefined },
      model.errorCount ? h("span", { class: "error-icon", title: "this trace has errors", "aria-label": "has errors" }, "!") : null,
      title(model), h("code", { class: "trace-id", id: "trace-id" }, model.traceID)),
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
    orphanBanner(model),
    model.warnings.map((w) => h("p", { class: "banner" }, w)),
  );
}

/**
 * Find a service's spans: fill the find box with its name and focus it.
 * @param {Toolbar} toolbar @param {string} service
 */
function findService(toolbar, service) {
  toolbar.find(service);
  toolbar.focusFind();
}

/**
 * Draw the current view into the page body.
 * @param {TraceState} state @param {TraceActions} actions @param {Toolbar} toolbar
 */
function draw(state, actions, toolbar) {
  state.rowsByNode.clear();
  state.detailsByNode.clear();
  /** @param {string} service */
  const showInTimeline = (service) => {
    toolbar.setView("timeline");
    findService(toolbar, service);
  };
  const views = {
    timeline: () => drawWaterfall(state, actions),
    flame: () => drawFlame(state, actions),
    stats: () => statsTable(state.model, showInTimeline),
  };
  mount(state.body, views[state.view]());
  state.body.classList.toggle("finding", Boolean(state.query.trim()));
}

/**
 * Expand the ancestors of `node`, scroll to it and (optionally) open its details and focus it.
 * @param {TraceState} state @param {TraceActions} actions @param {SpanNode} node @param {boolean} openDetail
 */
function reveal(state, actions, node, openDetail) {
  let hidden = false;
  for (let p = node.parent; p; p = p.parent) hidden = state.collapsed.delete(p.id) || hidden;
  if (state.view !== "timeline") {
    if (openDetail) state.selected = node;
    actions.draw();
    return;
  }
  if (hidden) actions.draw();
  const el = state.rowsByNode.get(node);
  if (!el) return;
  if (openDetail && !state.open.has(node)) toggleDetail(state, actions, node);
  el.scrollIntoView({ block: "nearest" });
}

/**
 * Render the trace page for `traceID` into `root`. `q` may name a span to open (`span=<id>`) and
 * a find-in-trace text (`uiFind=`, Jaeger UI's parameter).
 * @param {HTMLElement} root @param {string} traceID @param {URLSearchParams} [q]
 */
export async function renderTrace(root, traceID, q = new URLSearchParams()) {
  document.title = `Trace ${traceID.slice(0, 7)} · meshtrace`;
  mount(root, h("p", { class: "loading" }, "Loading trace…"));
  let model;
  try {
    model = buildTrace(await api.trace(traceID));
  } catch (err) {
    mount(root, h("p", { class: "banner error", role: "alert", id: "trace-error" }, api.errorMessage(err)));
    return;
  }
  if (model.rootSpan) document.title = `${model.rootSpan.service}: ${model.rootSpan.operation} · meshtrace`;
  const body = h("section", { class: "trace-body" });
  restoreNameWidth(body);
  const state = createTraceState(model, body);
  /** @type {TraceActions} */
  const actions = {
    draw: () => draw(state, actions, toolbar),
    reveal: (node, openDetail = true) => reveal(state, actions, node, openDetail),
  };
  const toolbar = createToolbar(state, actions);
  mount(root, header(model, (service) => findService(toolbar, service)), toolbar.element, body);
  actions.draw();
  const uiFind = q.get("uiFind");
  if (uiFind) toolbar.find(uiFind);
  const spanId = q.get("span");
  const linked = spanId && model.byId.get(spanId);
  if (linked) actions.reveal(linked);
  return { focusFind: toolbar.focusFind };
}
