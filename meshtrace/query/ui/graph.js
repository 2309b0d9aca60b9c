// @ts-check
// Layered layout of the service dependency graph. Pure: links in, coordinates out.

/** @typedef {{parent: string, child: string, callCount: number, errorCount?: number}} DependencyLink */
/** @typedef {{x: number, y: number}} Point */

/**
 * `map`'s value for `key`, which the layout put there before asking.
 * @template K, V
 * @param {Map<K, V>} map @param {K} key
 * @returns {V}
 */
function known(map, key) {
  const value = map.get(key);
  if (value === undefined) throw new Error(`layout: no entry for ${String(key)}`);
  return value;
}

/**
 * Each service's column (its longest call path from an entry point) and the calls that close a
 * cycle (back edges, as "parent\0child"), which are drawn but do not move nodes.
 * @param {string[]} names @param {DependencyLink[]} links
 */
function layers(names, links) {
  /** @type {Map<string, string[]>} */
  const out = new Map(names.map((n) => [n, []]));
  /** @param {string} n */
  const callees = (n) => out.get(n) ?? [];
  const indegree = new Map(names.map((n) => [n, 0]));
  for (const l of links) {
    if (l.parent === l.child) continue;
    callees(l.parent).push(l.child);
    indegree.set(l.child, (indegree.get(l.child) ?? 0) + 1);
  }
  // Depth-first from the entry points (no callers; else alphabetical) marks back edges.
  /** @type {Map<string, number>} */
  const layer = new Map();
  const state = new Map(); // 1 = on the stack, 2 = done
  const back = new Set();
  /** @param {string} n */
  const visit = (n) => {
    state.set(n, 1);
    for (const m of callees(n)) {
      if (state.get(m) === 1) back.add(`${n}\u0000${m}`);
      else if (!state.has(m)) visit(m);
    }
    state.set(n, 2);
  };
  for (const n of names.filter((x) => indegree.get(x) === 0)) if (!state.has(n)) visit(n);
  for (const n of names) if (!state.has(n)) visit(n);
  // Longest path from the entry points over the forward edges.
  /** @type {string[]} */
  const order = [];
  const done = new Set();
  /** @param {string} n */
  const topo = (n) => {
    done.add(n);
    for (const m of callees(n)) if (!back.has(`${n}\u0000${m}`) && !done.has(m)) topo(m);
    order.unshift(n);
  };
  for (const n of names) if (!done.has(n)) topo(n);
  for (const n of order) layer.set(n, layer.get(n) || 0);
  for (const n of order) {
    for (const m of callees(n)) {
      if (!back.has(`${n}\u0000${m}`)) layer.set(m, Math.max(known(layer, m), known(layer, n) + 1));
    }
  }
  return { layer, back };
}

/**
 * Place services in columns by call depth (callers left of callees) and order each column by the
 * mean position of its callers, so edges cross less. Calls that close a cycle are drawn but do not
 * move nodes. `links` are Jaeger's {parent, child, callCount, errorCount?}.
 * @param {DependencyLink[]} links
 */
export function layoutDependencies(links, { width = 0, rowHeight = 100, nodeWidth = 170 } = {}) {
  const names = [...new Set(links.flatMap((l) => [l.parent, l.child]))].sort();
  const { layer, back } = layers(names, links);
  /** @type {string[][]} */
  const columns = [];
  for (const n of names) {
    const l = known(layer, n);
    (columns[l] = columns[l] || []).push(n);
  }
  // Spread the columns over the width on offer (a wide screen gets long, readable edges), never
  // closer than a node plus room for an edge label.
  const minGap = nodeWidth + 130;
  const colWidth = columns.length > 1 ? Math.max(minGap, (width - 76 - nodeWidth) / (columns.length - 1)) : minGap;
  /** @type {Map<string, Point>} */
  const pos = new Map();
  columns.forEach((col, i) => {
    if (i > 0) {
      /** @param {string} n */
      const mean = (n) => {
        const ys = links.filter((l) => l.child === n && pos.has(l.parent)).map((l) => known(pos, l.parent).y);
        return ys.length ? ys.reduce((a, b) => a + b, 0) / ys.length : Infinity;
      };
      col.sort((a, b) => mean(a) - mean(b) || a.localeCompare(b));
    }
    col.forEach((n, j) => pos.set(n, { x: 20 + i * colWidth, y: 30 + j * rowHeight }));
  });
  const tallest = Math.max(1, ...columns.map((c) => c.length));
  // Centre shorter columns vertically against the tallest one.
  for (const col of columns) {
    const shift = ((tallest - col.length) * rowHeight) / 2;
    for (const n of col) known(pos, n).y += shift;
  }
  const nodes = names.map((name) => ({
    name,
    x: known(pos, name).x,
    y: known(pos, name).y,
    calls: links.filter((l) => l.child === name).reduce((a, l) => a + l.callCount, 0),
  }));
  const edges = links.map((l) => ({
    ...l,
    from: known(pos, l.parent),
    to: known(pos, l.child),
    back: back.has(`${l.parent}\u0000${l.child}`) || known(layer, l.child) <= known(layer, l.parent),
    skip: known(layer, l.child) - known(layer, l.parent) > 1,
  }));
  return {
    nodes,
    edges,
    width: Math.max(width, 56 + (columns.length - 1) * colWidth + nodeWidth), // room for a back edge right of the last column
    height: 40 + tallest * rowHeight,
    nodeWidth,
  };
}

/**
 * Fold each sidecar into its app: Istio names a sidecar's spans `<app>.<namespace>`, so a service
 * `a.ns` (ns a single DNS label) linked in either direction with a service `a` is the same workload.
 * Calls between the two halves vanish and the rest are summed per pair of workloads. Returns
 * {links, members}: members maps each workload (named after its app) to the services it holds.
 * @param {DependencyLink[]} links
 */
export function groupWorkloads(links) {
  const names = new Set(links.flatMap((l) => [l.parent, l.child]));
  const linked = new Set(links.flatMap((l) => [`${l.parent}\u0000${l.child}`, `${l.child}\u0000${l.parent}`]));
  const workload = new Map([...names].map((n) => [n, n]));
  for (const n of names) {
    const dot = n.lastIndexOf(".");
    const app = n.slice(0, dot);
    if (dot > 0 && names.has(app) && linked.has(`${app}\u0000${n}`)) workload.set(n, app);
  }
  /** @type {Map<string, string[]>} */
  const members = new Map();
  for (const n of [...names].sort()) {
    const w = known(workload, n);
    members.set(w, [...(members.get(w) || []), n]);
  }
  /** @type {Map<string, DependencyLink>} */
  const merged = new Map();
  for (const l of links) {
    const parent = known(workload, l.parent);
    const child = known(workload, l.child);
    if (parent === child && l.parent !== l.child) continue; // an app and its own sidecar
    const key = `${parent}\u0000${child}`;
    const m = merged.get(key) || { parent, child, callCount: 0 };
    m.callCount += l.callCount;
    if (l.errorCount !== undefined) m.errorCount = (m.errorCount || 0) + l.errorCount;
    merged.set(key, m);
  }
  return { links: [...merged.values()], members };
}
