// @ts-check
// The trace page's timeline: the span tree as rows (indent by depth, collapse/expand, kind, pod,
// bars on the trace's time axis with event ticks and the critical path), the resizable name
// column, keyboard moves inside the tree, and span details opened in place under a row.

import { h } from "./dom.js";
import { fmtDuration, serviceColor, visibleNodes } from "./model.js";
import { ORPHAN_HELP, spanDetail } from "./span-detail.js";
import { axisLeft, axisWidth, rowOf, swatch, timeRuler } from "./trace-state.js";

/** @typedef {import("./model.js").SpanNode} SpanNode */
/** @typedef {import("./model.js").CriticalSegment} CriticalSegment */
/** @typedef {import("./trace-state.js").TraceState} TraceState */
/** @typedef {import("./trace-state.js").TraceActions} TraceActions */

/** @type {Record<string, [string, string]>} */
const KINDS = {
  server: ["server", "Server span: this service handled a request"],
  client: ["client", "Client span: this service called another"],
  producer: ["producer", "Producer span: this service sent a message"],
  consumer: ["consumer", "Consumer span: this service received a message"],
  internal: ["internal", "Internal span: work inside this service"],
};

/** The span kind as a small marker (Jaeger keeps it in the span.kind tag); nothing when unknown. @param {string} kind */
function kindMarker(kind) {
  const known = KINDS[kind];
  if (!known) return null;
  return h("span", { class: ["kind", `kind-${kind}`], title: known[1], "data-kind": kind }, known[0]);
}

export const NAME_WIDTH = "meshtrace.nameColumn";
const MIN_NAME_WIDTH = 160;

/**
 * The drag handle on the right edge of the name column: dragging (or ←/→ when focused) sets the
 * column's width for every row at once (a CSS variable on the trace body); the width is remembered.
 * @param {HTMLElement} body
 */
function nameResizer(body) {
  /** @param {number} px */
  const clamp = (px) => Math.round(Math.min(Math.max(px, MIN_NAME_WIDTH), body.clientWidth - 200));
  /** @param {number} px */
  const set = (px) => {
    const width = clamp(px);
    body.style.setProperty("--name-col", `${width}px`);
    handle.setAttribute("aria-valuenow", String(width));
    localStorage.setItem(NAME_WIDTH, String(width));
  };
  const current = () => body.querySelector(".waterfall-head .span-name")?.getBoundingClientRect().width ?? MIN_NAME_WIDTH;
  const handle = h("div", {
    class: "col-resizer", id: "name-resizer", role: "separator", tabindex: "0", "aria-orientation": "vertical",
    "aria-label": "Resize the name column (drag, or ← →)", title: "Drag to resize the name column",
    onpointerdown: (/** @type {PointerEvent} */ e) => {
      e.preventDefault();
      const startX = e.clientX;
      const startWidth = current();
      handle.setPointerCapture(e.pointerId);
      const move = (/** @type {PointerEvent} */ ev) => set(startWidth + ev.clientX - startX);
      const up = () => {
        handle.removeEventListener("pointermove", move);
        handle.removeEventListener("pointerup", up);
        handle.classList.remove("dragging");
      };
      handle.classList.add("dragging");
      handle.addEventListener("pointermove", move);
      handle.addEventListener("pointerup", up);
    },
    onkeydown: (/** @type {KeyboardEvent} */ e) => {
      if (e.key !== "ArrowLeft" && e.key !== "ArrowRight") return;
      e.preventDefault();
      set(current() + (e.key === "ArrowLeft" ? -24 : 24));
    },
  });
  return handle;
}

/** Apply the remembered name column width, if any. @param {HTMLElement} body */
export function restoreNameWidth(body) {
  const saved = Number(localStorage.getItem(NAME_WIDTH));
  if (saved > 0) body.style.setProperty("--name-col", `${saved}px`);
}

/** @param {SpanNode} node */
function countDescendants(node) {
  let n = 0;
  /** @param {SpanNode} x */
  const walk = (x) => {
    for (const c of x.children) {
      n += 1;
      walk(c);
    }
  };
  walk(node);
  return n;
}

