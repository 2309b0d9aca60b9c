"""The seed's backend (cmd/backend/main.go): `/api/users` -> handleUsers -> queryDatabase, here over
a real SQLite database. Spans and attributes as the seed, under current semantic-convention names.

    POD_IP=127.0.0.1 PORT=8080 python -m meshtrace.demo.backend
"""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
import sys
from pathlib import Path

from aiohttp import web
from opentelemetry import trace
from opentelemetry.semconv.attributes.http_attributes import HTTP_REQUEST_METHOD
from opentelemetry.semconv.attributes.url_attributes import URL_FULL
from opentelemetry.trace import SpanKind, Status, StatusCode

from meshtrace.demo import faults, service
from meshtrace.demo.store import DB_PATH_ENV, SELECT_USERS, TABLE, UserStore, default_path
from meshtrace.sdk import db_attributes, record_error
from meshtrace.sdk.semconv import DB_RESPONSE_RETURNED_ROWS

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
    return app


def main() -> int:
    return service.run("backend", make_app)


if __name__ == "__main__":
    sys.exit(main())
