"""Jaeger UI's archive button and OTLP upload, as Jaeger's v1 handler serves them
(jaegerquery `internal/http_handler.go`):

- `POST /api/archive/{traceID}` copies a stored trace into the store's archive, where retention
  and the size bound never delete it; reading a trace by id falls back to the archive.
- `POST /api/transform` turns an OTLP/JSON document into Jaeger UI trace JSON (the UI's "upload
  OTLP JSON" file picker), without storing anything.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from meshtrace.model import otlp_json
from meshtrace.model.jaeger import to_jaeger_traces
from meshtrace.query.params import ParamError
from meshtrace.query.routing import Runner, StoreSource, envelope, error_response, json_response
from meshtrace.query.uiparams import parse_trace_id_any
from meshtrace.store import SpanStore


def stored_or_archived(store: SpanStore, trace_id: bytes) -> ExportTraceServiceRequest | None:
    """The trace's stored spans, else its archived copy (Jaeger's query service reads the archive
    when the primary storage has no such trace)."""
    return stored_or_archived_many(store, [trace_id]).get(trace_id)


def stored_or_archived_many(
    store: SpanStore, trace_ids: list[bytes]
) -> dict[bytes, ExportTraceServiceRequest]:
    found = store.get_traces(trace_ids)
    for trace_id in trace_ids:
        if trace_id not in found:
            archived = store.get_archived_trace(trace_id)
            if archived is not None:
                found[trace_id] = archived
    return found


def otlp_to_jaeger(body: bytes) -> list[dict[str, Any]]:
    """The Jaeger UI traces of an OTLP/JSON document; ParamError says what is wrong with it."""
    try:
        document = json.loads(body.decode("utf-8-sig"))
    except (UnicodeDecodeError, RecursionError, json.JSONDecodeError) as exc:
        raise ParamError(f"cannot parse the body as OTLP/JSON: {exc}") from None
    if not isinstance(document, dict) or "resourceSpans" not in document:
        raise ParamError("cannot parse the body as OTLP/JSON: expected an object with resourceSpans")
    try:
        return to_jaeger_traces(otlp_json.request_from_json(document))
    except ValueError as exc:
        raise ParamError(f"cannot parse the body as OTLP/JSON: {exc}") from None


class ArchiveRoutes:
    def __init__(self, store: StoreSource, run: Runner[Any]) -> None:
        self._store = store
        self._run = run

    def register(self, router: web.UrlDispatcher) -> None:
        router.add_post("/api/archive/{trace_id}", self.archive)
        router.add_post("/api/transform", self.transform)

    async def archive(self, request: web.Request) -> web.Response:
        trace_id = parse_trace_id_any(request.match_info["trace_id"], "traceID")
        if not await self._run(lambda: self._store().archive_trace(trace_id)):
            return error_response(404, "trace not found")
        # Jaeger's answer: an empty list and no errors
        return json_response({**envelope([]), "errors": []})

    async def transform(self, request: web.Request) -> web.Response:
        body = await request.read()
        return json_response(envelope(await self._run(lambda: otlp_to_jaeger(body))))