/** The name cell: twisty, error mark, kind, service, operation, app pod, hidden count, orphan mark. */
function nameCell(/** @type {SpanNode} */ node, /** @type {boolean} */ collapsed) {
  const toggle = node.children.length
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
  return name;
}

/**
 * The track cell: the span's bar and duration label, a tick per event, its critical-path segments.
 * @param {TraceState} state @param {SpanNode} node @param {CriticalSegment[]} segments
 */
function trackCell(state, node, segments) {
  const { model } = state;
  const bar = h("div", { class: "bar" });
  bar.style.left = axisLeft(model, node.start);
  bar.style.width = axisWidth(model, node.duration);
  bar.style.backgroundColor = serviceColor(node.service); // not `background`: error stripes are an image
  const label = h("span", { class: "bar-label" }, fmtDuration(node.duration));
  const startFrac = model.duration ? (node.start - model.start) / model.duration : 0;
  if (startFrac > 0.7) {
    // Late spans carry their label on the left of the bar, inside the track.
    label.style.right = `${100 - startFrac * 100}%`;
  } else {
    label.style.left = `calc(${axisLeft(model, node.start)} + ${axisWidth(model, node.duration)} + 4px)`;
  }
  const track = h("div", { class: "track" }, bar, label);
  for (const log of node.span.logs || []) {
    const tick = h("div", { class: "log-tick" });
    tick.style.left = axisLeft(model, log.timestamp);
    track.append(tick);
  }
  for (const seg of segments) {
    const mark = h("div", { class: "critical-seg" });
    mark.style.left = axisLeft(model, seg.start);
    mark.style.width = axisWidth(model, seg.end - seg.start);
    track.append(mark);
  }
  return track;
}

/**
 * One span's row, registered in the state's row maps.
 * @param {TraceState} state @param {SpanNode} node @param {CriticalSegment[]} segments
 */
function waterfallRow(state, node, segments) {
  const hasKids = node.children.length > 0;
  const collapsed = state.collapsed.has(node.id);
  const row = h("div", {
    class: ["span-row", node.error && "is-error", node.orphan && "is-orphan",
      state.critical && state.criticalNodes.has(node) && "on-critical", state.hits.has(node) && "match",
      state.open.has(node) && "open"],
    role: "treeitem", tabindex: "-1", "aria-level": String(node.depth + 1),
    "aria-expanded": hasKids ? String(!collapsed) : undefined,
    "aria-selected": String(state.selected === node),
    "data-span-id": node.id, "data-service": node.service,
    title: `${node.service}: ${node.operation}${node.kind ? ` (${node.kind})` : ""}` +
      `${node.pod ? ` in pod ${node.pod}` : ""} — ${fmtDuration(node.duration)}${node.error ? " — error" : ""}`,
  }, nameCell(node, collapsed), trackCell(state, node, segments));
  state.rowsByNode.set(node, row);
  state.nodeByRow.set(row, node);
  return row;
}

/**
 * Make `node`'s row the tree's one tab stop and focus it.
 * @param {TraceState} state @param {SpanNode} node
 */
function focusRow(state, node) {
  state.selected = node;
  for (const el of state.rowsByNode.values()) el.tabIndex = -1;
  const el = state.rowsByNode.get(node);
  if (!el) return;
  el.tabIndex = 0;
  el.focus();
}

/**
 * Open or close a span's details in place: no redraw, so it stays fast on big traces.
 * @param {TraceState} state @param {TraceActions} actions @param {SpanNode} node
 */
export function toggleDetail(state, actions, node) {
  const row = state.rowsByNode.get(node);
  if (!row) return; // not drawn: its details cannot open under it
  if (state.open.has(node)) {
    state.open.delete(node);
    state.detailsByNode.get(node)?.remove();
    state.detailsByNode.delete(node);
  } else {
    state.open.add(node);
    const detail = spanDetail(node, state.model, actions);
    state.detailsByNode.set(node, detail);
    row.after(detail);
  }
  row.classList.toggle("open", state.open.has(node));
  for (const el of state.rowsByNode.values()) el.setAttribute("aria-selected", "false");
  row.setAttribute("aria-selected", "true");
  focusRow(state, node);
}

