// @ts-check
// The service dependency graph (SVG) and the same links as a table.

import * as api from "./api.js";
import { h, mount, s } from "./dom.js";
import { groupWorkloads, layoutDependencies } from "./graph.js";
import { serviceColor } from "./model.js";

/** @typedef {import("./graph.js").DependencyLink} DependencyLink */
/** @typedef {ReturnType<typeof layoutDependencies>["edges"][number]} Edge */
/** @typedef {typeof import("./app.js").navigate} Navigate */

/** @type {[string, number][]} */
const LOOKBACKS = [["1h", 3600e3], ["6h", 6 * 3600e3], ["24h", 24 * 3600e3], ["7d", 7 * 24 * 3600e3]];
const NODE_H = 44;
// Error rates below this are shown amber, not red: one failed call in thousands is not an outage.
const RED_RATE = 0.05;
const NODE_FONT = "600 13px system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif";
const LABEL_FONT = "11px system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif";

/** Text widths in pixels as the SVG will draw them, so nodes and label pills fit their text. */
function measurer() {
  const ctx = document.createElement("canvas").getContext("2d");
  if (!ctx) throw new Error("this browser has no 2D canvas to measure text with");
  return (/** @type {string} */ text, /** @type {string} */ font) => {
    ctx.font = font;
    return Math.ceil(ctx.measureText(text).width);
  };
}

function errorRate(/** @type {DependencyLink} */ link) {
  return link.callCount ? (link.errorCount || 0) / link.callCount : 0;
}

/** "bad" (red) from RED_RATE on, "warn" (amber) below it, nothing without errors. */
function errorClass(/** @type {number} */ rate) {
  if (rate >= RED_RATE) return "bad";
  return rate > 0 ? "warn" : undefined;
}

function pctText(/** @type {number} */ rate) {
  return `${rate > 0 && rate < 0.001 ? "<0.1" : +(rate * 100).toFixed(1)}%`;
}

/**
 * An edge's SVG path and where its label goes.
 * @param {Edge} e @param {number} w  node width @param {number} bottom  the lowest node's bottom edge
 */
