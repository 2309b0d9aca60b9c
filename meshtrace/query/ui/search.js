// @ts-check
// The search page: the form (its state lives in the URL, so /search?service=... is a deep link),
// the duration-over-time scatter plot and the results list.

import * as api from "./api.js";
import { h, mount, s } from "./dom.js";
import {
  fmtAgo, fmtDuration, fmtTime, isDuration, parseTags, serviceColor, summarize, ticks,
} from "./model.js";

/** @type {[string, string, number][]} */
const LOOKBACKS = [
  ["15m", "Last 15 minutes", 15 * 60],
  ["1h", "Last hour", 3600],
  ["6h", "Last 6 hours", 6 * 3600],
  ["24h", "Last 24 hours", 24 * 3600],
  ["custom", "Custom range", 0],
];
/** @typedef {ReturnType<typeof summarize>} TraceSummary */
/** @type {[string, string, (a: TraceSummary, b: TraceSummary) => number][]} */
const SORTS = [
  ["recent", "Most recent", (a, b) => b.start - a.start],
  ["longest", "Longest first", (a, b) => b.duration - a.duration],
  ["shortest", "Shortest first", (a, b) => a.duration - b.duration],
  ["spans", "Most spans", (a, b) => b.spanCount - a.spanCount],
  ["errors", "Most errors", (a, b) => b.errorCount - a.errorCount],
];
const LAST_SERVICE = "meshtrace.lastService";

/** @typedef {typeof import("./app.js").navigate} Navigate */

/** @param {string} label @param {HTMLElement} control @param {HTMLElement} [hint] */
function field(label, control, hint) {
  return h("label", { class: "field" }, h("span", { class: "field-label" }, label), control, hint);
}

/** @param {string} value @param {string} label @param {boolean} [selected] */
function option(value, label, selected) {
  return h("option", { value, selected: selected || undefined }, label);
}

/** Microseconds as a datetime-local input's value. @param {number} us */
function localInput(us) {
  const d = new Date(us / 1000 - new Date().getTimezoneOffset() * 60_000);
  return d.toISOString().slice(0, 16);
}

/**
 * The API query for the form state in `q` (URLSearchParams), or {error} naming the bad field.
 * @param {URLSearchParams} q
 * @returns {{params: Record<string, string>, error?: undefined} | {params?: undefined, error: string}}
 */
export function apiQuery(q, nowMs = Date.now()) {
  const tags = parseTags(q.get("tags") || "");
  if (!tags.tags) return { error: tags.error };
  if (q.get("errors") === "1") tags.tags.error = "true";
  for (const name of ["minDuration", "maxDuration"]) {
    if (!isDuration(q.get(name) || "")) {
      return { error: `${name}: "${q.get(name)}" is not a duration like 100ms or 1.5s` };
    }
  }
  const lookback = q.get("lookback") || "1h";
  let start;
  let end;
  if (lookback === "custom") {
    start = Date.parse(q.get("start") || "");
    const endText = q.get("end");
    end = endText ? Date.parse(endText) : nowMs;
    if (Number.isNaN(start)) return { error: "start: pick the beginning of the custom range" };
    if (Number.isNaN(end) || end <= start) return { error: "end: must be after start" };
  } else {
    const entry = LOOKBACKS.find(([key]) => key === lookback) || LOOKBACKS[1];
    end = nowMs;
    start = nowMs - entry[2] * 1000;
  }
  const limit = q.get("limit") || "20";
  if (!/^\d+$/.test(limit) || +limit < 1) return { error: `limit: "${limit}" is not a positive number` };
  return {
    params: {
      service: q.get("service") || "",
      operation: q.get("operation") || "",
      tags: Object.keys(tags.tags).length ? JSON.stringify(tags.tags) : "",
      minDuration: q.get("minDuration") || "",
      maxDuration: q.get("maxDuration") || "",
      start: String(Math.floor(start) * 1000),
      end: String(Math.floor(end) * 1000),
      limit,
    },
  };
}

