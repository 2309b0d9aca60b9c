// @ts-check
// The query API client: Jaeger's v1 JSON routes (envelope {data, total, limit, offset, errors})
// plus meshtrace's import/export routes (docs/query-api.md).

export class ApiError extends Error {
  /** @param {string} message @param {number} status */
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

/**
 * Jaeger's JSON envelope.
 * @typedef {{data?: any, total?: number, errors?: {msg: string, code?: number, traceID?: string}[] | null}} Envelope
 */

/** The text of a caught error: the server's `msg` for an ApiError. @param {unknown} err */
export function errorMessage(err) {
  return err instanceof Error ? err.message : String(err);
}

/** The body of a Jaeger envelope, or ApiError with its first error. @param {Response} response @returns {Promise<Envelope>} */
async function envelope(response) {
  /** @type {Envelope | null} */
  let body = null;
  try {
    body = await response.json();
  } catch {
    // A proxy's HTML error page or an empty body: fall through to the status text.
  }
  if (!response.ok || (body && body.errors && body.errors.length)) {
    const first = body && body.errors && body.errors[0];
    const msg = first ? first.msg : `${response.status} ${response.statusText}`;
    throw new ApiError(msg, response.status);
  }
  // A 200 that is not JSON (a proxy's or portal's HTML page) would otherwise fail later as
  // "cannot read properties of null".
  if (!body) throw new ApiError(`${response.status} ${response.statusText}: the answer is not JSON`, response.status);
  return body;
}

/** @param {string} path */
async function get(path) {
  return envelope(await fetch(path, { headers: { Accept: "application/json" } }));
}

/** @returns {Promise<string[]>} */
export async function services() {
  return ((await get("/api/services")).data || []).slice().sort();
}

/** @param {string} service @returns {Promise<string[]>} */
export async function operations(service) {
  /** @type {(string | {name: string})[]} */
  const data = (await get(`/api/services/${encodeURIComponent(service)}/operations`)).data || [];
  return data.map((op) => (typeof op === "string" ? op : op.name)).sort();
}

/**
 * Search: `params` holds Jaeger's query parameters, already in API form.
 * @param {Record<string, string | undefined>} params
 * @returns {Promise<import("./model.js").Trace[]>}
 */
export async function searchTraces(params) {
  const query = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== "" && v !== undefined) query.set(k, v);
  return (await get(`/api/traces?${query}`)).data || [];
}

/**
 * Several traces by id (`/api/traces?traceID=a&traceID=b`): the ones found and the ids that were not.
 * @param {string[]} ids
 * @returns {Promise<{traces: import("./model.js").Trace[], missing: string[]}>}
 */
export async function tracesById(ids) {
  const query = new URLSearchParams();
  for (const id of ids) query.append("traceID", id);
  const response = await fetch(`/api/traces?${query}`, { headers: { Accept: "application/json" } });
  /** @type {Envelope | null} */
  const body = await response.json().catch(() => null);
  if (!response.ok || !body) {
    const first = body && body.errors && body.errors[0];
    throw new ApiError(first ? first.msg : `${response.status} ${response.statusText}`, response.status);
  }
  // Unknown ids come back as errors that name them, next to the traces that were found.
  return { traces: body.data || [], missing: (body.errors || []).map((e) => e.traceID || e.msg) };
}

/** @param {string} traceID @returns {Promise<import("./model.js").Trace>} */
export async function trace(traceID) {
  const data = (await get(`/api/traces/${encodeURIComponent(traceID)}`)).data || [];
  if (!data.length) throw new ApiError(`trace ${traceID} not found`, 404);
  return data[0];
}

/**
 * @param {number} endTsMs @param {number} lookbackMs
 * @returns {Promise<import("./graph.js").DependencyLink[]>}
 */
export async function dependencies(endTsMs, lookbackMs) {
  return (await get(`/api/dependencies?endTs=${endTsMs}&lookback=${lookbackMs}&withErrors=true`)).data || [];
}

/** Where the browser downloads a trace in `format`. @param {string} traceID @param {"otlp" | "jaeger"} format */
export function exportUrl(traceID, format) {
  return `/api/export/${encodeURIComponent(traceID)}?format=${format}`;
}

/** Upload a file (OTLP/JSON lines or a Jaeger JSON download) into the store. @param {File} file */
export async function importFile(file) {
  const response = await fetch("/api/import", {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: file,
  });
  return (await envelope(response)).data;
}
