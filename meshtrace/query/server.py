"""The query HTTP server: Jaeger's v1 JSON API, api_v3 (OTLP/JSON), import/export and the web UI's
static files on one port (docs/query-api.md). A thin shell: parsing is in `params`/`importer`,
conversion in `meshtrace.model.jaeger`/`otlp_json`, data in `meshtrace.store`.

Store reads and JSON encoding run in a small thread pool, so a large trace or a slow search never
blocks the event loop that also runs the collector's receivers.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from meshtrace.httpbody import BodyError, read_body
from meshtrace.model import otlp_json
from meshtrace.model.jaeger import (
    SPAN_KIND_BY_NAME,
    SPAN_KIND_NAMES,
    parse_trace_id,
    to_jaeger_traces,
    trace_id_to_hex,
)
from meshtrace.query import params
from meshtrace.query.importer import parse_import
from meshtrace.store import StoreError, StoreFullError, TraceStore

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

StoreSource = Callable[[], TraceStore]


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode(),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def envelope(data: Any, total: int | None = None) -> dict[str, Any]:
    """Jaeger's structuredResponse."""
    if total is None:
        total = len(data) if isinstance(data, list) else 0
    return {"data": data, "total": total, "limit": 0, "offset": 0, "errors": None}


def error_response(status: int, message: str) -> web.Response:
    return _json(
        {"data": None, "total": 0, "limit": 0, "offset": 0, "errors": [{"code": status, "msg": message}]},
        status,
    )


def v3_error(status: int, message: str) -> web.Response:
    return _json({"error": {"httpCode": status, "message": message}}, status)


class QueryServer:
    """The aiohttp application over a store. `store` is called per request, so the server can be
    built before the store exporter exists (the collector starts extensions first)."""

    def __init__(self, store: StoreSource, ui_dir: Path = UI_DIR, workers: int = 4) -> None:
        self._store = store
        self.ui_dir = ui_dir
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="meshtrace-query")
        # One import at a time, its body read only once its turn comes: concurrent uploads cost
        # one body's memory (MAX_IMPORT_BYTES decompressed), not one each.
        self._importing = asyncio.Semaphore(1)
        self.app = web.Application(middlewares=[self._errors])
        r = self.app.router
        r.add_get("/api/services", self.services)
        r.add_get("/api/services/{service}/operations", self.service_operations)
        r.add_get("/api/operations", self.operations)
        r.add_get("/api/traces", self.search)
        r.add_get("/api/traces/{trace_id}", self.trace)
        r.add_get("/api/export/{trace_id}", self.export)
        r.add_get("/api/dependencies", self.dependencies)
        r.add_post("/api/import", self.import_)
        r.add_get("/api/v3/services", self.v3_services)
        r.add_get("/api/v3/operations", self.v3_operations)
        r.add_get("/api/v3/traces", self.v3_search)
        r.add_get("/api/v3/traces/{trace_id}", self.v3_trace)
        r.add_route("*", "/api/{tail:.*}", self.api_not_found)
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
        api = request.path.startswith("/api/")
        v3 = request.path.startswith("/api/v3/")
        try:
            response = await handler(request)
        except params.ParamError as exc:
            response = v3_error(400, str(exc)) if v3 else error_response(400, str(exc))
        except web.HTTPException as exc:
            if not api:
                raise
            response = v3_error(exc.status, exc.reason) if v3 else error_response(exc.status, exc.reason)
        except StoreError as exc:
            response = v3_error(500, str(exc)) if v3 else error_response(500, str(exc))
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

    def _kind(self, text: str) -> int | None:
        if not text:
            return None
        return SPAN_KIND_BY_NAME.get(text.strip().lower(), -1)

    async def operations(self, request: web.Request) -> web.Response:
        service = request.query.get("service", "")
        if not service:
            raise params.ParamError("parameter 'service' is required")
        kind = self._kind(request.query.get("spanKind", ""))
        ops = await self._run(lambda: self._store().operations(service, kind))
        data = [{"name": op.name, "spanKind": SPAN_KIND_NAMES.get(op.kind, "")} for op in ops]
        return _json(envelope(data))

    async def search(self, request: web.Request) -> web.Response:
        parsed = params.parse_search(_multi(request), time.time_ns())

        def run() -> dict[str, Any]:
            store = self._store()
            ids = store.find_trace_ids(parsed.query) if parsed.query is not None else parsed.trace_ids
            found = store.get_traces(ids)
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
        found = await self._run(lambda: self._store().get_trace(trace_id))
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
            except ValueError as exc:
                raise params.ParamError(f"cannot import: {exc}") from None
            trace_ids: dict[bytes, None] = {}
            spans = 0
            for rs in imported.resource_spans:
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        if len(span.trace_id) == 16 and any(span.trace_id) and len(span.span_id) == 8:
                            trace_ids[span.trace_id] = None
                            spans += 1
            if not spans:
                raise params.ParamError("cannot import: the file holds no spans")
            store = self._store()
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
                committed.result(timeout=60)
            except TimeoutError:
                raise StoreError("the store did not write the import within 60s") from None
            return envelope({"spans": spans, "traces": [trace_id_to_hex(t) for t in trace_ids]})

        try:
            return _json(await self._run(run))
        except StoreFullError as exc:
            return error_response(503, str(exc))

    # --- api_v3 -------------------------------------------------------------------------------
    async def v3_services(self, request: web.Request) -> web.Response:
        return _json({"services": await self._run(lambda: self._store().services())})

    async def v3_operations(self, request: web.Request) -> web.Response:
        service = request.query.get("service", "")
        kind = self._kind(request.query.get("span_kind", ""))
        ops = await self._run(lambda: self._store().operations(service, kind)) if service else []
        return _json(
            {"operations": [{"name": o.name, "spanKind": SPAN_KIND_NAMES.get(o.kind, "")} for o in ops]}
        )

    async def v3_trace(self, request: web.Request) -> web.Response:
        text = request.match_info["trace_id"]
        try:
            trace_id = parse_trace_id(text)
        except ValueError as exc:
            raise params.ParamError(f"malformed parameter trace_id: {exc}") from None
        found = await self._get(trace_id)
        return _json(await self._run(lambda: {"result": otlp_json.request_to_json(found)}))

    async def v3_search(self, request: web.Request) -> web.Response:
        query = params.parse_v3_search(_multi(request))

        def run() -> dict[str, Any]:
            store = self._store()
            found = store.get_traces(store.find_trace_ids(query))
            merged = ExportTraceServiceRequest()
            for part in found.values():
                merged.resource_spans.extend(part.resource_spans)
            result = otlp_json.request_to_json(merged)
            result.setdefault("resourceSpans", [])
            return {"result": result}

        return _json(await self._run(run))

    # --- the rest -----------------------------------------------------------------------------
    async def api_not_found(self, request: web.Request) -> web.Response:
        raise web.HTTPNotFound(reason=f"no route {request.method} {request.path}")

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


def _multi(request: web.Request) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key, value in request.query.items():
        out.setdefault(key, []).append(value)
    return out