/**
 * The time range: a lookback, or a custom range whose From/To fields show only when chosen.
 * @param {URLSearchParams} q
 */
function timeRange(q) {
  const lookback = h(
    "select", { id: "lookback", name: "lookback" },
    LOOKBACKS.map(([key, label]) => option(key, label, (q.get("lookback") || "1h") === key)),
  );
  const nowUs = Date.now() * 1000;
  const start = h("input", {
    id: "start", name: "start", type: "datetime-local",
    value: q.get("start") || localInput(nowUs - 3600e6),
  });
  const end = h("input", { id: "end", name: "end", type: "datetime-local", value: q.get("end") || localInput(nowUs) });
  const custom = h("div", { class: "custom-range" }, field("From", start), field("To", end));
  const showCustom = () => {
    custom.hidden = lookback.value !== "custom";
  };
  lookback.addEventListener("change", showCustom);
  showCustom();
  return { lookback, custom };
}

/**
 * The service and operation choices: the services load from the API (`ready` settles when both
 * lists are filled), the operations follow the service; errors go to `message`.
 * @param {URLSearchParams} q @param {HTMLElement} message
 */
function serviceChoice(q, message) {
  const service = h("select", { id: "service", name: "service", "aria-label": "Service" });
  const operation = h("select", { id: "operation", name: "operation", "aria-label": "Operation" });
  /** @param {string} selected */
  const loadOperations = async (selected) => {
    mount(operation, option("", "All operations"));
    if (!service.value) return;
    try {
      for (const op of await api.operations(service.value)) operation.append(option(op, op, op === selected));
    } catch (err) {
      message.textContent = `operations: ${api.errorMessage(err)}`;
    }
  };
  service.addEventListener("change", () => {
    localStorage.setItem(LAST_SERVICE, service.value);
    loadOperations("");
  });
  const ready = (async () => {
    /** @type {string[]} */
    let names = [];
    try {
      names = await api.services();
    } catch (err) {
      message.textContent = `services: ${api.errorMessage(err)}`;
    }
    const last = localStorage.getItem(LAST_SERVICE);
    const wanted = q.get("service") || (last !== null && names.includes(last) ? last : names[0] || "");
    // Jaeger's search needs a service; an empty store has none to offer yet.
    mount(service, names.length ? null : option("", "No services yet"), names.map((n) => option(n, n, n === wanted)));
    if (wanted && !names.includes(wanted)) service.append(option(wanted, wanted, true));
    await loadOperations(q.get("operation") || "");
  })();
  return { service, operation, ready };
}

/**
 * The search form; submitting hands the form's query to `onSubmit`. `ready` settles once the
 * service and operation lists are filled.
 * @param {URLSearchParams} q @param {(next: URLSearchParams) => void} onSubmit
 */
function buildForm(q, onSubmit) {
  const message = h("p", { class: "form-error", role: "alert", id: "form-error" });
  const { service, operation, ready } = serviceChoice(q, message);
  const { lookback, custom } = timeRange(q);
  const tags = h("input", {
    id: "tags", name: "tags", type: "text", value: q.get("tags") || "", autocomplete: "off",
    placeholder: "http.status_code=500 error=true", spellcheck: "false",
  });
  const minDuration = h("input", {
    id: "minDuration", name: "minDuration", value: q.get("minDuration") || "", placeholder: "e.g. 100ms",
  });
  const maxDuration = h("input", {
    id: "maxDuration", name: "maxDuration", value: q.get("maxDuration") || "", placeholder: "e.g. 1.5s",
  });
  const limit = h("input", { id: "limit", name: "limit", type: "number", min: "1", max: "1500", value: q.get("limit") || "20" });
  const errors = h("input", { id: "errors", name: "errors", type: "checkbox", value: "1", checked: q.get("errors") === "1" || undefined });
  const form = h(
    "form", { class: "search-form", id: "search-form", "aria-label": "Search traces" },
    h("h2", {}, "Search"),
    field("Service", service),
    field("Operation", operation),
    field("Attributes", tags, h("small", {}, "key=value, space separated; quote values with spaces")),
    h("div", { class: "row2" }, field("Min duration", minDuration), field("Max duration", maxDuration)),
    field("Time range", lookback),
    custom,
    h("div", { class: "row2" }, field("Limit", limit),
      h("label", { class: "check" }, errors, h("span", {}, "Errors only"))),
    message,
    h("button", { type: "submit", class: "primary", id: "find" }, "Find traces"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const next = new URLSearchParams();
    for (const [k, v] of new FormData(form)) {
      if (v === "" || ((k === "start" || k === "end") && lookback.value !== "custom")) continue;
      next.set(k, String(v));
    }
    if (!next.has("service")) next.set("service", "");
    onSubmit(next);
  });
  return { form, message, ready, service };
}

