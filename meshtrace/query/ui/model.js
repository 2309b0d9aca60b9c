// @ts-check
// Pure functions over Jaeger JSON traces: span tree, orphans, critical path, flame layout, find,
// formatting. No DOM here, so tests can import this module and call it directly.

// Service colours. Red is kept for errors, so the palette has no red, rose or pink: a
// service (the gateway is the root of every trace) must never look like a failure. The order puts
// the demo's services (gateway, apps, sidecars) on well-separated colours.
const PALETTE = [
  "#f59e0b", "#84cc16", "#a855f7", "#6366f1", "#14b8a6", "#eab308", "#8b5cf6", "#64748b",
  "#10b981", "#4d7c0f", "#0ea5e9", "#1e40af", "#a16207", "#3b82f6", "#06b6d4", "#22c55e",
];

/**
 * A stable colour per service name: a hash (FNV-1a) of the name into the palette. It depends on
 * the name alone, so a service has the same colour on every page and after every reload, however
 * many services the store holds.
 */
export function serviceColor(/** @type {string} */ name) {
  let hash = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) {
    hash ^= name.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return PALETTE[hash % PALETTE.length];
}

/** The value of the tag `key`, or undefined. @param {KeyValue[] | undefined} tags @param {string} key */
export function tagValue(tags, key) {
  const tag = (tags || []).find((t) => t.key === key);
  return tag === undefined ? undefined : tag.value;
}

/** Error as Jaeger shows it: tag error=true, or the OTel status carried over as otel.status_code. */
export function isErrorSpan(/** @type {Span} */ span) {
  const error = tagValue(span.tags, "error");
  return error === true || error === "true" || tagValue(span.tags, "otel.status_code") === "ERROR";
}

/** The parent span id: the CHILD_OF reference in the same trace. FOLLOWS_FROM are links, not parents. */
export function parentSpanId(/** @type {Span} */ span) {
  const ref = (span.references || []).find(
    (r) => (r.refType || "CHILD_OF") === "CHILD_OF" && (!r.traceID || r.traceID === span.traceID),
  );
  return ref ? ref.spanID : null;
}

/**
 * Jaeger's JSON, as far as the UI reads it.
 * @typedef {{key: string, type?: string, value: any}} KeyValue
 * @typedef {{serviceName: string, tags?: KeyValue[]}} Process
 * @typedef {{refType?: string, traceID?: string, spanID: string}} Reference
 * @typedef {{timestamp: number, fields?: KeyValue[]}} Log
 * @typedef {{traceID?: string, spanID: string, operationName?: string, startTime: number, duration: number,
 *   tags?: KeyValue[], logs?: Log[], references?: Reference[], processID?: string, process?: Process,
 *   warnings?: string[] | null}} Span
 * @typedef {{traceID: string, spans?: Span[], processes?: Record<string, Process>, warnings?: string[] | null}} Trace
 */

/**
 * A span in the trace's tree (what buildTrace makes of each Jaeger span).
 * @typedef {object} SpanNode
 * @property {Span} span
 * @property {string} id
 * @property {Process} process
 * @property {string} service
 * @property {string} operation
 * @property {number} start  microseconds since the epoch, as `end`
 * @property {number} duration  microseconds
 * @property {number} end
 * @property {string | null} parentId  the CHILD_OF parent's span id, in this trace or not
 * @property {SpanNode | null} parent
 * @property {SpanNode[]} children  in start order
 * @property {number} depth
 * @property {boolean} orphan  its parent is not in the trace
 * @property {boolean} error
 * @property {string} kind  the span.kind tag
 * @property {string} appPod  the pod of an app's span (its resource's k8s.pod.name)
 * @property {string} pod  that, or a proxy's pod from its node id
 */

/** @typedef {ReturnType<typeof buildTrace>} TraceModel */
/** @typedef {{id: string, start: number, end: number}} CriticalSegment  a stretch of one span on the critical path */

/** @param {SpanNode} a @param {SpanNode} b */
const byStart = (a, b) => a.start - b.start || a.end - b.end;

/**
 * A span's node, not linked into the tree yet.
 * @param {Span} span @param {Record<string, Process>} processes
 * @returns {SpanNode}
 */
