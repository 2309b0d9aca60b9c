"""Every query parameter of every query API route is range-checked: out-of-range values are a 400
naming the parameter, in the API's error shape (issue 10, finding 10), and a fuzz over all routes
and parameters against the real server never gets a 5xx."""

from __future__ import annotations

import json
import string
import time
import urllib.parse
from typing import Any

import pytest
import requests
from fuzzing import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshtrace.query.server import QueryServer
from meshtrace.store import TraceStore
from meshtrace.store.synthetic import BACKEND, mesh_traces

V3_WINDOW = {"query.start_time_min": "2026-01-01T00:00:00Z", "query.start_time_max": "2026-01-02T00:00:00Z"}


@pytest.fixture(scope="module")
def api(query_api: Any) -> str:
    """The query server over a store holding a few traces, so searches reach the store."""
    query_api.store.write(mesh_traces(6, time.time_ns() - 60 * 10**9, 10**9, seed=3).SerializeToString())
    assert query_api.store.flush(10)
    return str(query_api.url)


def _v1_error(response: requests.Response) -> str:
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["data"] is None and len(body["errors"]) == 1
    assert body["errors"][0]["code"] == response.status_code
    return str(body["errors"][0]["msg"])


@pytest.mark.parametrize(
    ("path", "params", "name"),
    [
        ("/api/dependencies", {"endTs": "1" + "0" * 30}, "'endTs'"),
        ("/api/dependencies", {"endTs": "-1"}, "'endTs'"),
        ("/api/dependencies", {"lookback": "9" * 25}, "'lookback'"),
        ("/api/traces", {"service": BACKEND, "end": "1" + "0" * 30}, "'end'"),
        ("/api/traces", {"service": BACKEND, "start": "-" + "9" * 20}, "'start'"),
        ("/api/traces", {"service": BACKEND, "minDuration": "9999999999999h"}, "'minDuration'"),
        ("/api/traces", {"service": BACKEND, "maxDuration": "9" * 400 + "s"}, "'maxDuration'"),
        ("/api/traces", {"service": BACKEND, "tags": "[" * 1200 + "]" * 1200}, "'tags'"),
        ("/api/traces", {"service": BACKEND, "tags": '{"k": ' + "9" * 5000 + "}"}, "'tags'"),
    ],
)
def test_v1_out_of_range_is_a_400_naming_the_parameter(
    api: str, path: str, params: dict[str, str], name: str
) -> None:
    response = requests.get(api + path, params=params, timeout=10)
    assert response.status_code == 400, response.text
    assert name in _v1_error(response)


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"query.start_time_max": "9999-12-31T23:59:59Z"}, "query.start_time_max"),
        ({"query.start_time_min": "0001-01-01T00:00:00+23:59"}, "query.start_time_min"),
        ({"query.start_time_min": "1969-12-31T23:59:59Z"}, "query.start_time_min"),
        ({"query.duration_min": "9999999999999h"}, "query.duration_min"),
        ({"query.duration_max": "9" * 400 + "ms"}, "query.duration_max"),
        ({"query.attributes": '{"k": ' + "9" * 5000 + "}"}, "query.attributes"),
    ],
)
def test_v3_out_of_range_is_a_400_naming_the_parameter(api: str, params: dict[str, str], name: str) -> None:
    response = requests.get(
        api + "/api/v3/traces", params={"query.service_name": BACKEND, **V3_WINDOW, **params}, timeout=10
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["httpCode"] == 400 and name in error["message"]


def test_the_edges_of_the_range_are_accepted(api: str) -> None:
    max_us = (2**63 - 1) // 1000
    for path, params in [
        ("/api/traces", {"service": BACKEND, "start": "0", "end": str(max_us), "maxDuration": "2562047h"}),
        ("/api/dependencies", {"endTs": str(max_us // 1000), "lookback": str(max_us // 1000)}),
        ("/api/dependencies", {"endTs": "0", "lookback": "0"}),
        (
            "/api/v3/traces",
            {
                "query.service_name": BACKEND,
                "query.start_time_min": "1970-01-01T00:00:00Z",
                "query.start_time_max": "2262-04-11T23:47:16.854775807Z",
            },
        ),
    ]:
        response = requests.get(api + path, params=params, timeout=10)
        assert response.status_code == 200, (path, params, response.text)


def test_an_unknown_route_with_a_line_break_is_a_404(api: str) -> None:
    """The path is echoed in the body, not in the status line (a CR there was a 500; found by the fuzz)."""
    response = requests.get(api + "/api/services/%0D%7B/operations", timeout=10)
    assert response.status_code == 404
    assert "no route GET /api/services/\r{/operations" in _v1_error(response)


# --- the fuzz -----------------------------------------------------------------------------------

SEARCH = [
    "service",
    "operation",
    "tags",
    "tag",
    "minDuration",
    "maxDuration",
    "start",
    "end",
    "limit",
    "traceID",
]
V3_SEARCH = [
    "query.service_name",
    "query.operation_name",
    "query.start_time_min",
    "query.start_time_max",
    "query.duration_min",
    "query.duration_max",
    "query.num_traces",
    "query.search_depth",
    "query.attributes",
    "query.serviceName",
    "query.operationName",
    "query.startTimeMin",
    "query.startTimeMax",
    "query.durationMin",
    "query.durationMax",
    "query.searchDepth",
    "query.rawTraces",
    "query.filter",
]
SPM = ["service", "groupByOperation", "spanKind", "endTs", "lookback", "step", "ratePer", "quantile"]
ROUTE_PARAMETERS = {  # what each route reads; a route not listed is fuzzed with all of them
    "/api/operations": ["service", "spanKind"],
    "/api/traces": SEARCH,
    "/api/traces/{trace_id}": ["format"],
    "/api/export/{trace_id}": ["format"],
    "/api/dependencies": ["endTs", "lookback", "service", "withErrors"],
    "/api/v3/operations": ["service", "span_kind", "spanKind"],
    "/api/v3/traces": V3_SEARCH,
    "/api/v3/trace-summaries": V3_SEARCH,
    "/api/v3/traces/{trace_id}": ["startTime", "endTime", "rawTraces"],
    "/api/metrics/latencies": SPM,
    "/api/metrics/calls": SPM,
    "/api/metrics/errors": SPM,
}
PARAMETERS = sorted({name for names in ROUTE_PARAMETERS.values() for name in names})


def _query_routes() -> list[str]:
    """Every GET route of the query API, path variables as `{name}` (read from the app itself, so a
    new route is fuzzed too)."""

    def no_store() -> TraceStore:
        raise AssertionError("only the routes are read")

    server = QueryServer(no_store)
    routes = {
        r.resource.canonical
        for r in server.app.router.routes()
        if r.method == "GET" and r.resource is not None and r.resource.canonical.startswith("/api/")
    }
    return sorted(routes)


ROUTES = _query_routes()
numbers = st.one_of(
    st.integers(min_value=-(10**40), max_value=10**40),
    st.sampled_from([0, -1, 2**63 - 1, 2**63, 2**64, -(2**63) - 1]),
).map(str)
floats = st.floats(allow_nan=True, allow_infinity=True).map(repr)
durations = st.builds(
    lambda n, unit: f"{n}{unit}",
    st.one_of(st.integers(min_value=0, max_value=10**30), st.floats(min_value=0, allow_infinity=True)),
    st.sampled_from(["ns", "us", "µs", "ms", "s", "m", "h", "d", ""]),
)
dates = st.builds(
    lambda y, mo, d, h, fraction, zone: f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:00:00{fraction}{zone}",
    st.integers(min_value=0, max_value=9999),
    st.integers(min_value=0, max_value=13),
    st.integers(min_value=0, max_value=32),
    st.integers(min_value=0, max_value=25),
    st.sampled_from(["", ".5", ".123456789", ".0000000001"]),
    st.sampled_from(["Z", "+00:00", "-23:59", "+23:59", "+99:99", ""]),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
).map(json.dumps)
hex_ids = st.text(alphabet=string.hexdigits + "xg-", max_size=40)
raw_bytes = st.binary(max_size=20).map(lambda b: urllib.parse.quote_from_bytes(b, safe=""))
texts = st.text(max_size=30).map(lambda t: urllib.parse.quote(t, safe=""))
values = st.one_of(
    numbers, floats, durations, dates, json_values.map(urllib.parse.quote), hex_ids, raw_bytes, texts
)
quoted = st.one_of(numbers, floats, durations, dates, hex_ids).map(lambda v: urllib.parse.quote(v, safe=""))


@pytest.mark.parametrize("route", ROUTES)
@settings(
    max_examples=examples(100), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    path_value=st.one_of(quoted, raw_bytes, texts),
    data=st.data(),
    with_service=st.booleans(),
)
def test_fuzz_never_a_5xx(
    api: str, route: str, path_value: str, data: st.DataObject, with_service: bool
) -> None:
    names = st.sampled_from(ROUTE_PARAMETERS.get(route, PARAMETERS)) | st.text(max_size=8)
    query = data.draw(st.lists(st.tuples(names, st.one_of(values, quoted)), max_size=5), label="query")
    path = route
    while "{" in path:  # every path variable
        start, end = path.index("{"), path.index("}")
        path = path[:start] + (path_value or "x") + path[end + 1 :]
    pairs = [(urllib.parse.quote(k, safe=""), v) for k, v in query]
    if with_service:  # reach past the required-parameter checks
        pairs += [("service", BACKEND), ("query.service_name", BACKEND)]
        pairs += [(k, urllib.parse.quote(v)) for k, v in V3_WINDOW.items() if k not in dict(query)]
    url = api + path + "?" + "&".join(f"{k}={v}" for k, v in pairs)
    response = requests.get(url, timeout=30)
    assert response.status_code < 500, (url, response.status_code, response.text[:500])
