// @ts-check
// The trace page's flame graph: every span as a box on the trace's time axis (depth down, parallel
// siblings on rows of their own, from model.js's flameLayout), the selected span's details below.

import { h } from "./dom.js";
import { flameLayout, fmtDuration, serviceColor } from "./model.js";
import { ORPHAN_HELP, spanDetail } from "./span-detail.js";
import { axisLeft, axisWidth, rowOf, timeRuler } from "./trace-state.js";

/** @typedef {import("./model.js").SpanNode} SpanNode */
/** @typedef {import("./trace-state.js").TraceState} TraceState */
/** @typedef {import("./trace-state.js").TraceActions} TraceActions */

/**
 * Select a flame-graph box: move the highlight and swap the details, without a redraw.
 * @param {TraceState} state @param {TraceActions} actions @param {SpanNode} node @param {Element} detailSlot
 */
function selectFlame(state, actions, node, detailSlot) {
  if (state.selected) state.rowsByNode.get(state.selected)?.classList.remove("selected");
  state.selected = node;
  state.rowsByNode.get(node)?.classList.add("selected");
  detailSlot.replaceWith(spanDetail(node, state.model, actions));
}

/**
 * One span's box, registered in the state's row maps.
 * @param {TraceState} state @param {SpanNode} node @param {number} row
 */
function flameBox(state, node, row) {
  const box = h("div", {
    class: ["flame-box", node.error && "is-error", node.orphan && "is-orphan",
      state.critical && state.criticalNodes.has(node) && "on-critical", state.hits.has(node) && "match",
      state.selected === node && "selected"],
    tabindex: "0", role: "button", "data-span-id": node.id,
    title: `${node.service}: ${node.operation} — ${fmtDuration(node.duration)}` +
      (node.orphan ? `\n\n${ORPHAN_HELP}` : ""),
  }, node.orphan ? "⚠ " : "", node.operation, h("span", { class: "flame-svc" }, ` ${node.service}`));
  box.style.left = axisLeft(state.model, node.start);
  box.style.width = axisWidth(state.model, node.duration);
  box.style.top = `${row * 1.6}rem`;
  box.style.setProperty("--c", serviceColor(node.service));
  state.rowsByNode.set(node, box);
  state.nodeByRow.set(box, node);
  return box;
}

/**
 * The flame graph with its ruler, then the selected span's details (or a hint).
 * @param {TraceState} state @param {TraceActions} actions
 */
export function drawFlame(state, actions) {
  const rows = state.flameRows || flameLayout(state.model);
  state.flameRows = rows;
  const height = Math.max(...rows.values(), 0) + 1;
  const graph = h("div", { class: "flame", id: "flame", role: "group", "aria-label": "Flame graph" });
  graph.style.height = `${height * 1.6}rem`;
  const wrap = h("div", { class: "flame-wrap" }, timeRuler(state.model), graph);
  for (const node of state.model.nodes) graph.append(flameBox(state, node, rows.get(node) ?? 0));
  /** @param {Event} e */
  const select = (e) => {
    const hit = rowOf(state, e, ".flame-box");
    const detailSlot = wrap.nextElementSibling;
    if (hit && detailSlot) selectFlame(state, actions, hit[1], detailSlot);
    return Boolean(hit);
  };
  // One listener pair for every box, as in the waterfall.
  graph.addEventListener("click", select);
  graph.addEventListener("keydown", (e) => {
    if ((e.key === "Enter" || e.key === " ") && select(e)) e.preventDefault();
  });
  return [wrap, state.selected ? spanDetail(state.selected, state.model, actions)
    : h("p", { class: "empty" }, "Click a box to see the span's details.")];
}
