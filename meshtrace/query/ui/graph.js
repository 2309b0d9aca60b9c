// Layered layout of the service dependency graph. Pure: links in, coordinates out.

/**
 * Place services in columns by call depth (callers left of callees) and order each column by the
 * mean position of its callers, so edges cross less. Calls that close a cycle are drawn but do not
 * move nodes. `links` are Jaeger's {parent, child, callCount, errorCount?}.
 */
export function layoutDependencies(links, { colWidth = 330, rowHeight = 100, nodeWidth = 170 } = {}) {
  const names = [...new Set(links.flatMap((l) => [l.parent, l.child]))].sort();
  const out = new Map(names.map((n) => [n, []]));
  const indegree = new Map(names.map((n) => [n, 0]));
  for (const l of links) {
    if (l.parent === l.child) continue;
    out.get(l.parent).push(l.child);
    indegree.set(l.child, indegree.get(l.child) + 1);
  }
  // Depth-first from the entry points (no callers; else alphabetical) marks back edges.
  const layer = new Map();
  const state = new Map(); // 1 = on the stack, 2 = done
  const back = new Set();
  const visit = (n) => {
    state.set(n, 1);
    for (const m of out.get(n)) {
      if (state.get(m) === 1) back.add(`${n}\u0000${m}`);
      else if (!state.has(m)) visit(m);
    }
    state.set(n, 2);
  };
  for (const n of names.filter((x) => indegree.get(x) === 0)) if (!state.has(n)) visit(n);
  for (const n of names) if (!state.has(n)) visit(n);
  // Longest path from the entry points over the forward edges.
  const order = [];
  const done = new Set();
  const topo = (n) => {
    done.add(n);
    for (const m of out.get(n)) if (!back.has(`${n}\u0000${m}`) && !done.has(m)) topo(m);
    order.unshift(n);
  };
  for (const n of names) if (!done.has(n)) topo(n);
  for (const n of order) layer.set(n, layer.get(n) || 0);
  for (const n of order) {
    for (const m of out.get(n)) {
      if (!back.has(`${n}\u0000${m}`)) layer.set(m, Math.max(layer.get(m), layer.get(n) + 1));
    }
  }
  const columns = [];
  for (const n of names) {
    const l = layer.get(n);
    (columns[l] = columns[l] || []).push(n);
  }
  const pos = new Map();
  columns.forEach((col, i) => {
    if (i > 0) {
      const mean = (n) => {
        const ys = links.filter((l) => l.child === n && pos.has(l.parent)).map((l) => pos.get(l.parent).y);
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
    for (const n of col) pos.get(n).y += shift;
  }
  const nodes = names.map((name) => ({
    name,
    x: pos.get(name).x,
    y: pos.get(name).y,
    calls: links.filter((l) => l.child === name).reduce((a, l) => a + l.callCount, 0),
  }));
  const edges = links.map((l) => ({
    ...l,
    from: pos.get(l.parent),
    to: pos.get(l.child),
    back: back.has(`${l.parent}\u0000${l.child}`) || layer.get(l.child) <= layer.get(l.parent),
    skip: layer.get(l.child) - layer.get(l.parent) > 1,
  }));
  return {
    nodes,
    edges,
    width: 56 + (columns.length - 1) * colWidth + nodeWidth, // room for a back edge right of the last column
    height: 40 + tallest * rowHeight,
    nodeWidth,
  };
}