function spanNode(span, processes) {
  const process = span.process || processes[span.processID ?? ""] || { serviceName: "unknown", tags: [] };
  return {
    span,
    id: span.spanID,
    process,
    service: process.serviceName || "unknown",
    operation: span.operationName || "",
    start: span.startTime,
    duration: span.duration,
    end: span.startTime + span.duration,
    parentId: parentSpanId(span),
    parent: null,
    children: [],
    depth: 0,
    orphan: false,
    error: isErrorSpan(span),
    kind: tagValue(span.tags, "span.kind") || "",
    appPod: podName(process),
    pod: podName(process) || proxyPod(tagValue(span.tags, "node_id")),
  };
}

/**
 * Link every node to its parent and flag orphans; returns the nodes without a parent here.
 * @param {SpanNode[]} nodes @param {Map<string, SpanNode>} byId
 */
function linkParents(nodes, byId) {
  /** @type {SpanNode[]} */
  const roots = [];
  for (const node of nodes) {
    const parent = node.parentId && node.parentId !== node.id ? byId.get(node.parentId) : undefined;
    if (node.parentId && node.parentId !== node.id && !parent) node.orphan = true;
    if (parent && parent !== node) {
      node.parent = parent;
      parent.children.push(node);
    } else {
      roots.push(node);
    }
  }
  return roots;
}

/**
 * The nodes in tree order, depth-first from the roots, setting depths and sorting children by
 * start. A node not reached sits in a parent cycle: it is cut from its parent and added to `roots`.
 * @param {SpanNode[]} nodes @param {SpanNode[]} roots
 */
function treeOrder(nodes, roots) {
  const seen = new Set();
  /** @type {SpanNode[]} */
  const order = [];
  /** @param {SpanNode} node @param {number} depth */
  const visit = (node, depth) => {
    seen.add(node);
    node.depth = depth;
    order.push(node);
    node.children.sort(byStart);
    for (const child of node.children) if (!seen.has(child)) visit(child, depth + 1);
  };
  roots.sort(byStart);
  for (const root of roots) visit(root, 0);
  for (const node of nodes) {
    if (seen.has(node)) continue;
    if (node.parent) node.parent.children = node.parent.children.filter((c) => c !== node);
    node.parent = null;
    roots.push(node);
    visit(node, 0);
  }
  return order;
}

/**
 * Index a Jaeger trace: every span gets its process, service, parent/children, depth, error and
 * orphan flag (a parent reference to a span that is not in the trace). Spans whose parent chain
 * loops are treated as roots so the tree is always a forest.
 * @param {Trace} trace
 */
export function buildTrace(trace) {
  const processes = trace.processes || {};
  const nodes = (trace.spans || []).map((span) => spanNode(span, processes));
  /** @type {Map<string, SpanNode>} */
  const byId = new Map();
  // Zipkin-style shared span ids can repeat; the first one owns the id for parent lookups.
  for (const node of nodes) if (!byId.has(node.id)) byId.set(node.id, node);
  const roots = linkParents(nodes, byId);
  const order = treeOrder(nodes, roots);
  const start = nodes.length ? Math.min(...nodes.map((n) => n.start)) : 0;
  const end = nodes.length ? Math.max(...nodes.map((n) => n.end)) : 0;
  /** @type {Map<string, number>} */
  const services = new Map();
  for (const node of nodes) services.set(node.service, (services.get(node.service) || 0) + 1);
  const rootSpan = roots.find((r) => !r.orphan) || roots[0] || null;
  return {
    traceID: trace.traceID,
    nodes: order,
    byId,
    roots,
    orphans: nodes.filter((n) => n.orphan),
    services: [...services].map(([name, count]) => ({ name, count })).sort((a, b) => b.count - a.count),
    start,
    end,
    duration: end - start,
    depth: nodes.length ? Math.max(...nodes.map((n) => n.depth)) + 1 : 0,
    errorCount: nodes.filter((n) => n.error).length,
    rootSpan,
    hasRoot: roots.some((r) => !r.orphan),
    warnings: trace.warnings || [],
  };
}