/**
 * The scatter plot: a dot per trace, start time across, duration up.
 * @param {TraceSummary[]} rows @param {(traceID: string) => void} onOpen
 */
function scatter(rows, onOpen) {
  const W = 900;
  const H = 180;
  const M = { left: 56, right: 16, top: 12, bottom: 26 };
  const t0 = Math.min(...rows.map((r) => r.start));
  const t1 = Math.max(...rows.map((r) => r.start));
  const span = Math.max(t1 - t0, 1);
  const maxDur = Math.max(...rows.map((r) => r.duration), 1);
  const yTicks = ticks(maxDur, 4, true);
  const yMax = yTicks[yTicks.length - 1] || maxDur;
  const x = (/** @type {number} */ t) => M.left + (rows.length === 1 ? 0.5 : (t - t0) / span) * (W - M.left - M.right);
  const y = (/** @type {number} */ d) => H - M.bottom - (d / yMax) * (H - M.top - M.bottom);
  const maxSpans = Math.max(...rows.map((r) => r.spanCount), 1);
  const svg = s("svg", {
    class: "scatter", viewBox: `0 0 ${W} ${H}`, role: "group",
    "aria-label": "Trace duration over time; each dot is a trace",
  });
  for (const v of yTicks) {
    svg.append(
      s("line", { class: "grid", x1: M.left, x2: W - M.right, y1: y(v), y2: y(v) }),
      s("text", { class: "axis", x: M.left - 6, y: y(v) + 4, "text-anchor": "end" }, fmtDuration(v)),
    );
  }
  const timeLabel = (/** @type {number} */ t) => fmtTime(t).slice(11, 19);
  svg.append(
    s("text", { class: "axis", x: M.left, y: H - 6 }, timeLabel(t0)),
    s("text", { class: "axis", x: W - M.right, y: H - 6, "text-anchor": "end" }, timeLabel(t1)),
  );
  // Big dots first so small ones stay clickable; error traces last, so they are drawn on top.
  const order = [...rows].sort((a, b) => Number(Boolean(a.errorCount)) - Number(Boolean(b.errorCount)) || b.spanCount - a.spanCount);
  for (const r of order) {
    const label = `${resultTitle(r)} — ${fmtDuration(r.duration)}, ${r.spanCount} spans` +
      (r.errorCount ? `, ${r.errorCount} errors` : "");
    const dot = s(
      "circle",
      {
        class: ["dot", r.errorCount && "error"], cx: x(r.start), cy: y(r.duration),
        r: 4 + 6 * Math.sqrt(r.spanCount / maxSpans), tabindex: "0", role: "link",
        "aria-label": label, "data-trace-id": r.traceID,
        onclick: () => onOpen(r.traceID),
        onkeydown: (/** @type {KeyboardEvent} */ e) => {
          if (e.key === "Enter" || e.key === " ") {
            e.preventDefault();
            onOpen(r.traceID);
          }
        },
      },
      s("title", {}, label),
    );
    dot.style.setProperty("--c", serviceColor(r.service));
    svg.append(dot);
  }
  if (rows.some((r) => r.errorCount)) {
    svg.append(s("g", { class: "legend", "aria-hidden": "true" },
      s("circle", { class: "dot error", cx: W - M.right - 78, cy: M.top + 4, r: 5 }),
      s("text", { class: "axis", x: W - M.right - 68, y: M.top + 8 }, "has errors")));
  }
  return svg;
}

