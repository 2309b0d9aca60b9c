"""What the query server and its route modules (`apiv3`, `spm`, `archive`) share: the JSON answers
(Jaeger's v1 envelope, api_v3's error object), `?prettyPrint=true`, and the two handles a route
module is given (the store, and the thread pool that runs store reads and JSON encoding)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web

from meshtrace.store import SpanStore

T = TypeVar("T")
StoreSource = Callable[[], SpanStore]
Runner = Callable[[Callable[[], T]], Awaitable[T]]

# Jaeger's query service indents a prettyPrint answer by four spaces (http_handler.go).
PRETTY_INDENT = 4


def multi_params(request: web.Request) -> dict[str, list[str]]:
    """The query string with every value of a repeated name."""
    out: dict[str, list[str]] = {}
    for key, value in request.query.items():
        out.setdefault(key, []).append(value)
    return out


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
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
    return json_response(
        {"data": None, "total": 0, "limit": 0, "offset": 0, "errors": [{"code": status, "msg": message}]},
        status,
    )


def v3_error(status: int, message: str) -> web.Response:
    return json_response({"error": {"httpCode": status, "message": message}}, status)


def wants_pretty(request: web.Request) -> bool:
    """Jaeger's rule: any `prettyPrint` value but empty or `false` asks for indented JSON."""
    value = request.query.get("prettyPrint", "")
    return value not in ("", "false")


@web.middleware
async def pretty_print(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Re-indent a JSON answer when `?prettyPrint` asks for it (every route, errors included)."""
    response = await handler(request)
    if (
        wants_pretty(request)
        and isinstance(response, web.Response)
        and response.content_type == "application/json"
        and isinstance(response.body, bytes)
    ):
        try:
            document = json.loads(response.body)
        except ValueError:  # one-object-per-line OTLP files stay as they are
            return response
        response.body = json.dumps(document, indent=PRETTY_INDENT, ensure_ascii=False).encode()
    return response
