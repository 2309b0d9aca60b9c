// @ts-check
// A span's details, as the waterfall opens them under a row and the flame graph shows them under
// the graph: the facts (service, ids, parent, kind, pod, timing, status), then attributes, events,
// resource, references and warnings.

import { h } from "./dom.js";
import { fmtDuration, fmtTime, formatTags, selfTime, tagValue } from "./model.js";
import { swatch } from "./trace-state.js";

/** @typedef {import("./model.js").SpanNode} SpanNode */
/** @typedef {import("./model.js").TraceModel} TraceModel */
/** @typedef {import("./model.js").KeyValue} KeyValue */
/** @typedef {import("./trace-state.js").TraceActions} TraceActions */

export const ORPHAN_HELP =
  "Missing parent: this span names a parent span that is not in this trace. Trace context was " +
  "propagated, but the parent span never reached the store: the service that owns it did not export " +
  "it (no exporter, another collector, a different sampling decision), it was dropped on the way, or " +
  "it has not been flushed yet. In a mesh, check that every app copies all trace headers " +
  "(traceparent/tracestate, or every x-b3-* header) from its inbound request to its outbound calls.";

/** @param {SpanNode} node */
function namespaceOf(node) {
  const ns = tagValue(node.process.tags, "k8s.namespace.name");
  return ns === undefined ? "" : String(ns);
}

/**
 * `/search` for the traces of `service` holding attribute key=value.
 * @param {string} service @param {string} key @param {unknown} value
 */
function searchLink(service, key, value) {
  return `/search?${new URLSearchParams({ service, tags: formatTags({ [key]: String(value) }) })}`;
}

/**
 * A key/value table; with `service`, each row links to a search for that attribute.
 * @param {KeyValue[]} items @param {string} [cls] @param {string} [service]
 */
function kvTable(items, cls, service) {
  if (!items.length) return h("p", { class: "none" }, "none");
  return h("table", { class: ["kv", cls] }, h("tbody", {}, items.map(({ key, value, type }) =>
    h("tr", {}, h("th", { scope: "row" }, key),
      h("td", { class: type ? `t-${type}` : undefined }, value === undefined ? "" : String(value)),
      service === undefined ? null : h("td", { class: "kv-action" },
        h("a", { href: searchLink(service, key, value), "data-nav": "", title: `Traces of ${service} with ${key}=${value}` },
          "find traces"))))));
}

/** @param {string} title @param {number} count @param {HTMLElement} body @param {boolean} [open] */
function section(title, count, body, open = true) {
  return h("details", { class: "detail-section", open: open || undefined },
    h("summary", {}, title, h("span", { class: "count" }, String(count))), body);
}

/** @param {SpanNode} node */
function statusOf(node) {
  const code = tagValue(node.span.tags, "otel.status_code");
  const desc = tagValue(node.span.tags, "otel.status_description");
  if (node.error) return { text: desc ? `ERROR: ${desc}` : "ERROR", cls: "status-error" };
  return { text: code || "UNSET", cls: code === "OK" ? "status-ok" : "status-unset" };
}

/**
 * A button that shows `target` (in this trace) when clicked.
 * @param {SpanNode} target @param {string} id @param {TraceActions} actions
 */
function revealButton(target, id, actions) {
  return h("button", { type: "button", class: "linkish", onclick: () => actions.reveal(target) },
    `${id} (${target.service}: ${target.operation})`);
}

/** The parent fact: a button to it, or why there is none. @param {SpanNode} node @param {TraceActions} actions */
function parentFact(node, actions) {
  if (node.orphan) return h("span", { class: "orphan-text" }, `${node.parentId} (missing from this trace)`);
  if (node.parent) return revealButton(node.parent, node.parent.id, actions);
  return "none (root span)";
}

/**
 * The facts list at the top of the details.
 * @param {SpanNode} node @param {TraceModel} model @param {TraceActions} actions
 */