function edgePath(e, w, bottom) {
  const x1 = e.from.x + w;
  const y1 = e.from.y + NODE_H / 2;
  const x2 = e.to.x;
  const y2 = e.to.y + NODE_H / 2;
  if (e.parent === e.child) {
    // A service calling itself: a loop over the node's top edge.
    const cx = e.from.x + w / 2;
    return { d: `M${cx - 20},${e.from.y} C${cx - 40},${e.from.y - 50} ${cx + 40},${e.from.y - 50} ${cx + 20},${e.from.y}`, lx: cx, ly: e.from.y - 40 };
  }
  if (e.back) {
    // Against the layer order: out of the caller's right side, down the gap after its column,
    // back under the whole graph, up the gap before the callee's column and into its left side,
    // so the edge crosses no node.
    const low = bottom + 24;
    const sx = e.from.x + w + 20;
    const tx = e.to.x - 20;
    const c = 12; // corner radius
    const d = `M${x1},${y1} H${sx - c} Q${sx},${y1} ${sx},${y1 + c} V${low - c} Q${sx},${low} ${sx - c},${low} ` +
      `H${tx + c} Q${tx},${low} ${tx},${low - c} V${y2 + c} Q${tx},${y2} ${tx + c},${y2} H${x2}`;
    return { d, lx: (sx + tx) / 2, ly: low - 6 };
  }
  if (e.skip) {
    // Over the columns in between, arching above their nodes instead of through them.
    const high = Math.min(e.from.y, e.to.y) - 30;
    const sx = e.from.x + w / 2;
    const tx = e.to.x + w / 2;
    return { d: `M${sx},${e.from.y} C${sx},${high} ${tx},${high} ${tx},${e.to.y}`, lx: (sx + tx) / 2, ly: high + 8 };
  }
  const mx = (x1 + x2) / 2;
  return { d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`, lx: mx, ly: (y1 + y2) / 2 - 6 };
}

/**
 * The SVG graph of `links`, `members` naming the services each node holds, `width` the room on offer.
 * @param {DependencyLink[]} links @param {Map<string, string[]>} members @param {Navigate} navigate @param {number} width
 */
function graph(links, members, navigate, width) {
  const measure = measurer();
  /** @param {string} name */
  const subLabel = (name) => {
    const held = members.get(name) || [name];
    return held.length > 1 ? `app + sidecar ${held.filter((m) => m !== name).join(", ")}` : "";
  };
  const names = [...new Set(links.flatMap((l) => [l.parent, l.child]))];
  // Every name whole: the node is as wide as the longest label (or its sidecar line).
  const nodeWidth = Math.max(150, ...names.map((n) => Math.max(measure(n, NODE_FONT), measure(subLabel(n), LABEL_FONT)) + 28));
  const layout = layoutDependencies(links, { width, nodeWidth });
  const w = layout.nodeWidth;
  const svg = s("svg", {
    class: "dep-graph", id: "dep-graph", viewBox: `0 -40 ${layout.width} ${layout.height + 40}`,
    width: layout.width, height: layout.height + 40,
    role: "group", "aria-label": "Service dependency graph",
  },
  s("defs", {}, s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: "9", refY: "5", markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse" },
    s("path", { d: "M0,0 L10,5 L0,10 z", class: "arrow-head" }))));
  const bottom = Math.max(...layout.nodes.map((n) => n.y)) + NODE_H;
  for (const e of layout.edges) {
    const { d, lx, ly } = edgePath(e, w, bottom);
    const rate = errorRate(e);
    const label = `${e.callCount} call${e.callCount === 1 ? "" : "s"}` + (rate ? ` · ${pctText(rate)} errors` : "");
    // The label sits on an opaque pill over the curve's middle, so no line runs through its text.
    const pw = measure(label, LABEL_FONT) + 12;
    svg.append(s("g", {
      class: ["dep-edge", errorClass(rate) === "bad" && "has-errors", errorClass(rate) === "warn" && "some-errors"],
      "data-parent": e.parent, "data-child": e.child,
    },
    s("title", {}, `${e.parent} → ${e.child}: ${label}`),
    s("path", { d, "marker-end": "url(#arrow)" }),
    s("rect", { class: "edge-pill", x: lx - pw / 2, y: ly - 12, width: pw, height: 17, rx: 8.5 }),
    s("text", { x: lx, y: ly, "text-anchor": "middle", class: "edge-label" }, label)));
  }
  for (const n of layout.nodes) {
    const open = () => navigate(`/search?service=${encodeURIComponent(n.name)}`);
    const node = s("g", {
      class: "dep-node", "data-service": n.name, "data-members": (members.get(n.name) || [n.name]).join(" "),
      tabindex: "0", role: "link",
      "aria-label": `${n.name}: search its traces`,
      onclick: open,
      onkeydown: (/** @type {KeyboardEvent} */ ev) => {
        if (ev.key === "Enter" || ev.key === " ") {
          ev.preventDefault();
          open();
        }
      },
    },
    s("title", {}, `${n.name} — click to search its traces`),
    s("rect", { x: n.x, y: n.y, width: w, height: NODE_H, rx: "8" }),
    s("rect", { x: n.x, y: n.y, width: "6", height: NODE_H, class: "node-stripe", fill: serviceColor(n.name) }),
    subLabel(n.name)
      ? [s("text", { x: n.x + 14, y: n.y + 19, class: "node-label" }, n.name),
        s("text", { x: n.x + 14, y: n.y + 35, class: "node-sub" }, subLabel(n.name))]
      : s("text", { x: n.x + 14, y: n.y + 27, class: "node-label" }, n.name));
    svg.append(node);
  }
  return svg;
}

function table(/** @type {DependencyLink[]} */ links) {
  const sorted = [...links].sort((a, b) => b.callCount - a.callCount);
  return h("table", { class: "dep-table", id: "dep-table" },
    h("thead", {}, h("tr", {}, ["Caller", "Callee", "Calls", "Errors", "Error rate"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, sorted.map((l) => h("tr", {},
      h("td", {}, l.parent), h("td", {}, l.child), h("td", { class: "num" }, String(l.callCount)),
      h("td", { class: "num" }, l.errorCount === undefined ? "—" : String(l.errorCount)),
      h("td", { class: ["num", errorClass(errorRate(l))] }, l.errorCount === undefined ? "—" : pctText(errorRate(l)))))));
}

/**
 * Render the dependencies page for the URL query `q` (lookback=1h|6h|24h|7d).
 * @param {HTMLElement} root @param {URLSearchParams} q @param {Navigate} navigate
 */
export async function renderDependencies(root, q, navigate) {
  document.title = "Dependencies · meshtrace";
  const current = q.get("lookback") || "24h";
  const apart = q.get("sidecars") === "apart";
  const url = (/** @type {string} */ lookback, /** @type {boolean} */ split) => `/dependencies?lookback=${lookback}${split ? "&sidecars=apart" : ""}`;
  const toggle = h("input", { type: "checkbox", id: "dep-sidecars", checked: apart || undefined });
  toggle.addEventListener("change", () => navigate(url(current, toggle.checked)));
  const select = h("select", { id: "dep-lookback", "aria-label": "Time range" },
    LOOKBACKS.map(([k]) => h("option", { value: k, selected: k === current || undefined }, `Last ${k}`)));
  select.addEventListener("change", () => navigate(url(select.value, apart)));
  const content = h("div", { class: "deps-content" }, h("p", { class: "loading" }, "Loading…"));
  mount(root, h("section", { class: "deps-page" },
    h("div", { class: "results-head" }, h("h1", {}, "Service dependencies"),
      h("span", { class: "results-tools" },
        h("label", { class: "check", title: "Draw each app and its sidecar as separate services" }, toggle,
          h("span", {}, "Show sidecars apart")),
        select)),
    content));
  const lookback = (LOOKBACKS.find(([k]) => k === current) || LOOKBACKS[2])[1];
  let links;
  try {
    links = await api.dependencies(Date.now(), lookback);
  } catch (err) {
    mount(content, h("p", { class: "banner error", role: "alert" }, api.errorMessage(err)));
    return;
  }
  if (!links.length) {
    mount(content, h("p", { class: "empty" }, "No calls between services in this time range."));
    return;
  }
  const grouped = apart ? { links, members: new Map() } : groupWorkloads(links);
  mount(content, h("div", { class: "dep-graph-wrap" }));
  const width = /** @type {HTMLElement} */ (content.firstChild).clientWidth;
  mount(content, graph(grouped.links, grouped.members, navigate, width), table(links));
}
