// @ts-check
// Element builders. Every value that comes from the API reaches the page through these as a text
// node or an attribute set with setAttribute: nothing here parses markup, so a span attribute
// holding `<script>` or `<img onerror>` is shown as the literal text it is.

const SVG_NS = "http://www.w3.org/2000/svg";

/**
 * What h() and s() take besides the tag: attribute values (false, null and undefined leave the
 * attribute out; `class` may be a list with falsy entries), `on<event>` listeners, `dataset`, `style`.
 * @typedef {Record<string, any>} Attrs
 * @typedef {Node | string | number | boolean | null | undefined | any[]} Child  (lists are flattened)
 */

/** @param {Element} el @param {Attrs | undefined} attrs */
function apply(el, attrs) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (key === "dataset") {
      Object.assign(/** @type {HTMLElement} */ (el).dataset, value);
    } else if (key === "style") {
      Object.assign(/** @type {HTMLElement} */ (el).style, value);
    } else if (key === "class") {
      el.setAttribute("class", Array.isArray(value) ? value.filter(Boolean).join(" ") : value);
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
}

/** @param {Element} el @param {Child[]} children */
function append(el, children) {
  for (const child of /** @type {Child[]} */ (children.flat(Infinity))) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/**
 * An HTML element: h("a", {href: "/x", class: "link"}, "text", otherNode).
 * @template {keyof HTMLElementTagNameMap} K
 * @param {K} tag
 * @param {Attrs} [attrs]
 * @param {...Child} children
 * @returns {HTMLElementTagNameMap[K]}
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  apply(el, attrs);
  append(el, children);
  return el;
}

/**
 * An SVG element, same calling convention as h().
 * @template {keyof SVGElementTagNameMap} K
 * @param {K} tag
 * @param {Attrs} [attrs]
 * @param {...Child} children
 * @returns {SVGElementTagNameMap[K]}
 */
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  apply(el, attrs);
  append(el, children);
  return el;
}

/**
 * Replace all children of `el` with `children`.
 * @template {Element} E
 * @param {E} el
 * @param {...Child} children
 * @returns {E}
 */
export function mount(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/**
 * Offer `text` as a file download without a server round trip.
 * @param {string} filename @param {string} text
 */
export function saveText(filename, text, type = "application/json") {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = h("a", { href: url, download: filename });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}
