// @ts-check
// Entry point: client-side routing over real URLs (/search?..., /trace/<id>, /dependencies) so
// every view is a deep link, plus the header's trace-id lookup and import upload.

import * as api from "./api.js";
import { renderDependencies } from "./deps.js";
import { h, mount } from "./dom.js";
import { renderSearch } from "./search.js";
import { renderTrace } from "./trace.js";

/** An element of the page shell (index.html holds them all). @param {string} id */
function shell(id) {
  const el = document.getElementById(id);
  if (!el) throw new Error(`index.html has no #${id}`);
  return el;
}

const view = shell("view");
const lookupId = /** @type {HTMLInputElement} */ (shell("lookup-id"));
const upload = /** @type {HTMLInputElement} */ (shell("upload"));
const toast = shell("toast");
/** @type {{focusFind?: () => void} | null} */
let current = null; // what the rendered view offers the global keys (e.g. focusFind)
let renderSeq = 0;
/** @type {ReturnType<typeof setTimeout> | undefined} */
let toastTimer;

/** @param {string} text @param {"info" | "ok" | "error"} [kind] */
function notify(text, kind = "info") {
  mount(toast, h("span", { class: `toast-${kind}` }, text));
  toast.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { toast.hidden = true; }, 8000);
}

/** @param {string} url @param {{replace?: boolean}} [options] */
export function navigate(url, { replace = false } = {}) {
  if (replace) history.replaceState(null, "", url);
  else history.pushState(null, "", url);
  render();
}

async function render() {
  const seq = ++renderSeq;
  const { pathname, search } = window.location;
  const q = new URLSearchParams(search);
  for (const a of document.querySelectorAll("nav.main a")) {
    if (!(a instanceof HTMLAnchorElement)) continue;
    a.classList.toggle("active", pathname.startsWith(a.pathname) || (pathname === "/" && a.dataset.home === ""));
  }
  current = null;
  const target = h("div", { class: "view-inner" });
  mount(view, target);
  const traceMatch = pathname.match(/^\/trace\/([^/]+)\/?$/);
  let result;
  if (traceMatch) result = await renderTrace(target, decodeURIComponent(traceMatch[1]), q);
  else if (pathname.startsWith("/dependencies")) result = await renderDependencies(target, q, navigate);
  else result = await renderSearch(target, q, navigate);
  if (seq === renderSeq) current = result || null;
}

// Same-origin links marked data-nav change the route without reloading; modified clicks
// (new tab, new window) keep the browser's behaviour.
document.addEventListener("click", (e) => {
  const a = /** @type {Element} */ (e.target).closest("a[data-nav][href]");
  if (!a || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  e.preventDefault();
  navigate(/** @type {string} */ (a.getAttribute("href")));
});

window.addEventListener("popstate", render);

document.addEventListener("keydown", (e) => {
  const typing = /** @type {Element} */ (e.target).closest("input, textarea, select");
  if (e.key === "/" && !typing) {
    e.preventDefault();
    if (current && current.focusFind) current.focusFind();
    else lookupId.focus();
  }
});

shell("lookup").addEventListener("submit", (e) => {
  e.preventDefault();
  const ids = lookupId.value.trim().toLowerCase().split(/[\s,]+/).filter(Boolean);
  const bad = ids.find((id) => !/^[0-9a-f]{1,32}$/.test(id));
  if (!ids.length || bad !== undefined) {
    notify(`trace id: "${bad ?? ""}" is not 1 to 32 hex digits`, "error");
    return;
  }
  lookupId.value = "";
  // One id opens the trace; several list them side by side as search results.
  if (ids.length === 1) navigate(`/trace/${ids[0]}`);
  else navigate(`/search?${ids.map((id) => `traceID=${id}`).join("&")}`);
});

shell("upload-button").addEventListener("click", () => upload.click());
upload.addEventListener("change", async () => {
  const file = upload.files?.[0];
  if (!file) return;
  notify(`Importing ${file.name}…`);
  try {
    const result = (await api.importFile(file)) || {};
    const ids = result.traceIDs || result.traces || [];
    const spans = result.spans ?? result.spanCount;
    const stored = result.alreadyStored || 0;  // spans of the file the store already held: skipped
    const plural = (/** @type {number} */ n, /** @type {string} */ word) => `${n} ${word}${n === 1 ? "" : "s"}`;
    notify(`Imported ${file.name}` + (spans !== undefined ? `: ${plural(spans, "new span")}` : "") +
      (stored ? `, ${stored} already stored` : "") +
      (ids.length ? ` in ${plural(ids.length, "trace")}` : ""), "ok");
    if (ids.length === 1) navigate(`/trace/${ids[0]}`);
    else render();
  } catch (err) {
    notify(`Import of ${file.name} failed: ${api.errorMessage(err)}`, "error");
  } finally {
    upload.value = "";
  }
});

render();