/** Method and path add something unless the operation already names them ("GET /checkout"). */
function showRequest(/** @type {TraceSummary} */ r) {
  if (!r.method && !r.path) return false;
  return !(r.path && r.operation.includes(r.path) && (!r.method || r.operation.includes(r.method)));
}

/** The result's name as text: `service: operation`, then the request's method and path. */
function resultTitle(/** @type {TraceSummary} */ r) {
  const request = showRequest(r) ? [r.method, r.path].filter(Boolean).join(" ") : "";
  return `${r.service}: ${r.operation}` + (request ? ` — ${request}` : "");
}

function serviceChips(/** @type {TraceSummary["services"]} */ services) {
  return h("ul", { class: "chips" }, services.map((svc) => {
    const dot = h("span", { class: "swatch" });
    dot.style.background = serviceColor(svc.name);
    return h("li", { class: "chip", title: `${svc.count} spans` }, dot, svc.name, h("span", { class: "count" }, String(svc.count)));
  }));
}

/** @param {TraceSummary} r @param {number} maxDuration  the longest result's, for the bar */
function resultItem(r, maxDuration) {
  const bar = h("span", { class: "result-bar" });
  bar.style.width = `${Math.max(1, (100 * r.duration) / maxDuration)}%`;
  bar.style.background = serviceColor(r.service);
  const request = showRequest(r)
    ? h("span", { class: "result-request" },
      r.method ? h("span", { class: "method" }, r.method) : null,
      r.path ? h("span", { class: "path" }, r.path) : null)
    : null;
  return h(
    "li", { class: ["result", r.errorCount && "has-errors"], "data-trace-id": r.traceID },
    h("a", { class: "result-link", href: `/trace/${encodeURIComponent(r.traceID)}`, "data-nav": "", title: resultTitle(r) },
      h("span", { class: "result-title" },
        r.errorCount ? h("span", { class: "error-icon", title: "this trace has errors", "aria-label": "has errors" }, "!") : null,
        h("span", { class: "result-service" }, r.service), h("span", { class: "sep" }, ": "),
        h("span", { class: "result-operation" }, r.operation),
        request,
        h("span", { class: "trace-id" }, r.traceID.slice(0, 7))),
      h("span", { class: "result-duration" }, fmtDuration(r.duration))),
    h("div", { class: "result-track" }, bar),
    h("div", { class: "result-meta" },
      h("span", { class: "span-count" }, `${r.spanCount} span${r.spanCount === 1 ? "" : "s"}`),
      r.errorCount ? h("span", { class: "badge error-badge" }, `${r.errorCount} error${r.errorCount === 1 ? "" : "s"}`) : null,
      r.orphanCount
        ? h("span", { class: "badge orphan-badge", title: "Some spans point at a parent that is not in this trace: context was not propagated somewhere." },
          `${r.orphanCount} missing parent${r.orphanCount === 1 ? "" : "s"}`)
        : null,
      serviceChips(r.services),
      h("time", { class: "result-time", datetime: new Date(r.start / 1000).toISOString(), title: fmtTime(r.start) },
        `${fmtTime(r.start).slice(11, 19)} · ${fmtAgo(r.start)}`)),
  );
}

const LIVE = "meshtrace.live";
const LIVE_SECONDS = 5;

/**
 * The landing page of an empty store: say so, and look again in a few seconds (the page is often
 * open before the app sends anything; its traces show once they land).
 * @param {HTMLElement} results @param {(url: string, options?: {replace?: boolean}) => void} navigate
 */
function waitForTraces(results, navigate) {
  mount(results, h("p", { class: "empty", id: "no-traces" },
    "No traces stored yet: send some spans, or upload a file. This page looks again every few seconds."));
  setTimeout(() => {
    if (results.isConnected) navigate("/", { replace: true });
  }, LIVE_SECONDS * 1000);
}

