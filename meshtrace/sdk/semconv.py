"""The seed's best practices (Span 命名规范, 属性添加) as helpers: span names that stay low-cardinality
and attributes under the current semantic-convention names (docs/upstream-behaviour.md §6). The
seed writes the old names (`http.method`, `db.system`, ...); `current_attributes` renames those."""

from __future__ import annotations

import re
from collections.abc import Mapping

from opentelemetry.semconv.attributes.db_attributes import (
    DB_COLLECTION_NAME,
    DB_NAMESPACE,
    DB_OPERATION_NAME,
    DB_QUERY_TEXT,
    DB_SYSTEM_NAME,
)
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.http_attributes import (
    HTTP_REQUEST_METHOD,
    HTTP_RESPONSE_STATUS_CODE,
    HTTP_ROUTE,
)
from opentelemetry.semconv.attributes.server_attributes import SERVER_ADDRESS, SERVER_PORT
from opentelemetry.semconv.attributes.url_attributes import URL_FULL, URL_PATH
from opentelemetry.util.types import AttributeValue

# Not yet stable in the semantic conventions, so not in opentelemetry.semconv.attributes.
DB_RESPONSE_RETURNED_ROWS = "db.response.returned_rows"

# Old name -> current name, for the attributes the seed (and older instrumentation) write.
LEGACY_NAMES: dict[str, str] = {
    "http.method": HTTP_REQUEST_METHOD,
    "http.status_code": HTTP_RESPONSE_STATUS_CODE,
    "http.url": URL_FULL,
    "http.target": URL_PATH,
    "net.peer.name": SERVER_ADDRESS,
    "net.peer.port": SERVER_PORT,
    "db.system": DB_SYSTEM_NAME,
    "db.statement": DB_QUERY_TEXT,
    "db.operation": DB_OPERATION_NAME,
    "db.name": DB_NAMESPACE,
    "db.sql.table": DB_COLLECTION_NAME,
    "db.table": DB_COLLECTION_NAME,
    "db.rows_returned": DB_RESPONSE_RETURNED_ROWS,
    "deployment.environment": "deployment.environment.name",
}

# Names the seed marks as "avoid": they say nothing about the operation.
GENERIC_NAMES = frozenset({"handler", "query", "request", "process", "call", "span", "do", "run", "execute"})
_ID_SEGMENT = re.compile(r"/(\d+|[0-9a-fA-F-]{16,})(?=/|$)")


def http_span_name(method: str, route: str) -> str:
    """`HTTP GET /api/users` (the seed's convention). Pass the ROUTE template, not the path with
    ids in it, so the number of distinct names stays small."""
    return f"HTTP {method.upper()} {route}"


def operation_span_name(component: str, operation: str) -> str:
    """`Database.SelectUsers`, `Cache.Get`: component and operation in UpperCamelCase."""
    return f"{_camel(component)}.{_camel(operation)}"


def _camel(text: str) -> str:
    parts = re.split(r"[^0-9A-Za-z]+", text)
    return "".join(p[:1].upper() + p[1:] for p in parts if p)


def span_name_problems(name: str) -> list[str]:
    """Why a span name breaks the seed's naming rules (empty list when it is fine)."""
    problems = []
    if not name.strip():
        problems.append("empty name")
    elif name.strip().lower() in GENERIC_NAMES:
        problems.append(f"{name!r} is generic: say what is done, e.g. 'Database.SelectUsers'")
    if _ID_SEGMENT.search(name):
        problems.append(f"{name!r} contains an id: use the route template (/api/users/{{id}})")
    return problems


def _present(attributes: dict[str, AttributeValue | None]) -> dict[str, AttributeValue]:
    return {key: value for key, value in attributes.items() if value is not None}


def http_server_attributes(
    method: str, route: str, status_code: int | None = None, url: str | None = None
) -> dict[str, AttributeValue]:
    return _present(
        {
            HTTP_REQUEST_METHOD: method.upper(),
            HTTP_ROUTE: route,
            URL_FULL: url,
            HTTP_RESPONSE_STATUS_CODE: status_code,
        }
    )


def http_client_attributes(
    method: str,
    url: str,
    status_code: int | None = None,
    server_address: str | None = None,
    server_port: int | None = None,
) -> dict[str, AttributeValue]:
    return _present(
        {
            HTTP_REQUEST_METHOD: method.upper(),
            URL_FULL: url,
            SERVER_ADDRESS: server_address,
            SERVER_PORT: server_port,
            HTTP_RESPONSE_STATUS_CODE: status_code,
        }
    )


def db_attributes(
    system: str,
    operation: str,
    collection: str | None = None,
    query_text: str | None = None,
    namespace: str | None = None,
    returned_rows: int | None = None,
) -> dict[str, AttributeValue]:
    return _present(
        {
            DB_SYSTEM_NAME: system,
            DB_OPERATION_NAME: operation,
            DB_COLLECTION_NAME: collection,
            DB_QUERY_TEXT: query_text,
            DB_NAMESPACE: namespace,
            DB_RESPONSE_RETURNED_ROWS: returned_rows,
        }
    )


def error_attributes(error: BaseException) -> dict[str, AttributeValue]:
    return {ERROR_TYPE: type(error).__qualname__}


def current_attributes(attributes: Mapping[str, AttributeValue]) -> dict[str, AttributeValue]:
    """The same attributes under current names; a current name already present wins over an old one."""
    out: dict[str, AttributeValue] = {}
    for key, value in attributes.items():
        new = LEGACY_NAMES.get(key)
        if new is None:
            out[key] = value
        elif new not in attributes:
            out[new] = value
    return out
