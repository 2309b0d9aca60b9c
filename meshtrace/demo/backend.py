"""The seed's backend (cmd/backend/main.go): `/api/users` -> handleUsers -> queryDatabase, here over
a real SQLite database. Spans and attributes as the seed, under current semantic-convention names.
With GRPC_PORT set it also serves the gRPC API of `users_api` (meshtrace's addition: a gRPC hop).

    POD_IP=127.0.0.1 PORT=8080 python -m meshtrace.demo.backend
"""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
from aiohttp import web
from opentelemetry import trace
from opentelemetry.semconv.attributes.http_attributes import HTTP_REQUEST_METHOD
from opentelemetry.semconv.attributes.url_attributes import URL_FULL
from opentelemetry.trace import SpanKind, Status, StatusCode

from meshtrace import ready
from meshtrace.demo import faults, service, users_api
from meshtrace.demo.store import DB_PATH_ENV, SELECT_USERS, TABLE, UserStore, default_path
from meshtrace.sdk import db_attributes, record_error
from meshtrace.sdk.grpc import generic_service
from meshtrace.sdk.semconv import DB_RESPONSE_RETURNED_ROWS
from meshtrace.sdk.settings import parse_bounded

tracer = trace.get_tracer("backend")
STORE = web.AppKey("store", UserStore)


async def query_database(store: UserStore, wanted: faults.Faults) -> list[str]:
    attributes = db_attributes(
        "sqlite", "SELECT", collection=TABLE, query_text=SELECT_USERS, namespace=store.path.name
    )
    # A database call is a CLIENT span (semantic conventions); the name is the seed's.
    with tracer.start_as_current_span(
        "queryDatabase",
        kind=SpanKind.CLIENT,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            users = await asyncio.to_thread(store.select_users, wanted)
        except sqlite3.Error as err:
            record_error(span, err)
            raise
        span.set_attribute(DB_RESPONSE_RETURNED_ROWS, len(users))
        span.set_status(Status(StatusCode.OK))
        return users


async def handle_users(request: web.Request) -> web.Response:
    with tracer.start_as_current_span("handleUsers") as span:
        span.set_attributes({HTTP_REQUEST_METHOD: request.method, URL_FULL: str(request.url)})
        try:
            wanted = faults.decide(request.query, os.environ, random.random())
        except faults.FaultError as err:
            return web.json_response({"error": str(err)}, status=400)
        try:
            users = await query_database(request.app[STORE], wanted)
        except sqlite3.Error as err:
            record_error(span, err)
            return web.json_response({"error": str(err)}, status=500)
        span.set_attribute("users.count", len(users))
        span.set_status(Status(StatusCode.OK))
        return web.json_response({"users": users})


def users_service(store: UserStore) -> grpc.GenericRpcHandler:
    """`meshtrace.demo.Users/Count` over the same database (the SERVER span is the SDK's)."""

    async def count(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        try:
            users_api.decode(request)
            users = await asyncio.to_thread(store.select_users, faults.Faults())
        except ValueError as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        except sqlite3.Error as err:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(err))
        return users_api.encode({"count": len(users)})

    return generic_service(users_api.SERVICE, {users_api.COUNT: count})


def grpc_server(store: UserStore, host: str, port: int) -> Callable[[web.Application], AsyncIterator[None]]:
    """The gRPC API's server, started and stopped with the HTTP app (before its ready line)."""

    async def run(app: web.Application) -> AsyncIterator[None]:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((users_service(store),))
        bound = server.add_insecure_port(f"{host}:{port}")
        if not bound:
            raise OSError(f"cannot listen on {host}:{port} for gRPC")
        await server.start()
        ready.announce("backend-grpc", host, bound)
        yield
        await server.stop(grace=1.0)

    return run


def make_app() -> web.Application:
    raw = os.environ.get(DB_PATH_ENV, "").strip()
    path = Path(raw) if raw else default_path()
    try:
        store = UserStore(path)
    except (OSError, sqlite3.Error) as err:
        raise ValueError(f"{DB_PATH_ENV}={str(path)!r}: cannot open the database: {err}") from None
    app = web.Application()
    app[STORE] = store
    app.router.add_get("/api/users", handle_users)
    grpc_port = os.environ.get(users_api.GRPC_PORT_ENV, "").strip()
    if grpc_port:
        port = parse_bounded(users_api.GRPC_PORT_ENV, grpc_port, int, 0, 65535, "a port number", ValueError)
        app.cleanup_ctx.append(grpc_server(store, service.listen_address(os.environ).host, port))
    return app


def main() -> int:
    return service.run("backend", make_app)


if __name__ == "__main__":
    sys.exit(main())
