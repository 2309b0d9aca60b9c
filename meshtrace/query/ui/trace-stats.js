// @ts-check
// The trace page's statistics view: one row per service and operation (model.js's operationStats),
// sortable by any column; a service name finds its spans in the timeline.

import { h, mount } from "./dom.js";
import { fmtDuration, operationStats } from "./model.js";
import { swatch } from "./trace-state.js";

/** @typedef {ReturnType<typeof operationStats>[number]} OperationStats */
/** @typedef {keyof OperationStats} StatKey */

/** @type {[StatKey, string, (r: OperationStats) => string][]} */
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

/** @param {StatKey} key */
const isText = (key) => key === "service" || key === "operation";

/**
 * One table row.
 * @param {OperationStats} r @param {(service: string) => void} onService
 */
function statsRow(r, onService) {
  return h("tr", {}, STAT_COLUMNS.map(([key, , text]) => {
    if (key !== "service") return h("td", { class: [key !== "operation" && "num", key === "errors" && r.errors && "bad"] }, text(r));
    return h("td", {}, h("button", { type: "button", class: "linkish", onclick: () => onService(r.service) }, swatch(r.service), r.service));
  }));
}

/**
 * The statistics table; headers sort (numbers largest first, names A to Z), a service finds its spans.
 * @param {import("./model.js").TraceModel} model @param {(service: string) => void} onService
 */
export function statsTable(model, onService) {
  const rows = operationStats(model);
  const body = h("tbody");
  /** @type {StatKey} */
  let sortKey = "self";
  let descending = true;
  const headers = STAT_COLUMNS.map(([key, label]) => h("th", { scope: "col", class: !isText(key) && "num" },
    h("button", { type: "button", class: "sort", "data-key": key, onclick: () => sortBy(key) }, label)));
  const fill = () => {
    const sign = descending ? -1 : 1;
    const sorted = [...rows].sort((a, b) => {
      const x = a[sortKey];
      const y = b[sortKey];
      return sign * (typeof x === "string" && typeof y === "string" ? x.localeCompare(y) : Number(x) - Number(y));
    });
    mount(body, sorted.map((r) => statsRow(r, onService)));
    headers.forEach((th, i) => th.setAttribute("aria-sort",
      STAT_COLUMNS[i][0] === sortKey ? (descending ? "descending" : "ascending") : "none"));
  };
  /** @param {StatKey} key */
  function sortBy(key) {
    descending = key === sortKey ? !descending : !isText(key);
    sortKey = key;
    fill();
  }
  fill();
  return h("table", { class: "stats-table", id: "stats-table" }, h("thead", {}, h("tr", {}, headers)), body);
}