/** @param {TraceState} state @param {TraceActions} actions @param {SpanNode} node */
function toggleCollapsed(state, actions, node) {
  if (state.collapsed.has(node.id)) state.collapsed.delete(node.id);
  else state.collapsed.add(node.id);
  state.selected = node;
  actions.draw();
  state.rowsByNode.get(node)?.focus();
}

/**
 * The tree's keys: arrows, Home and End move; → and ← expand and collapse; Enter and Space open details.
 * @param {TraceState} state @param {TraceActions} actions @param {KeyboardEvent} e @param {SpanNode[]} nodes
 */
function treeKeys(state, actions, e, nodes) {
  const hit = rowOf(state, e, ".span-row");
  if (!hit) return;
  const node = hit[1];
  const i = nodes.indexOf(node);
  /** @param {SpanNode | null | undefined} n */
  const focus = (n) => n && focusRow(state, n);
  switch (e.key) {
    case "ArrowDown": focus(nodes[i + 1]); break;
    case "ArrowUp": focus(nodes[i - 1]); break;
    case "Home": focus(nodes[0]); break;
    case "End": focus(nodes[nodes.length - 1]); break;
    case "ArrowRight":
      if (state.collapsed.has(node.id)) toggleCollapsed(state, actions, node);
      else focus(node.children[0]);
      break;
    case "ArrowLeft":
      if (node.children.length && !state.collapsed.has(node.id)) toggleCollapsed(state, actions, node);
      else focus(node.parent);
      break;
    case "Enter":
    case " ":
      toggleDetail(state, actions, node);
      break;
    default:
      return;
  }
  e.preventDefault();
}

/** The critical path's segments by span (none when it is switched off). @param {TraceState} state */
function criticalByNode(state) {
  /** @type {Map<SpanNode, CriticalSegment[]>} */
  const out = new Map();
  if (!state.critical) return out;
  for (const seg of state.criticalSegments) {
    const node = state.model.byId.get(seg.id);
    if (!node) continue;
    const segments = out.get(node);
    if (segments) segments.push(seg);
    else out.set(node, [seg]);
  }
  return out;
}

/**
 * The waterfall: its header (name column with the resize handle, ruler) and the span tree.
 * @param {TraceState} state @param {TraceActions} actions
 */
export function drawWaterfall(state, actions) {
  const segments = criticalByNode(state);
  const tree = h("div", { class: "waterfall", id: "waterfall", role: "tree", "aria-label": "Spans" });
  const nodes = visibleNodes(state.model, state.collapsed);
  const rows = document.createDocumentFragment();
  for (const node of nodes) {
    rows.append(waterfallRow(state, node, segments.get(node) || []));
    if (state.open.has(node)) {
      const detail = spanDetail(node, state.model, actions);
      state.detailsByNode.set(node, detail);
      rows.append(detail);
    }
  }
  tree.append(rows);
  const tabStop = (state.selected && state.rowsByNode.get(state.selected)) || state.rowsByNode.get(nodes[0]);
  if (tabStop) tabStop.tabIndex = 0; // one tab stop; arrows move inside the tree
  // One listener for all rows (thousands of spans): the row under the event names the span.
  tree.addEventListener("keydown", (e) => treeKeys(state, actions, e, nodes));
  tree.addEventListener("click", (e) => {
    const hit = rowOf(state, e, ".span-row");
    if (!hit) return;
    if (/** @type {Element} */ (e.target).closest(".twisty")) toggleCollapsed(state, actions, hit[1]);
    else toggleDetail(state, actions, hit[1]);
  });
  return [h("div", { class: "waterfall-head" }, h("div", { class: "span-name" }, "Service: operation", nameResizer(state.body)),
    h("div", { class: "track" }, timeRuler(state.model))), tree];
}