function facts(node, model, actions) {
  const status = statusOf(node);
  const namespace = namespaceOf(node);
  /** @type {([string, import("./dom.js").Child] | null)[]} */
  const rows = [
    ["Service", h("span", {}, swatch(node.service), node.service)],
    ["Operation", node.operation],
    ["Span ID", h("code", {}, node.id)],
    ["Parent", parentFact(node, actions)],
    ["Kind", node.kind || "unspecified"],
    node.pod ? ["Pod", h("span", { class: "pod-fact" }, node.pod,
      namespace ? h("span", { class: "muted" }, ` (namespace ${namespace})`) : null)] : null,
    ["Start", `+${fmtDuration(node.start - model.start)} (${fmtTime(node.start)})`],
    ["Duration", fmtDuration(node.duration)],
    ["Self time", `${fmtDuration(selfTime(node))} (not in child spans)`],
    ["Status", h("span", { class: status.cls }, status.text)],
  ];
  return h("dl", { class: "facts" }, rows.filter((row) => row !== null).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

/**
 * The references list: a span in this trace is a button to it, another trace a link.
 * @param {SpanNode} node @param {TraceModel} model @param {TraceActions} actions
 */
function references(node, model, actions) {
  return (node.span.references || []).map((ref) => {
    const local = (!ref.traceID || ref.traceID === model.traceID) && model.byId.get(ref.spanID);
    let target;
    if (local) {
      target = revealButton(local, ref.spanID, actions);
    } else if (ref.traceID && ref.traceID !== model.traceID) {
      target = h("a", { href: `/trace/${encodeURIComponent(ref.traceID)}`, "data-nav": "" },
        `trace ${ref.traceID}, span ${ref.spanID}`);
    } else {
      target = h("span", { class: "orphan-text" }, `${ref.spanID} (not in this trace)`);
    }
    return h("li", {}, h("span", { class: "ref-type" }, ref.refType || "CHILD_OF"), " ", target);
  });
}

/** The span's events (Jaeger's logs), each with its time offset. @param {SpanNode} node @param {TraceModel} model */
function events(node, model) {
  return (node.span.logs || []).map((log) => {
    const name = (log.fields || []).find((f) => f.key === "event");
    return h("li", { class: "log" },
      h("div", { class: "log-head" }, h("span", { class: "log-time" }, `+${fmtDuration(log.timestamp - model.start)}`),
        " ", name ? String(name.value) : "log"),
      kvTable((log.fields || []).filter((f) => f !== name)));
  });
}

/** A list, or "none". @param {string | undefined} cls @param {HTMLElement[]} items */
function listOrNone(cls, items) {
  return items.length ? h("ul", { class: cls }, items) : h("p", { class: "none" }, "none");
}

/**
 * The details of `node`.
 * @param {SpanNode} node @param {TraceModel} model @param {TraceActions} actions
 */
export function spanDetail(node, model, actions) {
  const refs = references(node, model, actions);
  const logs = events(node, model);
  const tags = node.span.tags || [];
  const resource = node.process.tags || [];
  const warnings = node.span.warnings || [];
  return h(
    "div", { class: "span-detail", "data-span-id": node.id, role: "region", "aria-label": `Details of ${node.operation}` },
    node.orphan ? h("p", { class: "orphan-callout", role: "note" }, "⚠ ", ORPHAN_HELP) : null,
    h("a", {
      class: "span-link", href: `/trace/${encodeURIComponent(model.traceID)}?span=${encodeURIComponent(node.id)}`,
      "data-nav": "", title: "A link that opens this trace at this span",
    }, "Link to this span"),
    facts(node, model, actions),
    section("Attributes", tags.length, kvTable(tags, "attributes", node.service)),
    section("Events", logs.length, listOrNone("logs", logs)),
    section("Resource", resource.length + 1,
      kvTable([{ key: "service.name", value: node.service }, ...resource], "resource")),
    section("References", refs.length, listOrNone("refs", refs)),
    warnings.length ? section("Warnings", warnings.length, h("ul", {}, warnings.map((w) => h("li", {}, w)))) : null,
  );
}
