"""Cross-site request forgery guard for the HTTP servers that change state (the query API's
`/api/import`, the control plane's POSTs, and the Origin rule alone on the Zipkin receiver).

Any web page can make a browser send a "simple" cross-origin POST (a form, or `fetch` in `no-cors`
mode with a `text/plain` body) to a loopback port without asking first. Two rules refuse it:
- a request that changes state (any method but GET, HEAD, OPTIONS) carrying an `Origin` header
  must come from this server's own origin (the Origin's host and port equal the `Host` header):
  403. Browsers send `Origin` on every such request; tools (curl, the sidecars) send none;
- a request body must be `Content-Type: application/json`: 415. A browser sends that type
  cross-origin only after a CORS preflight, which these servers never grant.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
JSON = "application/json"

ErrorResponse = Callable[[web.Request, int, str], web.StreamResponse]


def _authority(origin: str) -> str | None:
    """`host[:port]` of a serialized origin (`scheme://host[:port]`); None for `null` or garbage."""
    scheme, sep, authority = origin.strip().partition("://")
    if not sep or not scheme or not authority or "/" in authority:
        return None
    return authority.lower()


def _shown(text: str) -> str:
    """A client's header value, quoted, short and ASCII, for an error message."""
    return repr(text[:200].encode("ascii", "backslashreplace").decode())


def refusal(
    method: str, origin: str | None, host: str, has_body: bool, content_type: str | None
) -> tuple[int, str] | None:
    """(status, message) when the request must be refused, else None (sans-IO).
    `content_type` is the media type without parameters, None when the header is absent."""
    if method.upper() in SAFE_METHODS:
        return None
    if origin is not None and _authority(origin) != host.lower():
        return (
            403,
            f"cross-origin request refused: Origin {_shown(origin)} is not this server ({_shown(host)})",
        )
    if has_body and content_type != JSON:
        got = "none" if content_type is None else _shown(content_type)
        return 415, f"Content-Type must be {JSON} (got {got})"
    return None


def middleware(error: ErrorResponse, require_json: bool = True) -> Middleware:
    """An aiohttp middleware applying `refusal`; `error` shapes the refusal as the server's errors.
    `require_json=False` applies the Origin rule alone, for a receiver whose wire format is not
    JSON-typed (Zipkin reporters send JSON under other types)."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        content_type = request.content_type if "Content-Type" in request.headers else None
        refused = refusal(
            request.method,
            request.headers.get("Origin"),
            request.host,
            request.body_exists and require_json,
            content_type,
        )
        if refused is not None:
            return error(request, *refused)
        return await handler(request)

    return guard
