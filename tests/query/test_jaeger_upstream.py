"""Jaeger's own tests for the routes its UI calls, restated as data (tests/query/upstream/*.json,
upstream file, test name and commit beside each case) and run against a real store and a real
query server over HTTP: api_v3 gateway snapshots, the api_v3 and SPM parameter tables, trace id
spellings, and the OTLP -> UI JSON transform fixture."""

from __future__ import annotations

import datetime
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
import requests

from meshtrace.model import otlp_json
from meshtrace.query.params import ParamError
from meshtrace.query.uiparams import parse_metrics, parse_trace_id_any, parse_v3_search
from tests.query.conftest import RunningQuery, serve_query

UPSTREAM = Path(__file__).resolve().parent / "upstream"
APIV3 = json.loads((UPSTREAM / "jaeger_apiv3.json").read_text())
V1 = json.loads((UPSTREAM / "jaeger_v1.json").read_text())
NOW = time.time_ns()
TIMES = {"$MIN": NOW - 3600 * 10**9, "$MAX": NOW}


def _rfc3339(ns: int) -> str:
    moment = datetime.datetime.fromtimestamp(ns // 10**9, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{ns % 10**9:09d}Z"


def _params(row: dict[str, str]) -> dict[str, list[str]]:
    return {k: [_rfc3339(TIMES[v]) if v in TIMES else v] for k, v in row.items()}


def _ids(rows: list[dict[str, Any]]) -> list[str]:
    return [row["name"] for row in rows]


@pytest.fixture
def empty_query(tmp_path: Path) -> Any:
    with serve_query(tmp_path / "traces.db") as running:
        yield running


def _store(running: RunningQuery, document: dict[str, Any] | None) -> None:
    if document is not None:
        running.store.write(otlp_json.request_from_json(document).SerializeToString()).result(10)


@pytest.mark.parametrize("case", APIV3["gateway"], ids=_ids(APIV3["gateway"]))
def test_gateway_snapshot(empty_query: RunningQuery, case: dict[str, Any]) -> None:
    _store(empty_query, case["store"])
    response = requests.get(empty_query.url + case["path"], params=case["params"], timeout=10)
    assert response.status_code == case["status"], response.text
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json() == case["body"]


@pytest.mark.parametrize("row", APIV3["trace_ids"], ids=_ids(APIV3["trace_ids"]))
def test_trace_id_spellings(row: dict[str, Any]) -> None:
    if row["trace_id"] is None:
        with pytest.raises(ParamError, match="malformed parameter trace_id"):
            parse_trace_id_any(row["input"])
    else:
        assert parse_trace_id_any(row["input"]).hex() == row["trace_id"]


@pytest.mark.parametrize("row", APIV3["get_trace_errors"], ids=_ids(APIV3["get_trace_errors"]))
def test_get_trace_malformed_input(query_api: RunningQuery, row: dict[str, Any]) -> None:
    response = requests.get(query_api.url + row["path"], timeout=10)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["httpCode"] == 400 and row["error"] in error["message"]


@pytest.mark.parametrize("row", APIV3["parse_find_traces"], ids=_ids(APIV3["parse_find_traces"]))
def test_parse_find_traces(row: dict[str, Any]) -> None:
    query = parse_v3_search(_params(row["params"]))
    assert (query.start_min_ns, query.start_max_ns) == (TIMES["$MIN"], TIMES["$MAX"])
    for field, want in row["want"].items():
        assert getattr(query, field) == want, field


@pytest.mark.parametrize(
    "row", APIV3["parse_find_traces_errors"], ids=_ids(APIV3["parse_find_traces_errors"])
)
def test_parse_find_traces_errors(query_api: RunningQuery, row: dict[str, Any]) -> None:
    with pytest.raises(ParamError) as caught:
        parse_v3_search(_params(row["params"]))
    assert row["error"] in str(caught.value)
    # and the same over HTTP, for both search routes
    for path in ("/api/v3/traces", "/api/v3/trace-summaries"):
        params = {k: v[0] for k, v in _params(row["params"]).items()}
        response = requests.get(query_api.url + path, params=params, timeout=10)
        assert response.status_code == 400
        assert row["error"] in response.json()["error"]["message"]


def test_transform_fixture(query_api: RunningQuery) -> None:
    """POST /api/transform on upstream's otlp2jaeger-in.json gives otlp2jaeger-out.json, except
    the documented differences: tag order, `flags` present (Jaeger leaves a zero out) and
    `total` counting the traces (Jaeger leaves it 0)."""
    fixture = V1["transform"]
    response = requests.post(query_api.url + "/api/transform", json=fixture["input"], timeout=10)
    assert response.status_code == 200, response.text
    got, want = response.json(), fixture["output"]
    assert set(got) == set(want)
    assert (got["limit"], got["offset"], got["errors"]) == (0, 0, None)
    assert got["total"] == len(got["data"])

    def canonical(trace: dict[str, Any]) -> dict[str, Any]:
        spans = []
        for span in trace["spans"]:
            span = {k: v for k, v in span.items() if k != "flags"}
            span["tags"] = sorted(span["tags"], key=lambda t: t["key"])
            spans.append(span)
        return {**trace, "spans": spans}

    assert [canonical(t) for t in got["data"]] == [canonical(t) for t in want["data"]]


@pytest.mark.parametrize("row", V1["metrics_errors"], ids=_ids(V1["metrics_errors"]))
def test_metrics_parameter_errors(query_api: RunningQuery, row: dict[str, Any]) -> None:
    response = requests.get(query_api.url + row["path"], timeout=10)
    assert response.status_code == 400
    (error,) = response.json()["errors"]
    assert error["code"] == 400 and row["error"] in error["msg"]


@pytest.mark.parametrize("row", V1["metrics_group_by_operation"], ids=lambda r: r["input"])
def test_metrics_group_by_operation_booleans(row: dict[str, Any]) -> None:
    query = parse_metrics({"service": ["foo"], "groupByOperation": [row["input"]]})
    assert query.group_by_operation is row["want"]


@pytest.mark.parametrize("row", V1["metrics_params"], ids=_ids(V1["metrics_params"]))
def test_metrics_parameters(row: dict[str, Any]) -> None:
    query = parse_metrics(parse_qs(row["query"], keep_blank_values=True))
    for field, want in row["want"].items():
        got = getattr(query, field)
        assert (list(got) if isinstance(got, tuple) else got) == want, field
