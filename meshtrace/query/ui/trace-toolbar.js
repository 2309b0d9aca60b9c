// @ts-check
// The trace page's toolbar: the view switch (timeline, flame graph, statistics), the critical path
// switch, expand/collapse all, find-in-trace and the downloads.

import * as api from "./api.js";
import { h } from "./dom.js";
import { findSpans } from "./model.js";

/** @typedef {import("./trace-state.js").TraceState} TraceState */
/** @typedef {import("./trace-state.js").TraceActions} TraceActions */
/** @typedef {import("./trace-state.js").ViewName} ViewName */

/**
 * @typedef {object} Toolbar
 * @property {HTMLElement} element
 * @property {(view: ViewName) => void} setView  switch the view and redraw
 * @property {(text: string) => void} find  fill find-in-trace with `text` and highlight the matches
 * @property {() => void} focusFind
 */

/** @type {Record<ViewName, string>} */
const VIEWS = { timeline: "Timeline", flame: "Flame graph", stats: "Statistics" };

/** @param {string} traceID */
function downloadLinks(traceID) {
  return h("span", { class: "downloads" },
    h("a", { class: "button", id: "download-otlp", href: api.exportUrl(traceID, "otlp"), download: `trace-${traceID}.otlp.json` },
      "⤓ OTLP/JSON"),
    h("a", { class: "button", id: "download-jaeger", href: api.exportUrl(traceID, "jaeger"), download: `trace-${traceID}.jaeger.json` },
      "⤓ Jaeger JSON"));
}

/**
 * Highlight the spans matching the find box's text (without a redraw) and count them.
 * @param {TraceState} state @param {string} text @param {HTMLElement} matchCount
 */
function applyFind(state, text, matchCount) {
  state.query = text;
  state.hits = findSpans(state.model, text);
  matchCount.textContent = text.trim() ? `${state.hits.size} match${state.hits.size === 1 ? "" : "es"}` : "";
  for (const [node, el] of state.rowsByNode) el.classList.toggle("match", state.hits.has(node));
  state.body.classList.toggle("finding", Boolean(text.trim()));
  state.hitCursor = -1;
}

/**
 * Show the next match (Enter in the find box), in the order of the span tree.
 * @param {TraceState} state @param {TraceActions} actions
 */
function nextMatch(state, actions) {
  const ordered = state.model.nodes.filter((n) => state.hits.has(n));
  state.hitCursor = (state.hitCursor + 1) % ordered.length;
  const node = ordered[state.hitCursor];
  actions.reveal(node, false);
  state.rowsByNode.get(node)?.scrollIntoView({ block: "center" });
}

/**
 * The find box: typing highlights, Enter jumps to the next match, Escape clears.
 * @param {TraceState} state @param {TraceActions} actions
 */
function findBox(state, actions) {
  const matchCount = h("span", { class: "match-count", id: "match-count", "aria-live": "polite" });
  const input = h("input", {
    id: "find", type: "search", placeholder: "Find in trace  ( / )", autocomplete: "off", spellcheck: "false",
    "aria-label": "Find in trace",
  });
  /** @param {string} text */
  const set = (text) => {
    input.value = text;
    applyFind(state, text, matchCount);
  };
  input.addEventListener("input", () => applyFind(state, input.value, matchCount));
  input.addEventListener("keydown", (e) => {
    if (e.key === "Escape") {
      set("");
    } else if (e.key === "Enter" && state.hits.size) {
      e.preventDefault();
      nextMatch(state, actions);
    }
  });
  return { element: h("span", { class: "find" }, input, matchCount), input, set };
}

/**
 * Buttons that change the state and redraw: critical path, expand all, collapse all.
 * @param {TraceState} state @param {TraceActions} actions
 */
function drawButtons(state, actions) {
  const critical = h("button", {
    type: "button", id: "critical", "aria-pressed": "true",
    title: "Highlight the chain of spans that determined the trace's latency",
    onclick: () => {
      state.critical = !state.critical;
      critical.setAttribute("aria-pressed", String(state.critical));
      actions.draw();
    },
  }, "Critical path");
  const expandAll = () => {
    state.collapsed.clear();
    actions.draw();
  };
  const collapseAll = () => {
    for (const n of state.model.nodes) if (n.children.length && n.depth >= 1) state.collapsed.add(n.id);
    actions.draw();
  };
  return [critical,
    h("button", { type: "button", id: "expand-all", onclick: expandAll }, "Expand all"),
    h("button", { type: "button", id: "collapse-all", onclick: collapseAll }, "Collapse all")];
}

/**
 * The toolbar of a trace page.
 * @param {TraceState} state @param {TraceActions} actions
 * @returns {Toolbar}
 */
export function createToolbar(state, actions) {
  const find = findBox(state, actions);
  const viewNames = /** @type {ViewName[]} */ (Object.keys(VIEWS));
  const viewButtons = viewNames.map((v) => h("button", {
    type: "button", id: `view-${v}`, class: "seg", "aria-pressed": String(state.view === v),
    onclick: () => setView(v),
  }, VIEWS[v]));
  /** @param {ViewName} v */
  function setView(v) {
    state.view = v;
    for (const b of viewButtons) b.setAttribute("aria-pressed", String(b.id === `view-${v}`));
    actions.draw();
  }
  const element = h("div", { class: "toolbar", role: "toolbar", "aria-label": "Trace view" },
    h("span", { class: "segmented" }, viewButtons), drawButtons(state, actions),
    find.element, downloadLinks(state.model.traceID));
  return { element, setView, find: find.set, focusFind: () => find.input.focus() };
}