/**
 * Live search: while `live` is checked and the page is shown, `load` again every LIVE_SECONDS;
 * the switch is remembered for the tab. Returns the function that schedules the next load.
 * @param {HTMLElement} results @param {HTMLInputElement} live @param {() => Promise<void>} load
 */
function liveRefresh(results, live, load) {
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  let timer;
  const schedule = () => {
    clearTimeout(timer);
    if (live.checked) timer = setTimeout(tick, LIVE_SECONDS * 1000);
  };
  const tick = async () => {
    if (!results.isConnected || !live.checked) return; // the page was left or live turned off
    await load();
    schedule();
  };
  live.addEventListener("change", () => {
    sessionStorage.setItem(LIVE, live.checked ? "1" : "0");
    schedule();
  });
  return schedule;
}

/**
 * Render the search page into `root` for the URL query `q`; `navigate` changes the route.
 * @param {HTMLElement} root @param {URLSearchParams} q @param {Navigate} navigate
 */
export async function renderSearch(root, q, navigate) {
  const results = h("section", { class: "results", id: "results", "aria-live": "polite" });
  const { form, message, ready, service } = buildForm(q, (next) => navigate(`/search?${next}`));
  mount(root, h("div", { class: "search-page" }, form, results));
  document.title = "Search · meshtrace";
  await ready;
  if (![...q.keys()].length) {
    // The landing page shows the latest traces of the preselected service straight away.
    if (!service.value) {
      waitForTraces(results, navigate);
      return;
    }
    q = new URLSearchParams({ service: service.value });
  }
  const ids = q.getAll("traceID");
  const first = ids.length ? null : apiQuery(q);
  if (first && first.error !== undefined) {
    message.textContent = first.error;
    mount(results);
    return;
  }
  // Kept across refreshes, so the chosen order and the live switch survive them.
  const sortKey = h("select", { id: "sort", "aria-label": "Sort results" }, SORTS.map(([k, label]) => option(k, label)));
  const live = h("input", { id: "live", type: "checkbox", checked: sessionStorage.getItem(LIVE) === "1" || undefined });
  const liveLabel = h("label", { class: "check live", title: `Search again every ${LIVE_SECONDS} s` }, live, h("span", {}, "Live"));
  const list = h("ol", { class: "result-list", id: "result-list" });
  /** @type {TraceSummary[]} */
  let rows = [];
  const fill = () => {
    const cmp = (SORTS.find(([k]) => k === sortKey.value) ?? SORTS[0])[2];
    const maxDuration = Math.max(...rows.map((r) => r.duration), 1);
    mount(list, [...rows].sort(cmp).map((r) => resultItem(r, maxDuration)));
  };
  sortKey.addEventListener("change", fill);

  const load = async () => {
    let traces;
    /** @type {string[]} */
    let missing = [];
    try {
      if (ids.length) {
        ({ traces, missing } = await api.tracesById(ids));
      } else {
        // A relative time range moves with the clock: recompute it on every refresh.
        const query = apiQuery(q);
        if (query.error !== undefined) throw new Error(query.error);
        traces = await api.searchTraces(query.params);
      }
    } catch (err) {
      message.textContent = api.errorMessage(err);
      if (!rows.length) mount(results); // first load: drop "Searching…"; a refresh keeps what it had
      return;
    }
    message.textContent = "";
    rows = traces.map(summarize);
    fill();
    const head = h("div", { class: "results-head" },
      h("h2", { id: "result-count" }, `${rows.length} trace${rows.length === 1 ? "" : "s"}`),
      h("span", { class: "results-tools" }, liveLabel, sortKey));
    mount(results,
      missing.length ? h("p", { class: "banner warn", id: "missing-ids" }, `Not found: ${missing.join(", ")}`) : null,
      rows.length ? scatter(rows, (id) => navigate(`/trace/${encodeURIComponent(id)}`)) : null,
      head,
      rows.length ? list : h("p", { class: "empty" }, "No traces found. Widen the time range or remove filters."));
  };

  const schedule = liveRefresh(results, live, load);
  mount(results, h("p", { class: "loading" }, "Searching…"));
  await load();
  schedule();
}
