"""`POST /api/import` refuses what a web page on another origin can make a browser send (issue 10,
finding 9): a body that is not `application/json` (415) and a foreign `Origin` (403); nothing is
stored. Same-origin requests (the web UI) and requests without an Origin (curl) still import."""

from __future__ import annotations

import random
import time
from typing import Any

import pytest
import requests

from meshtrace.model import otlp_json
from meshtrace.store.synthetic import mesh_trace


def _trace(seed: int) -> tuple[bytes, str]:
    request = mesh_trace(time.time_ns() - 10**9, random.Random(seed))
    return otlp_json.dumps(request), request.resource_spans[0].scope_spans[0].spans[0].trace_id.hex()


def _stored(url: str, trace_id: str) -> bool:
    return requests.get(f"{url}/api/traces/{trace_id}", timeout=10).status_code == 200


def _refused(response: requests.Response, status: int, needle: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["data"] is None and body["errors"][0]["code"] == status
    assert needle in body["errors"][0]["msg"]


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
        None,
    ],
)
def test_a_body_that_is_not_json_is_a_415(query_api: Any, content_type: str | None) -> None:
    body, trace_id = _trace(1)
    headers = {} if content_type is None else {"Content-Type": content_type}
    # requests adds no Content-Type to a bytes body
    response = requests.post(f"{query_api.url}/api/import", data=body, headers=headers, timeout=10)
    _refused(response, 415, "Content-Type must be application/json")
    assert not _stored(query_api.url, trace_id)


@pytest.mark.parametrize(
    "origin",
    ["http://evil.example", "null", "http://127.0.0.1", "http://127.0.0.1:1", "https://attacker.test:443"],
)
def test_a_foreign_origin_is_a_403(query_api: Any, origin: str) -> None:
    body, trace_id = _trace(2)
    headers = {"Content-Type": "application/json", "Origin": origin}
    response = requests.post(f"{query_api.url}/api/import", data=body, headers=headers, timeout=10)
    _refused(response, 403, "cross-origin request refused")
    assert not _stored(query_api.url, trace_id)


@pytest.mark.parametrize("origin", [None, "same"])
def test_same_origin_and_tools_import(query_api: Any, origin: str | None) -> None:
    body, trace_id = _trace(3 if origin else 4)
    headers = {"Content-Type": "application/json; charset=utf-8"}
    if origin:
        headers["Origin"] = query_api.url  # what the web UI's upload sends
    response = requests.post(f"{query_api.url}/api/import", data=body, headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["data"]["traces"] == [trace_id]
    assert _stored(query_api.url, trace_id)


def test_v3_routes_answer_refusals_in_v3_shape(query_api: Any) -> None:
    response = requests.post(
        f"{query_api.url}/api/v3/traces", data=b"x", headers={"Origin": "null"}, timeout=10
    )
    assert response.status_code == 403
    assert response.json()["error"]["httpCode"] == 403
