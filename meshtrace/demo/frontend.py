"""The seed's frontend (cmd/frontend/main.go): `/` -> handleRoot; `/api/data` -> handleData ->
callBackend -> GET BACKEND_URL/api/users. Spans and attributes as the seed, under current
semantic-convention names.

    POD_IP=127.0.0.1 PORT=8081 BACKEND_URL=http://127.0.0.1:8080 python -m meshtrace.demo.frontend

Outbound requests honour HTTP_PROXY/NO_PROXY (`meshtrace up` points HTTP_PROXY at the pod's
sidecar, which resolves `backend`), carry the trace context (instrumentation + propagators) and
forward the inbound request's x-request-id (Istio requires apps to). With BACKEND_GRPC set
(`host:port`), `/api/data` also calls the backend's gRPC API (`users_api`), traced the same way.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import grpc
from aiohttp import web
from opentelemetry import trace
from opentelemetry.semconv.attributes.http_attributes import HTTP_REQUEST_METHOD, HTTP_RESPONSE_STATUS_CODE
from opentelemetry.semconv.attributes.url_attributes import URL_FULL
from opentelemetry.trace import Status, StatusCode
from yarl import URL

from meshtrace.demo import faults, service, users_api
from meshtrace.sdk import forwarded_headers, http_client_attributes, record_error
from meshtrace.sdk.grpc import unary_call

tracer = trace.get_tracer("frontend")
SESSION = web.AppKey("session", aiohttp.ClientSession)
BACKEND = web.AppKey("backend", URL)
GRPC_CHANNEL = web.AppKey("grpc_channel", grpc.aio.Channel)
DEFAULT_BACKEND_URL = "http://backend:8080"
BACKEND_TIMEOUT_S = 10.0
# The seed keeps the whole response in an attribute; cap it so a large answer cannot bloat spans.
MAX_RESPONSE_ATTRIBUTE = 256


class BackendError(Exception):
    """The backend could not be reached or did not answer 2xx."""


def backend_url(env: Mapping[str, str]) -> URL:
    raw = env.get("BACKEND_URL", "").strip() or DEFAULT_BACKEND_URL
    url = URL(raw)
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"BACKEND_URL={raw!r}: expected an http:// or https:// URL")
    return url


async def handle_root(request: web.Request) -> web.Response:
    with tracer.start_as_current_span("handleRoot") as span:
        span.set_attributes({HTTP_REQUEST_METHOD: request.method, URL_FULL: str(request.url)})
        text = f"Frontend service - Request from {request.remote}\n"
        span.set_status(Status(StatusCode.OK))
        return web.Response(text=text)


async def call_backend(request: web.Request, url: URL) -> Any:
    with tracer.start_as_current_span(
        "callBackend", record_exception=False, set_status_on_exception=False
    ) as span:
        span.set_attributes(http_client_attributes("GET", str(url)))
        try:
            async with request.app[SESSION].get(url, headers=forwarded_headers(request.headers)) as response:
                body = await response.text()
                span.set_attribute(HTTP_RESPONSE_STATUS_CODE, response.status)
                if response.status >= 400:
                    raise BackendError(f"backend answered {response.status}: {body[:200].strip()}")
            data = json.loads(body)
        except BackendError as err:
            record_error(span, err)
            raise
        except (TimeoutError, aiohttp.ClientError, ValueError) as err:
            # The original error on this span (its type says what failed), a BackendError upwards.
            record_error(span, err)
            raise BackendError(f"{type(err).__name__}: {err}") from err
        span.set_status(Status(StatusCode.OK))
        return data


async def call_backend_grpc(request: web.Request, channel: grpc.aio.Channel) -> dict[str, object]:
    """`meshtrace.demo.Users/Count` on the backend's gRPC API (the CLIENT span is the SDK's)."""
    metadata = tuple(forwarded_headers(request.headers).items())
    try:
        # wait_for_ready: while the channel reconnects (a restarted sidecar), wait within the
        # timeout as the HTTP client's connect would, instead of failing at once
        answer = await unary_call(
            channel,
            users_api.SERVICE,
            users_api.COUNT,
            users_api.encode({}),
            BACKEND_TIMEOUT_S,
            metadata,
            True,
        )
        return users_api.decode(answer)
    except grpc.aio.AioRpcError as err:
        raise BackendError(f"gRPC {err.code().name}: {err.details()}") from err
    except ValueError as err:
        raise BackendError(f"gRPC answer: {err}") from err


async def handle_data(request: web.Request) -> web.Response:
    with tracer.start_as_current_span("handleData") as span:
        span.set_attributes({HTTP_REQUEST_METHOD: request.method, URL_FULL: str(request.url)})
        # Faults are injected in the backend's database; pass the front door's parameters on.
        wanted = {k: request.query[k] for k in faults.PARAMS if k in request.query}
        try:
            faults.decide(wanted, {}, 0.0)  # a bad parameter is the caller's error, not the backend's
        except faults.FaultError as err:
            return web.json_response({"error": str(err)}, status=400)
        # The seed's `backendURL + "/api/users"`: a path prefix in BACKEND_URL is kept.
        url = URL(str(request.app[BACKEND]).rstrip("/") + "/api/users").update_query(wanted)
        answer: dict[str, Any] = {"service": "frontend"}
        channel = request.app.get(GRPC_CHANNEL)
        try:
            data = answer["backend"] = await call_backend(request, url)
            if channel is not None:
                answer["backend_grpc"] = await call_backend_grpc(request, channel)
        except BackendError as err:
            record_error(span, err)
            return web.json_response({"error": str(err)}, status=500)
        span.set_attribute("backend.response", json.dumps(data)[:MAX_RESPONSE_ATTRIBUTE])
        span.set_status(Status(StatusCode.OK))
        return web.json_response(answer)


async def client_session(app: web.Application) -> AsyncIterator[None]:
    # trust_env: HTTP_PROXY/NO_PROXY decide whether requests go through the sidecar.
    timeout = aiohttp.ClientTimeout(total=BACKEND_TIMEOUT_S)
    async with aiohttp.ClientSession(trust_env=True, timeout=timeout) as session:
        app[SESSION] = session
        yield


async def grpc_channel(app: web.Application) -> AsyncIterator[None]:
    # grpcio reads http_proxy / no_grpc_proxy itself: through the sidecar, as a CONNECT
    target = os.environ[users_api.BACKEND_GRPC_ENV].strip()
    # reconnect within a second, not grpcio's default backoff of up to two minutes
    options = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 1000)]
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        app[GRPC_CHANNEL] = channel
        yield


def make_app() -> web.Application:
    app = web.Application()
    app[BACKEND] = backend_url(os.environ)
    app.cleanup_ctx.append(client_session)
    if os.environ.get(users_api.BACKEND_GRPC_ENV, "").strip():
        app.cleanup_ctx.append(grpc_channel)
    app.router.add_get("/", handle_root)
    app.router.add_get("/api/data", handle_data)
    return app


def main() -> int:
    return service.run("frontend", make_app)


if __name__ == "__main__":
    sys.exit(main())