/** The pod a span ran in: `k8s.pod.name` of its resource (the process tags), else "". */
export function podName(/** @type {Process} */ process) {
  const pod = tagValue(process.tags, "k8s.pod.name");
  return pod === undefined ? "" : String(pod);
}

/**
 * The pod of a sidecar or gateway span, from its Envoy node id tag
 * (`sidecar~10.0.0.5~frontend-0.default~default.svc.cluster.local`: type, IP, pod.namespace,
 * DNS domain); "" for anything else.
 */
export function proxyPod(/** @type {unknown} */ nodeId) {
  const parts = typeof nodeId === "string" ? nodeId.split("~") : [];
  if (parts.length !== 4 || !["sidecar", "router"].includes(parts[0])) return "";
  const namespace = parts[3].split(".")[0];
  return parts[2].endsWith(`.${namespace}`) ? parts[2].slice(0, -namespace.length - 1) : parts[2];
}

/** @param {KeyValue[]} tags @param {string[]} keys */
function firstTag(tags, keys) {
  for (const key of keys) {
    const value = tagValue(tags, key);
    if (value !== undefined && value !== "") return String(value);
  }
  return "";
}

/**
 * The HTTP request a span served, as {method, path}: the method from `http.request.method` (or the
 * older `http.method`), the path from `url.path`, `http.target` or the path of `http.url` (a
 * sidecar's tag); without any of those, the sidecar's `upstream_cluster` names where it went.
 */
