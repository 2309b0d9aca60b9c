"""The query HTTP server: Jaeger's v1 JSON API, api_v3 (OTLP/JSON), import/export and the web UI's
static files on one port (docs/query-api.md). A thin shell: parsing is in `params`/`importer`,
conversion in `meshtrace.model.jaeger`/`otlp_json`, data in `meshtrace.store`.

Store reads and JSON encoding run in a small thread pool, so a large trace or a slow search never
blocks the event loop that also runs the collector's receivers.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from meshtrace import csrf
from meshtrace.httpbody import BodyError, read_body
from meshtrace.model import otlp_json
from meshtrace.model.jaeger import (
    SPAN_KIND_NAMES,
    parse_trace_id,
    to_jaeger_traces,
    trace_id_to_hex,
)
from meshtrace.model.validate import refuse_invalid
from meshtrace.query import apiv3, archive, params, spm
from meshtrace.query.importer import parse_import
from meshtrace.query.jaeger_ui import JaegerUi
from meshtrace.query.routing import StoreSource, envelope, error_response, pretty_print, v3_error
from meshtrace.query.routing import json_response as _json
from meshtrace.query.routing import multi_params as _multi
from meshtrace.store import StoreError, StoreFullError

T = TypeVar("T")

UI_DIR = Path(__file__).resolve().parent / "ui"
MAX_IMPORT_BYTES = 64 << 20
_STATIC_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".map": "application/json",
}
# The UI is plain files of our own: no inline script may run (a span attribute rendered by a bug
# in the UI still cannot execute).
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


def api_error(request: web.Request, status: int, message: str) -> web.Response:
    """An error in the shape of the API the request went to: api_v3's or Jaeger v1's envelope."""
    if request.path.startswith("/api/v3/"):
        return v3_error(status, message)
    return error_response(status, message)


class QueryServer:
    """The aiohttp application over a store. `store` is called per request, so the server can be
    built before the store exporter exists (the collector starts extensions first)."""

    def __init__(
        self, store: StoreSource, ui_dir: Path = UI_DIR, workers: int = 4, jaeger_ui: Path | None = None
    ) -> None:
        self._store = store
        self.ui_dir = ui_dir
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="meshtrace-query")
        # One import at a time, its body read only once its turn comes: concurrent uploads cost
        # one body's memory (MAX_IMPORT_BYTES decompressed), not one each.
        self._importing = asyncio.Semaphore(1)
        self.app = web.Application(middlewares=[pretty_print, self._errors, csrf.middleware(api_error)])
        r = self.app.router
        r.add_get("/api/services", self.services)
        r.add_get("/api/services/{service}/operations", self.service_operations)
        r.add_get("/api/operations", self.operations)
        r.add_get("/api/traces", self.search)
        r.add_get("/api/traces/{trace_id}", self.trace)
        r.add_get("/api/export/{trace_id}", self.export)
        r.add_get("/api/dependencies", self.dependencies)
        r.add_post("/api/import", self.import_)
        for routes in (apiv3.ApiV3, spm.MetricsRoutes, archive.ArchiveRoutes):
            routes(store, self._run).register(r)
        r.add_route("*", "/api/{tail:.*}", self.api_not_found)
        if jaeger_ui is not None:  # a Jaeger UI build in place of meshtrace's own UI
            JaegerUi(jaeger_ui).register(r)
            return
        r.add_get("/static/{name:.*}", self.static)  # any depth: names with "/" are refused
        r.add_get("/{tail:.*}", self.index)

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    @web.middleware
    async def _errors(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            response = await handler(request)
        except params.ParamError as exc:
            response = api_error(request, 400, str(exc))
        except web.HTTPException as exc:
            if not request.path.startswith("/api/"):
                raise
            response = api_error(request, exc.status, exc.reason)
        except StoreError as exc:
            response = api_error(request, 500, str(exc))
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response

    # --- Jaeger v1 ----------------------------------------------------------------------------
    async def services(self, request: web.Request) -> web.Response:
        names = await self._run(lambda: self._store().services())
        return _json(envelope(names))

    async def service_operations(self, request: web.Request) -> web.Response:
        service = request.match_info["service"]
        ops = await self._run(lambda: self._store().operations(service))
        names = sorted({op.name for op in ops})
        return _json(envelope(names))

    async def operations(self, request: web.Request) -> web.Response:
        service = request.query.get("service", "")
        if not service:
            raise params.ParamError("parameter 'service' is required")
        kind = params.span_kind_filter(request.query.get("spanKind", ""))
        ops = await self._run(lambda: self._store().operations(service, kind))
        data = [{"name": op.name, "spanKind": SPAN_KIND_NAMES.get(op.kind, "")} for op in ops]
        return _json(envelope(data))

    async def search(self, request: web.Request) -> web.Response:
        parsed = params.parse_search(_multi(request), time.time_ns())

        def run() -> dict[str, Any]:
            store = self._store()
            ids = store.find_trace_ids(parsed.query) if parsed.query is not None else parsed.trace_ids
            found = archive.stored_or_archived_many(store, ids)
            traces = [t for tid in ids if tid in found for t in to_jaeger_traces(found[tid])]
            body = envelope(traces)
            missing = [tid for tid in ids if tid not in found]
            if missing:
                body["errors"] = [
                    {"code": 404, "msg": "trace not found", "traceID": trace_id_to_hex(tid)}
                    for tid in missing
                ]
            return body

        return _json(await self._run(run))

    def _trace_id(self, request: web.Request) -> bytes:
        text = request.match_info["trace_id"]
        try:
            return parse_trace_id(text)
        except ValueError as exc:
            raise params.ParamError(str(exc)) from None

    async def _get(self, trace_id: bytes) -> ExportTraceServiceRequest:
        found = await self._run(lambda: archive.stored_or_archived(self._store(), trace_id))
        if found is None:
            raise web.HTTPNotFound(reason="trace not found")
        return found

    async def trace(self, request: web.Request) -> web.Response:
        trace_id = self._trace_id(request)
        fmt = request.query.get("format", "jaeger")
        if fmt not in ("jaeger", "otlp"):
            raise params.ParamError(f"unable to parse param 'format': {fmt!r} is not jaeger or otlp")
        found = await self._get(trace_id)
        if fmt == "otlp":
            return _json(await self._run(lambda: otlp_json.request_to_json(found)))
        return _json(await self._run(lambda: envelope(to_jaeger_traces(found))))

    async def export(self, request: web.Request) -> web.Response:
        trace_id = self._trace_id(request)
        fmt = request.query.get("format", "otlp")
        if fmt not in ("jaeger", "otlp"):
            raise params.ParamError(f"unable to parse param 'format': {fmt!r} is not jaeger or otlp")
        found = await self._get(trace_id)
        name = f"trace-{trace_id_to_hex(trace_id)}.{fmt}.json"
        headers = {"Content-Disposition": f'attachment; filename="{name}"'}
        if fmt == "otlp":  # one line of the file exporter's format, so it imports back
            body = await self._run(lambda: otlp_json.dumps(found) + b"\n")
            return web.Response(body=body, content_type="application/json", headers=headers)
        return _json(await self._run(lambda: {"data": to_jaeger_traces(found)}), headers=headers)

    async def dependencies(self, request: web.Request) -> web.Response:
        end_ns, lookback_ns = params.parse_dependencies(_multi(request), int(time.time() * 1000))
        service = request.query.get("service", "")
        with_errors = request.query.get("withErrors", "").lower() in ("1", "true")
        links = await self._run(lambda: self._store().dependencies(end_ns, lookback_ns))
        data = []
        for link in links:
            if service and service not in (link.parent, link.child):
                continue
            item: dict[str, Any] = {"parent": link.parent, "child": link.child, "callCount": link.call_count}
            if with_errors:
                item["errorCount"] = link.error_count
            data.append(item)
        return _json(envelope(data))

    async def import_(self, request: web.Request) -> web.Response:
        async with self._importing:
            return await self._import(request)

    async def _import(self, request: web.Request) -> web.Response:
        try:
            body = await read_body(request, MAX_IMPORT_BYTES)
        except BodyError as exc:
            return error_response(exc.status, f"cannot import: {exc}")

        def run() -> dict[str, Any]:
            try:
                imported = parse_import(body)
                refused = refuse_invalid(imported)
            except ValueError as exc:
                raise params.ParamError(f"cannot import: {exc}") from None
            if refused.spans:  # a file is imported whole or not at all
                raise params.ParamError(f"cannot import: {refused.message}")
            trace_ids = {
                span.trace_id: None
                for rs in imported.resource_spans
                for ss in rs.scope_spans
                for span in ss.spans
            }
            spans = sum(len(ss.spans) for rs in imported.resource_spans for ss in rs.scope_spans)
            if not spans:
                raise params.ParamError("cannot import: the file holds no spans")
            store = self._store()
            # Imports run one at a time, so what is stored now is what the write will skip (a
            # span the collector receives meanwhile is still stored once).
            new = store.new_span_count(imported)
            payload = imported.SerializeToString()
            deadline = time.monotonic() + 30
            while True:  # wait for the writer to make room, as the store exporter does
                try:
                    committed = store.write(payload)
                    break
                except StoreFullError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            try:
                dropped = committed.result(timeout=60)
            except TimeoutError:
                raise StoreError("the store did not write the import within 60s") from None
            return envelope(
                {
                    "spans": max(new - dropped, 0),
                    "alreadyStored": spans - new,
                    "traces": [trace_id_to_hex(t) for t in trace_ids],
                }
            )

        try:
            return _json(await self._run(run))
        except StoreFullError as exc:
            return error_response(503, str(exc))

    # --- the rest -----------------------------------------------------------------------------
    async def api_not_found(self, request: web.Request) -> web.Response:
        # the path goes in the body, never the status line (it may hold a decoded CR or LF)
        return api_error(request, 404, f"no route {request.method} {request.path}")

    async def static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        path = self.ui_dir / name
        if not _STATIC_NAME.match(name) or not path.is_file():
            raise web.HTTPNotFound()
        return self._file(path)

    async def index(self, request: web.Request) -> web.StreamResponse:
        path = self.ui_dir / "index.html"
        if not path.is_file():
            raise web.HTTPNotFound(text="the web UI is not installed (meshtrace/query/ui/index.html)")
        return self._file(path)

    def _file(self, path: Path) -> web.StreamResponse:
        content_type = CONTENT_TYPES.get(path.suffix, "application/octet-stream")
        return web.Response(
            body=path.read_bytes(),
            headers={
                "Content-Type": content_type,
                "Cache-Control": "no-cache",
                "Content-Security-Policy": CSP,
            },
        )
