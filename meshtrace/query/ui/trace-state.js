// @ts-check
// The trace page's shared state, one explicit object handed to the waterfall, the flame graph and
// the toolbar: what is chosen (view, critical path, find hits, collapsed subtrees, open details,
// the selected span) and the element drawn for each span. Also the drawing helpers they share:
// the trace's time axis, the service swatch and the ruler.

import { h } from "./dom.js";
import { criticalPath, fmtDuration, serviceColor, ticks } from "./model.js";

/** @typedef {import("./model.js").TraceModel} TraceModel */
/** @typedef {import("./model.js").SpanNode} SpanNode */
/** @typedef {import("./model.js").CriticalSegment} CriticalSegment */
/** @typedef {"timeline" | "flame" | "stats"} ViewName */

/**
 * @typedef {object} TraceState
 * @property {TraceModel} model
 * @property {HTMLElement} body  the section the current view is drawn into
 * @property {ViewName} view
 * @property {Set<string>} collapsed  ids of the spans whose subtree the waterfall hides
 * @property {Set<SpanNode>} open  spans whose details are open in the waterfall
 * @property {SpanNode | null} selected
 * @property {boolean} critical  whether the critical path is drawn
 * @property {CriticalSegment[]} criticalSegments
 * @property {Set<SpanNode>} criticalNodes  the spans with a segment on the critical path
 * @property {string} query  the find-in-trace text
 * @property {Set<SpanNode>} hits  the spans it matches
 * @property {number} hitCursor  the match Enter last jumped to (-1: none yet)
 * @property {Map<SpanNode, HTMLElement>} rowsByNode  the drawn row (waterfall) or box (flame graph)
 * @property {WeakMap<Element, SpanNode>} nodeByRow  the inverse, for the delegated listeners
 * @property {Map<SpanNode, HTMLElement>} detailsByNode  the open details in the waterfall
 * @property {Map<SpanNode, number> | null} flameRows  the flame layout: it depends only on the trace
 */

/**
 * What the views ask of the page: redraw the current view, or show a span (expand its ancestors,
 * scroll to it and, with `openDetail`, open its details).
 * @typedef {object} TraceActions
 * @property {() => void} draw
 * @property {(node: SpanNode, openDetail?: boolean) => void} reveal
 */

/**
 * The state of a freshly opened trace: the timeline, critical path on, nothing collapsed or open.
 * @param {TraceModel} model
 * @param {HTMLElement} body
 * @returns {TraceState}
 */
export function createTraceState(model, body) {
  const criticalSegments = criticalPath(model);
  const criticalNodes = new Set();
  for (const seg of criticalSegments) {
    const node = model.byId.get(seg.id);
    if (node) criticalNodes.add(node);
  }
  return {
    model,
    body,
    view: "timeline",
    collapsed: new Set(),
    open: new Set(),
    selected: null,
    critical: true,
    criticalSegments,
    criticalNodes,
    query: "",
    hits: new Set(),
    hitCursor: -1,
    rowsByNode: new Map(),
    nodeByRow: new WeakMap(),
    detailsByNode: new Map(),
    flameRows: null,
  };
}

/**
 * Where time `us` sits on the trace's axis, as a CSS percentage.
 * @param {TraceModel} model @param {number} us
 */
export function axisLeft(model, us) {
  return `${model.duration ? (100 * (us - model.start)) / model.duration : 0}%`;
}

/**
 * The width of a duration on the trace's axis, as a CSS percentage (a sliver at least, so the
 * shortest span stays visible).
 * @param {TraceModel} model @param {number} us
 */
export function axisWidth(model, us) {
  return `${model.duration ? Math.max((100 * us) / model.duration, 0.2) : 100}%`;
}

/** A service's colour dot. @param {string} service */
export function swatch(service) {
  const el = h("span", { class: "swatch" });
  el.style.background = serviceColor(service);
  return el;
}

/** The time ruler over the waterfall and the flame graph. @param {TraceModel} model */
export function timeRuler(model) {
  const marks = ticks(model.duration, 4);
  return h("div", { class: "ruler", "aria-hidden": "true" }, marks.map((v) => {
    const tick = h("span", { class: "tick" }, fmtDuration(v));
    tick.style.left = `${model.duration ? (100 * v) / model.duration : 0}%`;
    return tick;
  }));
}

/**
 * The row (or flame box) under an event: delegated listeners name the span this way.
 * @param {TraceState} state @param {Event} event @param {string} selector
 * @returns {[HTMLElement, SpanNode] | null}
 */
export function rowOf(state, event, selector) {
  const el = /** @type {HTMLElement | null} */ (/** @type {Element} */ (event.target).closest(selector));
  const node = el && state.nodeByRow.get(el);
  return el && node ? [el, node] : null;
}
