"""Jaeger's api_v3 over HTTP (`/api/v3/...`): services, operations, traces (OTLP/JSON) and the
trace summaries today's Jaeger UI searches with. Shapes as Jaeger's HTTP gateway writes them
(jaegerquery `internal/apiv3/http_gateway.go`, proto3 JSON: camelCase names, 64-bit integers as
strings, zero values left out); parameters in `uiparams`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from meshtrace.model import otlp_json
from meshtrace.model.jaeger import SPAN_KIND_NAMES
from meshtrace.query import params, uiparams
from meshtrace.query.archive import stored_or_archived
from meshtrace.query.routing import Runner, StoreSource, json_response, multi_params, v3_error
from meshtrace.store import SpanStore, TraceQuery
from meshtrace.store.summaries import TraceSummary


def find_trace_ids(store: SpanStore, query: TraceQuery) -> list[bytes]:
    """The store's search; with no service, every service's search merged, newest trace first."""
    if query.service:
        return store.find_trace_ids(query)
    found: dict[bytes, None] = {}
    for service in store.services():  # bounded: at most `limit` ids per service
        found.update(dict.fromkeys(store.find_trace_ids(replace(query, service=service))))
    if len(found) <= 1:
        return list(found)
    starts = {tid: s.min_start_ns for tid, s in store.trace_summaries(list(found)).items()}
    return sorted(found, key=lambda tid: starts.get(tid, 0), reverse=True)[: query.limit]


def summary_json(summary: TraceSummary) -> dict[str, Any]:
    """api_v3's TraceSummary in proto3 JSON (zero counts and empty names are left out)."""
    services = []
    for service in summary.services:
        item: dict[str, Any] = {"name": service.name, "spanCount": service.span_count}
        if service.error_span_count:
            item["errorSpanCount"] = service.error_span_count
        services.append(item)
    out: dict[str, Any] = {
        "traceId": summary.trace_id.hex(),
        "rootServiceName": summary.root_service,
        "rootOperationName": summary.root_operation,
        "minStartTimeUnixNano": str(summary.min_start_ns),
        "maxEndTimeUnixNano": str(summary.max_end_ns),
        "spanCount": summary.span_count,
        "errorSpanCount": summary.error_span_count,
        "orphanSpanCount": summary.orphan_span_count,
        "services": services,
    }
    return {k: v for k, v in out.items() if v not in ("", 0)}


class ApiV3:
    def __init__(self, store: StoreSource, run: Runner[Any]) -> None:
        self._store = store
        self._run = run

    def register(self, router: web.UrlDispatcher) -> None:
        router.add_get("/api/v3/services", self.services)
        router.add_get("/api/v3/operations", self.operations)
        router.add_get("/api/v3/traces", self.find_traces)
        router.add_get("/api/v3/trace-summaries", self.find_trace_summaries)
        router.add_get("/api/v3/traces/{trace_id}", self.get_trace)

    async def services(self, request: web.Request) -> web.Response:
        return json_response({"services": await self._run(lambda: self._store().services())})

    async def operations(self, request: web.Request) -> web.Response:
        service = request.query.get("service", "")
        kind_text = uiparams.param(multi_params(request), uiparams.SPAN_KIND)[0]
        kind = params.span_kind_filter(kind_text.strip())  # blank: any kind
        ops = await self._run(lambda: self._store().operations(service, kind)) if service else []
        # Jaeger names an operation of unspecified kind "internal"
        data = [{"name": o.name, "spanKind": SPAN_KIND_NAMES.get(o.kind, "internal")} for o in ops]
        return json_response({"operations": data})

    async def get_trace(self, request: web.Request) -> web.Response:
        trace_id = uiparams.parse_trace_id_any(request.match_info["trace_id"])
        uiparams.check_v3_get_trace(multi_params(request))
        found = await self._run(lambda: stored_or_archived(self._store(), trace_id))
        if found is None:
            return v3_error(404, "No traces found")  # Jaeger's words for an unknown id too
        return json_response(await self._run(lambda: {"result": otlp_json.request_to_json(found)}))

    async def find_traces(self, request: web.Request) -> web.Response:
        query = uiparams.parse_v3_search(multi_params(request))

        def run() -> dict[str, Any] | None:
            store = self._store()
            found = store.get_traces(find_trace_ids(store, query))
            if not found:
                return None
            merged = ExportTraceServiceRequest()
            for part in found.values():
                merged.resource_spans.extend(part.resource_spans)
            return {"result": otlp_json.request_to_json(merged)}

        body = await self._run(run)
        if body is None:  # Jaeger answers an empty search with 404
            return v3_error(404, "No traces found")
        return json_response(body)

    async def find_trace_summaries(self, request: web.Request) -> web.Response:
        query = uiparams.parse_v3_search(multi_params(request))

        def run() -> dict[str, Any]:
            store = self._store()
            ids = find_trace_ids(store, query)
            found = store.trace_summaries(ids)
            summaries = [summary_json(found[tid]) for tid in ids if tid in found]
            return {"summaries": summaries} if summaries else {}  # proto3 JSON leaves out empty lists

        return json_response(await self._run(run))