export function httpRequest(/** @type {Span} */ span) {
  const tags = span.tags || [];
  const method = firstTag(tags, ["http.request.method", "http.method"]);
  let path = firstTag(tags, ["url.path", "http.target"]);
  const url = firstTag(tags, ["url.full", "http.url"]);
  if (!path && url) {
    const m = url.match(/^[a-z][a-z0-9+.-]*:\/\/[^/?#]*([^#]*)/i);
    path = m ? m[1] || "/" : url;
  }
  if (!path) path = firstTag(tags, ["upstream_cluster"]);
  return { method, path };
}

/** What a search result shows: name (root service: root operation), counts, services, timing. */
export function summarize(/** @type {Trace} */ trace) {
  const model = buildTrace(trace);
  const root = model.rootSpan;
  const http = root ? httpRequest(root.span) : { method: "", path: "" };
  return {
    traceID: model.traceID,
    service: root ? root.service : "",
    operation: root ? root.operation : "",
    method: http.method,
    path: http.path,
    spanCount: model.nodes.length,
    services: model.services,
    start: model.start,
    duration: model.duration,
    errorCount: model.errorCount,
    orphanCount: model.orphans.length,
    hasRoot: model.hasRoot,
  };
}

/** A span's own time: its duration less the union of its children's time inside it. */
export function selfTime(/** @type {SpanNode} */ node) {
  const spans = node.children
    .map((c) => /** @type {[number, number]} */ ([Math.max(c.start, node.start), Math.min(c.end, node.end)]))
    .filter(([s, e]) => e > s)
    .sort((a, b) => a[0] - b[0]);
  let covered = 0;
  let reach = node.start;
  for (const [s, e] of spans) {
    if (e <= reach) continue;
    covered += e - Math.max(s, reach);
    reach = e;
  }
  return node.duration - covered;
}

/**
 * Per service and operation: span count, errors, total / mean / max duration and total self time,
 * most total self time first (where the trace's time went).
 */
export function operationStats(/** @type {TraceModel} */ model) {
  const groups = new Map();
  for (const node of model.nodes) {
    const key = `${node.service}\u0000${node.operation}`;
    let g = groups.get(key);
    if (!g) {
      g = { service: node.service, operation: node.operation, count: 0, errors: 0, total: 0, max: 0, self: 0 };
      groups.set(key, g);
    }
    g.count += 1;
    g.errors += node.error ? 1 : 0;
    g.total += node.duration;
    g.max = Math.max(g.max, node.duration);
    g.self += selfTime(node);
  }
  return [...groups.values()]
    .map((g) => ({ ...g, mean: g.total / g.count }))
    .sort((a, b) => b.self - a.self || a.service.localeCompare(b.service) || a.operation.localeCompare(b.operation));
}

/** The spans shown in the waterfall, in tree order, skipping descendants of collapsed spans. */
export function visibleNodes(/** @type {TraceModel} */ model, /** @type {Set<string>} */ collapsed) {
  /** @type {SpanNode[]} */
  const out = [];
  /** @param {SpanNode} node */
  const walk = (node) => {
    out.push(node);
    if (!collapsed.has(node.id)) for (const child of node.children) walk(child);
  };
  for (const root of model.roots) walk(root);
  return out;
}

/**
 * The critical path: the chain of work that determined the trace's end-to-end latency. Walking
 * back from the root's end, the last child to finish before the cursor is on the path; the time
 * between children is the parent's own. Returns segments {id, start, end} (microseconds).
 */
export function criticalPath(/** @type {TraceModel} */ model) {
  /** @type {CriticalSegment[]} */
  const segments = [];
  /** @param {SpanNode} node @param {number} limit */
  const walk = (node, limit) => {
    let cursor = Math.min(node.end, limit);
    const children = [...node.children].sort((a, b) => b.end - a.end);
    for (const child of children) {
      if (child.start >= cursor || child.end <= node.start) continue;
      const childEnd = Math.min(child.end, cursor);
      if (childEnd < cursor) segments.push({ id: node.id, start: childEnd, end: cursor });
      walk(child, childEnd);
      cursor = Math.max(child.start, node.start);
      if (cursor <= node.start) break;
    }
    if (cursor > node.start) segments.push({ id: node.id, start: node.start, end: cursor });
  };
  // The latency a caller saw is the root's; spans cut off by a missing parent are not part of it.
  for (const root of model.hasRoot ? [model.rootSpan] : model.roots) walk(root, root.end);
  return segments.sort((a, b) => a.start - b.start);
}

/**
 * Flame graph rows: each span sits one row below its parent; sibling subtrees that overlap in
 * time are pushed down to free rows so no two boxes overlap; separate trees stack with a gap.
 * Returns Map node -> row.
 */
export function flameLayout(/** @type {TraceModel} */ model) {
  /** @type {Map<SpanNode, number>} */
  const rows = new Map();
  // Lays out `node`'s subtree with the node on row 0; returns its placements and bounding box.
  // Child subtrees go in order of their start, each at the first offset whose rows are free from
  // its start on: with starts sorted, a row is free when everything in it ended by then.
  /**
   * @param {SpanNode} node
   * @returns {{placed: [SpanNode, number][], height: number, t0: number, t1: number}}
   */
  const layout = (node) => {
    /** @type {[SpanNode, number][]} */
    const placed = [[node, 0]];
    /** @type {number[]} */
    const rowEnd = []; // per relative row: the latest end time placed there
    let height = 1;
    let t0 = node.start;
    let t1 = node.end;
    const subs = node.children.map(layout).sort((a, b) => a.t0 - b.t0);
    for (const sub of subs) {
      // 0 when rows offset..offset+height-1 are free, else the row below the first busy one
      // (no window holding a busy row can fit, so the search jumps past it).
      /** @param {number} offset */
      const busy = (offset) => {
        for (let r = offset; r < offset + sub.height; r++) if ((rowEnd[r] ?? -Infinity) > sub.t0) return r + 1;
        return 0;
      };
      let offset = 1;
      for (let next = busy(offset); next; next = busy(offset)) offset = next;
      for (let r = offset; r < offset + sub.height; r++) rowEnd[r] = Math.max(rowEnd[r] ?? -Infinity, sub.t1);
      for (const [n, r] of sub.placed) placed.push([n, r + offset]);
      height = Math.max(height, offset + sub.height);
      t0 = Math.min(t0, sub.t0);
      t1 = Math.max(t1, sub.t1);
    }
    return { placed, height, t0, t1 };
  };
  // Separate trees (a missing parent cuts one off) stack below each other with an empty row
  // between them, so a cut-off tree never looks like the child of the span above it.
  let next = 0;
  for (const root of model.roots) {
    const sub = layout(root);
    for (const [n, r] of sub.placed) rows.set(n, r + next);
    next += sub.height + 1;
  }
  return rows;
}

function haystack(/** @type {SpanNode} */ node) {
  const parts = [node.service, node.operation, node.id];
  const tags = [...(node.span.tags || []), ...(node.process.tags || [])];
  for (const log of node.span.logs || []) tags.push(...(log.fields || []));
  for (const t of tags) parts.push(`${t.key}=${t.value}`);
  return parts.join("\n").toLowerCase();
}

/** Spans matching a find-in-trace query: every whitespace-separated word must appear somewhere. */
export function findSpans(/** @type {TraceModel} */ model, /** @type {string} */ query) {
  const words = query.toLowerCase().split(/\s+/).filter(Boolean);
  /** @type {Set<SpanNode>} */
  const hits = new Set();
  if (!words.length) return hits;
  for (const node of model.nodes) {
    const text = haystack(node);
    if (words.every((w) => text.includes(w))) hits.add(node);
  }
  return hits;
}

/**
 * Parse the search form's attributes field, logfmt style: `http.status_code=500 error=true
 * msg="two words"`. Returns {tags} or {error} naming the bad token.
 * @param {string} text
 * @returns {{tags: Record<string, string>, error?: undefined} | {tags?: undefined, error: string}}
 */
export function parseTags(text) {
  /** @type {Record<string, string>} */
  const tags = {};
  const re = /\s*([^\s=]+)=(?:"((?:[^"\\]|\\.)*)"|(\S*))/y;
  let pos = 0;
  const src = text.trim();
  while (pos < src.length) {
    re.lastIndex = pos;
    const m = re.exec(src);
    if (!m) {
      const token = src.slice(pos).trim().split(/\s+/)[0];
      return { error: `attributes: "${token}" is not key=value` };
    }
    tags[m[1]] = m[2] !== undefined ? m[2].replace(/\\(.)/g, "$1") : m[3];
    pos = re.lastIndex;
    while (pos < src.length && /\s/.test(src[pos])) pos++;
  }
  return { tags };
}

