"""Span-name and attribute helpers (the seed's best practices, current semantic conventions) and
the context-passing helpers."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from opentelemetry.util.types import AttributeValue

from meshtrace.sdk import (
    current_attributes,
    db_attributes,
    forwarded_headers,
    http_client_attributes,
    http_server_attributes,
    http_span_name,
    operation_span_name,
    record_error,
    span_name_problems,
)


def test_span_names_as_the_seed() -> None:
    assert http_span_name("get", "/api/users") == "HTTP GET /api/users"
    assert operation_span_name("database", "select users") == "Database.SelectUsers"
    assert operation_span_name("cache", "get") == "Cache.Get"


@pytest.mark.parametrize("name", ["handler", "query", "Query", ""])
def test_generic_names_are_problems(name: str) -> None:
    assert span_name_problems(name)


@pytest.mark.parametrize(
    "name", ["GET /api/users/123", "HTTP GET /orders/7f3e2a10-4b6c-4f1d-9a8e-3c2b1a0f9e8d"]
)
def test_names_with_ids_are_problems(name: str) -> None:
    assert any("id" in p for p in span_name_problems(name))


@pytest.mark.parametrize(
    "name", ["HTTP GET /api/users", "Database.SelectUsers", "GET /api/users/{id}", "queryDatabase"]
)
def test_good_names_have_no_problems(name: str) -> None:
    assert span_name_problems(name) == []


def test_attribute_helpers_use_current_names() -> None:
    assert http_server_attributes("get", "/api/users", 200) == {
        "http.request.method": "GET",
        "http.route": "/api/users",
        "http.response.status_code": 200,
    }
    assert http_client_attributes("GET", "http://backend:8080/api/users", 503, "backend", 8080) == {
        "http.request.method": "GET",
        "url.full": "http://backend:8080/api/users",
        "server.address": "backend",
        "server.port": 8080,
        "http.response.status_code": 503,
    }
    assert db_attributes("sqlite", "SELECT", "users", "SELECT name FROM users", returned_rows=3) == {
        "db.system.name": "sqlite",
        "db.operation.name": "SELECT",
        "db.collection.name": "users",
        "db.query.text": "SELECT name FROM users",
        "db.response.returned_rows": 3,
    }


def test_current_attributes_renames_the_seeds_names() -> None:
    seed: dict[str, AttributeValue] = {
        "http.method": "GET",
        "http.url": "/x",
        "db.system": "postgresql",
        "db.table": "users",
        "custom": 1,
    }
    assert current_attributes(seed) == {
        "http.request.method": "GET",
        "url.full": "/x",
        "db.system.name": "postgresql",
        "db.collection.name": "users",
        "custom": 1,
    }
    # A current name present wins over its old spelling.
    assert current_attributes({"http.method": "POST", "http.request.method": "GET"}) == {
        "http.request.method": "GET"
    }


def test_forwarded_headers_copy_x_request_id_only() -> None:
    assert forwarded_headers({"X-Request-Id": "r1", "Cookie": "c", "traceparent": "t"}) == {
        "x-request-id": "r1"
    }
    assert forwarded_headers({}) == {}


def test_record_error_sets_status_event_and_error_type() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("t").start_as_current_span("callBackend") as span:
        record_error(span, ConnectionError("refused"))
    (finished,) = exporter.get_finished_spans()
    assert finished.status.status_code is StatusCode.ERROR and finished.status.description == "refused"
    assert finished.attributes is not None and finished.attributes["error.type"] == "ConnectionError"
    assert [e.name for e in finished.events] == ["exception"]
    provider.shutdown()