/** The inverse of parseTags: a tags map as the search form's attributes text. */
export function formatTags(/** @type {Record<string, string>} */ tags) {
  return Object.entries(tags)
    .map(([k, v]) => (/[\s"]/.test(v) || v === "" ? `${k}="${v.replace(/(["\\])/g, "\\$1")}"` : `${k}=${v}`))
    .join(" ");
}

const DURATION_RE = /^\d+(\.\d+)?(ns|us|µs|ms|s|m|h)$/;

/** Jaeger's duration syntax (Go's time.ParseDuration units); empty is allowed. */
export function isDuration(/** @type {string} */ text) {
  return text === "" || DURATION_RE.test(text);
}

/** Microseconds as a short human duration: 850µs, 12.3ms, 1.24s, 2m 5s. */
export function fmtDuration(/** @type {number} */ us) {
  if (!Number.isFinite(us)) return "";
  if (us < 1000) return `${Math.round(us)}µs`;
  if (us < 1_000_000) return `${+(us / 1000).toPrecision(3)}ms`;
  if (us < 60_000_000) return `${+(us / 1_000_000).toPrecision(3)}s`;
  const s = Math.round(us / 1_000_000);
  return `${Math.floor(s / 60)}m ${s % 60}s`;
}

/** @param {number} n */
function pad(n, width = 2) {
  return String(n).padStart(width, "0");
}

/** Microseconds since the epoch as local `YYYY-MM-DD HH:MM:SS.mmm`. */
export function fmtTime(/** @type {number} */ us) {
  const d = new Date(us / 1000);
  return (
    `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`
  );
}

/** "5s ago", "3m ago", "2h ago", "4d ago" relative to `nowMs`. */
export function fmtAgo(/** @type {number} */ us, nowMs = Date.now()) {
  const s = Math.max(0, Math.round((nowMs - us / 1000) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}

/**
 * Round tick positions for an axis from 0 to `max`, about `count` of them; with `cover` the last
 * tick is at or above `max` (an axis that must contain every point).
 */
export function ticks(/** @type {number} */ max, count = 5, cover = false) {
  if (!(max > 0)) return [0];
  const raw = max / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((v) => v >= raw) || raw;
  const out = [];
  for (let v = 0; v <= max + step * 1e-9; v += step) out.push(v);
  if (cover && out[out.length - 1] < max) out.push(out[out.length - 1] + step);
  return out;
}
