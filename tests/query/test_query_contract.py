"""Contract tests: every route of the query API over real HTTP, shapes checked field by field against
Jaeger's documented JSON (docs/upstream-behaviour.md §5) and api_v3's OTLP/JSON."""

from __future__ import annotations

import datetime
import json
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from meshtrace.model import otlp_json
from meshtrace.model.jaeger import to_jaeger_traces
from meshtrace.store.synthetic import BACKEND, FRONTEND, mesh_trace, mesh_traces
from tests.query.conftest import serve_query

ENVELOPE = {"data", "total", "limit", "offset", "errors"}
TRACE_KEYS = {"traceID", "spans", "processes", "warnings"}
SPAN_KEYS = {
    "traceID",
    "spanID",
    "flags",
    "operationName",
    "references",
    "startTime",
    "duration",
    "tags",
    "logs",
    "processID",
    "warnings",
}
TAG_TYPES = {"string", "bool", "int64", "float64", "binary"}
HEX = re.compile(r"^[0-9a-f]+$")
NOW = time.time_ns()


@dataclass
class Seeded:
    url: str
    ok_id: str
    error_id: str
    short_id: str
    old_id: str
    rich_id: str
    batch_ids: list[str]


def _hex(request: ExportTraceServiceRequest) -> str:
    return request.resource_spans[0].scope_spans[0].spans[0].trace_id.hex()


def _rich_trace() -> ExportTraceServiceRequest:
    """One span with every field the Jaeger mapping covers."""
    request = mesh_trace(NOW - 60 * 10**9, random.Random(77))
    span = request.resource_spans[1].scope_spans[0].spans[0]
    span.status.code = Status.STATUS_CODE_OK
    span.trace_state = "vendor=1"
    span.attributes.add(key="payload", value=AnyValue(bytes_value=b"\x00\x01"))
    span.attributes.add(key="ratio", value=AnyValue(double_value=0.5))
    span.attributes.add(key="flag", value=AnyValue(bool_value=True))
    span.attributes.add(
        key="list",
        value=AnyValue(array_value=ArrayValue(values=[AnyValue(int_value=1), AnyValue(string_value="a")])),
    )
    span.links.add(trace_id=b"\x01" * 16, span_id=b"\x02" * 8)
    event = span.events.add(time_unix_nano=span.start_time_unix_nano + 1000, name="cache miss")
    event.attributes.add(key="key", value=AnyValue(string_value="item-7"))
    return request


@pytest.fixture(scope="module")
def seeded(query_api: Any) -> Seeded:
    store = query_api.store
    rng = random.Random(11)
    ok = mesh_trace(NOW - 5 * 10**9, rng)
    error = mesh_trace(NOW - 4 * 10**9, rng, error=True)
    short = mesh_trace(NOW - 3 * 10**9, rng, trace_id=bytes(8) + b"\x00\x00\x00\x00\x00\x00\x12\x34")
    old = mesh_trace(NOW - 72 * 3600 * 10**9, rng)  # older than the default 48h lookback
    rich = _rich_trace()
    batch = mesh_traces(12, NOW - 600 * 10**9, 10**9, seed=5, error_every=0)
    for request in (ok, error, short, old, rich, batch):
        store.write(request.SerializeToString())
    assert store.flush(10)
    batch_ids = list(dict.fromkeys(rs.scope_spans[0].spans[0].trace_id.hex() for rs in batch.resource_spans))
    return Seeded(query_api.url, _hex(ok), _hex(error), "1234", _hex(old), _hex(rich), batch_ids)


def get(seeded: Seeded, path: str, status: int = 200, /, **params: Any) -> Any:
    response = requests.get(seeded.url + path, params=params, timeout=10)
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    return response.json()


def check_envelope(body: Any) -> Any:
    assert set(body) == ENVELOPE
    assert body["errors"] is None
    assert (body["limit"], body["offset"]) == (0, 0)
    assert body["total"] == len(body["data"])
    return body["data"]


def check_error(body: Any, code: int, needle: str) -> None:
    assert set(body) == ENVELOPE
    assert body["data"] is None
    (err,) = body["errors"]
    assert set(err) == {"code", "msg"}
    assert err["code"] == code
    assert needle in err["msg"]


def check_tag(tag: Any) -> None:
    assert set(tag) == {"key", "type", "value"}
    assert tag["type"] in TAG_TYPES
    expected = {"string": str, "bool": bool, "int64": int, "float64": float, "binary": str}[tag["type"]]
    assert isinstance(tag["value"], expected)


def check_trace(trace: Any) -> None:
    assert set(trace) == TRACE_KEYS
    assert trace["warnings"] is None
    assert HEX.match(trace["traceID"]) and len(trace["traceID"]) in (16, 32)
    assert trace["processes"]
    for pid, process in trace["processes"].items():
        assert re.match(r"^p\d+$", pid)
        assert set(process) == {"serviceName", "tags"}
        assert isinstance(process["serviceName"], str) and process["serviceName"]
        for t in process["tags"]:
            check_tag(t)
    for span in trace["spans"]:
        assert set(span) == SPAN_KEYS
        assert span["traceID"] == trace["traceID"]
        assert HEX.match(span["spanID"]) and len(span["spanID"]) == 16
        assert isinstance(span["flags"], int)
        assert isinstance(span["operationName"], str)
        assert (
            isinstance(span["startTime"], int) and span["startTime"] > 1_500_000_000_000_000
        )  # microseconds
        assert isinstance(span["duration"], int) and span["duration"] >= 0
        assert span["processID"] in trace["processes"]
        assert span["warnings"] is None
        for ref in span["references"]:
            assert set(ref) == {"refType", "traceID", "spanID"}
            assert ref["refType"] in ("CHILD_OF", "FOLLOWS_FROM")
        for t in span["tags"]:
            check_tag(t)
        for log in span["logs"]:
            assert set(log) == {"timestamp", "fields"}
            assert isinstance(log["timestamp"], int)
            for f in log["fields"]:
                check_tag(f)


def tags_of(span: Any) -> dict[str, Any]:
    return {t["key"]: (t["type"], t["value"]) for t in span["tags"]}


# --- v1 -----------------------------------------------------------------------------------------


def test_services(seeded: Seeded) -> None:
    assert check_envelope(get(seeded, "/api/services")) == [BACKEND, FRONTEND]


def test_service_operations_legacy_route(seeded: Seeded) -> None:
    data = check_envelope(get(seeded, f"/api/services/{BACKEND}/operations"))
    assert data == ["SELECT items", "backend.default.svc.cluster.local:8080/*"]
    assert check_envelope(get(seeded, "/api/services/nope/operations")) == []


def test_operations_with_span_kind(seeded: Seeded) -> None:
    data = check_envelope(get(seeded, "/api/operations", service=BACKEND))
    assert all(set(op) == {"name", "spanKind"} for op in data)
    assert {(op["name"], op["spanKind"]) for op in data} == {
        ("SELECT items", "internal"),
        ("backend.default.svc.cluster.local:8080/*", "server"),
    }
    server = check_envelope(get(seeded, "/api/operations", service=BACKEND, spanKind="server"))
    assert [op["name"] for op in server] == ["backend.default.svc.cluster.local:8080/*"]
    check_error(get(seeded, "/api/operations", 400), 400, "parameter 'service' is required")


def test_search_shapes_and_order(seeded: Seeded) -> None:
    data = check_envelope(get(seeded, "/api/traces", service=BACKEND, limit=3))
    assert len(data) == 3
    for trace in data:
        check_trace(trace)
    starts = [min(s["startTime"] for s in t["spans"]) for t in data]
    assert starts == sorted(starts, reverse=True)


def test_search_by_tags_errors_operation_and_duration(seeded: Seeded) -> None:
    errors = check_envelope(get(seeded, "/api/traces", service=BACKEND, tags=json.dumps({"error": "true"})))
    assert [t["traceID"] for t in errors] == [seeded.error_id]
    by_code = get(seeded, "/api/traces", service=FRONTEND, tags='{"http.response.status_code":"500"}')
    assert [t["traceID"] for t in check_envelope(by_code)] == [seeded.error_id]
    by_tag_param = get(seeded, "/api/traces", service=BACKEND, tag="k8s.namespace.name:default", limit=1000)
    assert len(check_envelope(by_tag_param)) == 16  # every trace in the default 48h window
    none = get(seeded, "/api/traces", service=BACKEND, operation="SELECT items", minDuration="10m")
    assert check_envelope(none) == []
    some = get(
        seeded, "/api/traces", service=BACKEND, operation="SELECT items", minDuration="1us", maxDuration="1h"
    )
    assert len(check_envelope(some)) == 16


def test_default_lookback_is_48h_and_start_end_are_microseconds(seeded: Seeded) -> None:
    found = {t["traceID"] for t in check_envelope(get(seeded, "/api/traces", service=BACKEND, limit=1000))}
    assert seeded.old_id not in found and seeded.ok_id in found
    start = (NOW - 73 * 3600 * 10**9) // 1000
    end = (NOW - 71 * 3600 * 10**9) // 1000
    window = check_envelope(get(seeded, "/api/traces", service=BACKEND, start=start, end=end))
    assert [t["traceID"] for t in window] == [seeded.old_id]


def test_search_limits(seeded: Seeded) -> None:
    assert len(check_envelope(get(seeded, "/api/traces", service=BACKEND, limit=2))) == 2
    capped = check_envelope(get(seeded, "/api/traces", service=BACKEND, limit=10**12))
    assert len(capped) == 16
    check_error(get(seeded, "/api/traces", 400, service=BACKEND, limit="many"), 400, "'limit'")


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"service": BACKEND, "minDuration": "abc"}, "unable to parse param 'minDuration'"),
        ({"service": BACKEND, "maxDuration": "10"}, "unable to parse param 'maxDuration'"),
        ({"service": BACKEND, "minDuration": "2s", "maxDuration": "1s"}, "'maxDuration' should be greater"),
        ({"service": BACKEND, "start": "yesterday"}, "unable to parse param 'start'"),
        ({"service": BACKEND, "tags": "{not json"}, "malformed 'tags' parameter"),
        ({"service": BACKEND, "tag": "novalue"}, "malformed 'tag' parameter"),
        ({}, "parameter 'service' is required"),
        ({"traceID": "xyz"}, "cannot parse traceID param"),
    ],
)
def test_search_bad_parameters(seeded: Seeded, params: dict[str, str], needle: str) -> None:
    check_error(get(seeded, "/api/traces", 400, **params), 400, needle)


def test_search_by_trace_ids_reports_missing(seeded: Seeded) -> None:
    response = requests.get(
        seeded.url + "/api/traces", params=[("traceID", seeded.ok_id), ("traceID", "abcdef")], timeout=10
    )
    body = response.json()
    assert [t["traceID"] for t in body["data"]] == [seeded.ok_id]
    assert body["errors"] == [{"code": 404, "msg": "trace not found", "traceID": "0000000000abcdef"}]


def test_trace_by_id_field_by_field(seeded: Seeded) -> None:
    (trace,) = check_envelope(get(seeded, f"/api/traces/{seeded.error_id}"))
    check_trace(trace)
    assert trace["traceID"] == seeded.error_id and len(trace["traceID"]) == 32
    assert {p["serviceName"] for p in trace["processes"].values()} == {FRONTEND, BACKEND}
    for process in trace["processes"].values():
        keys = {t["key"] for t in process["tags"]}
        assert keys == {"k8s.pod.name", "k8s.namespace.name"}  # service.name became serviceName
    by_id = {s["spanID"]: s for s in trace["spans"]}
    roots = [s for s in trace["spans"] if not s["references"]]
    assert len(roots) == 1
    for span in trace["spans"]:
        for ref in span["references"]:
            assert (
                ref["refType"] == "CHILD_OF" and ref["spanID"] in by_id and ref["traceID"] == seeded.error_id
            )
    server = next(
        s for s in trace["spans"] if tags_of(s).get("span.kind") == ("string", "server") and s["references"]
    )
    tags = tags_of(server)
    assert tags["error"] == ("bool", True)
    assert tags["otel.status_code"] == ("string", "ERROR")
    assert tags["otel.status_description"] == ("string", "internal error")
    assert tags["http.response.status_code"] == ("int64", 500)
    assert tags["otel.scope.name"] == ("string", "meshtrace.sidecar")
    (log,) = server["logs"]
    assert log["fields"][0] == {"key": "event", "type": "string", "value": "exception"}
    assert log["timestamp"] > server["startTime"]
    assert trace["processes"][server["processID"]]["serviceName"] == BACKEND


def test_trace_by_id_rich_span(seeded: Seeded) -> None:
    (trace,) = check_envelope(get(seeded, f"/api/traces/{seeded.rich_id}"))
    check_trace(trace)
    span = next(s for s in trace["spans"] if "payload" in tags_of(s))
    tags = tags_of(span)
    assert tags["payload"] == ("binary", "AAE=")
    assert tags["ratio"] == ("float64", 0.5)
    assert tags["flag"] == ("bool", True)
    assert tags["list"] == ("string", '[1,"a"]')
    assert tags["otel.status_code"] == ("string", "OK")
    assert "error" not in tags
    assert tags["w3c.tracestate"] == ("string", "vendor=1")
    assert {"refType": "FOLLOWS_FROM", "traceID": "01" * 16, "spanID": "02" * 8} in span["references"]
    (log,) = span["logs"]
    assert log["fields"] == [
        {"key": "event", "type": "string", "value": "cache miss"},
        {"key": "key", "type": "string", "value": "item-7"},
    ]


def test_short_trace_ids(seeded: Seeded) -> None:
    for spelling in ("1234", "0000000000001234", "00000000000000000000000000001234"):
        (trace,) = check_envelope(get(seeded, f"/api/traces/{spelling}"))
        assert trace["traceID"] == "0000000000001234"
        assert all(s["traceID"] == "0000000000001234" for s in trace["spans"])


def test_trace_by_id_errors(seeded: Seeded) -> None:
    check_error(get(seeded, "/api/traces/not-hex", 400), 400, "hex")
    check_error(get(seeded, "/api/traces/" + "a" * 33, 400), 400, "32")
    check_error(get(seeded, "/api/traces/" + "ab" * 16, 404), 404, "trace not found")


def test_dependencies(seeded: Seeded) -> None:
    now_ms = time.time_ns() // 10**6
    data = check_envelope(get(seeded, "/api/dependencies", endTs=now_ms, lookback=3600 * 1000))
    assert data == [{"parent": FRONTEND, "child": BACKEND, "callCount": 16}]
    with_errors = check_envelope(get(seeded, "/api/dependencies", withErrors="true"))
    assert with_errors == [{"parent": FRONTEND, "child": BACKEND, "callCount": 16, "errorCount": 1}]
    older = check_envelope(
        get(seeded, "/api/dependencies", endTs=now_ms - 70 * 3600 * 1000, lookback=3600 * 10**4)
    )
    assert older == [{"parent": FRONTEND, "child": BACKEND, "callCount": 1}]
    assert check_envelope(get(seeded, "/api/dependencies", service="nope")) == []
    check_error(get(seeded, "/api/dependencies", 400, endTs="soon"), 400, "'endTs'")
    check_error(get(seeded, "/api/dependencies", 400, lookback="-5"), 400, "'lookback'")


def test_unknown_api_route_is_a_404_envelope(seeded: Seeded) -> None:
    check_error(get(seeded, "/api/nothing/here", 404), 404, "no route")


# --- OTLP and export/import ---------------------------------------------------------------------


def test_trace_as_otlp_json(seeded: Seeded) -> None:
    body = get(seeded, f"/api/traces/{seeded.ok_id}", format="otlp")
    request = otlp_json.request_from_json(body)
    spans = [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert len(spans) == 4 and {s.trace_id.hex() for s in spans} == {seeded.ok_id}
    assert body["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["traceId"] == seeded.ok_id  # hex, not base64
    check_error(get(seeded, f"/api/traces/{seeded.ok_id}", 400, format="xml"), 400, "'format'")


def test_export_downloads(seeded: Seeded) -> None:
    response = requests.get(
        f"{seeded.url}/api/export/{seeded.ok_id}", params={"format": "jaeger"}, timeout=10
    )
    assert response.status_code == 200
    assert f'filename="trace-{seeded.ok_id}.jaeger.json"' in response.headers["Content-Disposition"]
    (trace,) = response.json()["data"]
    check_trace(trace)
    response = requests.get(f"{seeded.url}/api/export/{seeded.ok_id}", params={"format": "otlp"}, timeout=10)
    assert "attachment" in response.headers["Content-Disposition"]
    assert response.text.endswith("\n") and response.text.count("\n") == 1
    assert otlp_json.loads(response.text).resource_spans
    assert requests.get(f"{seeded.url}/api/export/{'cd' * 16}", timeout=10).status_code == 404


def _post_import(seeded: Seeded, body: bytes) -> requests.Response:
    return requests.post(
        seeded.url + "/api/import", data=body, headers={"Content-Type": "application/json"}, timeout=30
    )


def _spans(request: ExportTraceServiceRequest) -> dict[bytes, Span]:
    return {s.span_id: s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans}


def test_import_otlp_json_lines_round_trip(seeded: Seeded) -> None:
    rng = random.Random(101)
    first, second = mesh_trace(NOW - 10**9, rng), mesh_trace(NOW - 10**9, rng, error=True)
    body = otlp_json.dumps(first) + b"\n" + otlp_json.dumps(second) + b"\n"
    response = _post_import(seeded, body)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == ENVELOPE and body["errors"] is None
    assert body["data"] == {"spans": 8, "alreadyStored": 0, "traces": [_hex(first), _hex(second)]}
    for sent in (first, second):
        back = otlp_json.request_from_json(get(seeded, f"/api/traces/{_hex(sent)}", format="otlp"))
        assert _spans(back) == _spans(sent)


def _stored_spans(url: str, trace_id: str) -> list[bytes]:
    """Every stored span of a trace (duplicates included), as sorted OTLP Span bytes."""
    response = requests.get(f"{url}/api/traces/{trace_id}", params={"format": "otlp"}, timeout=10)
    assert response.status_code == 200, response.text
    request = otlp_json.request_from_json(response.json())
    return sorted(
        s.SerializeToString() for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans
    )


def _jaeger_spans(url: str, trace_id: str) -> list[str]:
    """A trace's spans in the Jaeger API, service names resolved, as sorted JSON."""
    response = requests.get(f"{url}/api/traces/{trace_id}", timeout=10)
    (trace,) = response.json()["data"]
    names = {pid: p["serviceName"] for pid, p in trace["processes"].items()}
    return sorted(
        json.dumps({**s, "processID": names[s["processID"]], "warnings": None}, sort_keys=True)
        for s in trace["spans"]
    )


@pytest.mark.parametrize("fmt", ["otlp", "jaeger"])
def test_export_import_round_trip_is_idempotent(seeded: Seeded, fmt: str, tmp_path: Path) -> None:
    """A trace exported from one store and imported into another comes back span for span;
    importing it again (or into the store it came from) adds nothing."""
    for trace_id in (seeded.ok_id, seeded.rich_id):
        exported = requests.get(f"{seeded.url}/api/export/{trace_id}", params={"format": fmt}, timeout=10)
        assert exported.status_code == 200
        count = len(_stored_spans(seeded.url, trace_id))
        with serve_query(tmp_path / f"{trace_id}.db") as other:
            answers = [
                requests.post(
                    other.url + "/api/import",
                    data=exported.content,
                    headers={"Content-Type": "application/json"},
                    timeout=30,
                ).json()["data"]
                for _ in range(2)
            ]
            assert answers == [
                {"spans": count, "alreadyStored": 0, "traces": [trace_id]},
                {"spans": 0, "alreadyStored": count, "traces": [trace_id]},
            ]
            if fmt == "otlp":
                assert _stored_spans(other.url, trace_id) == _stored_spans(seeded.url, trace_id)
            else:  # what the Jaeger format carries (it has no scope or resource schema urls)
                assert _jaeger_spans(other.url, trace_id) == _jaeger_spans(seeded.url, trace_id)
        # back into the store it came from: nothing is new
        again = _post_import(seeded, exported.content).json()["data"]
        assert (again["spans"], again["alreadyStored"]) == (0, count)
        assert len(_stored_spans(seeded.url, trace_id)) == count


def test_import_jaeger_download_round_trip(seeded: Seeded) -> None:
    sent = mesh_trace(NOW - 2 * 10**9, random.Random(202), error=True)
    download = {"data": to_jaeger_traces(sent)}
    response = _post_import(seeded, json.dumps(download).encode())
    assert response.status_code == 200, response.text
    assert response.json()["data"]["traces"] == [_hex(sent)]
    (trace,) = check_envelope(get(seeded, f"/api/traces/{_hex(sent)}"))

    def canonical(t: Any) -> Any:
        # tags as a set: an `error=true` attribute and the one synthesised from status Error are
        # the same tag once converted back (Jaeger's own translator does the same)
        names = {pid: p["serviceName"] for pid, p in t["processes"].items()}
        spans = sorted(
            (
                s["spanID"],
                s["operationName"],
                s["startTime"],
                s["duration"],
                json.dumps(s["references"]),
                sorted({json.dumps(x, sort_keys=True) for x in s["tags"]}),
                json.dumps(s["logs"]),
                names[s["processID"]],
            )
            for s in t["spans"]
        )
        return spans

    assert canonical(trace) == canonical(download["data"][0])


def _otlp_span(**fields: str) -> bytes:
    span = {"traceId": "ab" * 16, "spanId": "cd" * 8, "name": "x", "startTimeUnixNano": "1", **fields}
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}).encode()


def _jaeger_span(**fields: Any) -> bytes:
    span = {"traceID": "ab" * 16, "spanID": "cd" * 8, "operationName": "x", "startTime": 1, **fields}
    return json.dumps({"data": [{"spans": [span]}]}).encode()


def test_import_is_whole_or_nothing(seeded: Seeded) -> None:
    good = mesh_trace(NOW - 10**9, random.Random(303))
    bad = mesh_trace(NOW - 10**9, random.Random(304))
    bad.resource_spans[1].scope_spans[0].spans[0].start_time_unix_nano = 2**63
    response = _post_import(seeded, otlp_json.dumps(good) + b"\n" + otlp_json.dumps(bad))
    assert response.status_code == 400
    check_error(response.json(), 400, "spans[0].start_time_unix_nano: 9223372036854775808 is after 2262")
    assert requests.get(f"{seeded.url}/api/traces/{_hex(good)}", timeout=10).status_code == 404


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"", "empty"),
        (b"\xff\xfe\x00garbage", "cannot import"),
        (
            b'{"resourceSpans": []}\n{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}',
            "line 2",
        ),
        (b'{"hello": "world"}', "expected OTLP/JSON"),
        (b'{"data": [{"spans": [{"spanID": "1"}]}]}', "data[0].spans[0]"),
        (b'{"resourceSpans": []}', "no spans"),
        (b"[" * 100_000, "cannot import"),
        # Issue 10: values the store cannot hold are 400 naming the field, never 500.
        (_otlp_span(startTimeUnixNano=str(2**63)), "spans[0].start_time_unix_nano"),
        (_otlp_span(endTimeUnixNano=str(2**64 - 1)), "spans[0].end_time_unix_nano"),
        (_otlp_span(traceId="0" * 32), "spans[0].trace_id"),
        (_otlp_span(spanId=""), "spans[0].span_id"),
        (_jaeger_span(startTime=2**63 // 1000 + 1), "data[0].spans[0].startTime"),
        (_jaeger_span(startTime=-5), "data[0].spans[0].startTime"),
        (_jaeger_span(duration=2**64), "data[0].spans[0].duration"),
        (_jaeger_span(traceID="0"), "trace_id"),
    ],
)
def test_import_bad_files(seeded: Seeded, body: bytes, needle: str) -> None:
    response = _post_import(seeded, body)
    assert response.status_code == 400
    check_error(response.json(), 400, needle)


# --- api_v3 -------------------------------------------------------------------------------------


def _rfc3339(ns: int) -> str:
    moment = datetime.datetime.fromtimestamp(ns // 10**9, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{ns % 10**9:09d}Z"


def test_v3_services_and_operations(seeded: Seeded) -> None:
    assert get(seeded, "/api/v3/services") == {"services": [BACKEND, FRONTEND]}
    ops = get(seeded, "/api/v3/operations", service=BACKEND, span_kind="internal")
    assert ops == {"operations": [{"name": "SELECT items", "spanKind": "internal"}]}


def test_v3_trace_by_id(seeded: Seeded) -> None:
    body = get(seeded, f"/api/v3/traces/{seeded.error_id}")
    assert set(body) == {"result"} and set(body["result"]) == {"resourceSpans"}
    request = otlp_json.request_from_json(body["result"])
    assert len(_spans(request)) == 4
    assert get(seeded, "/api/v3/traces/" + "ab" * 16, 404) == {
        "error": {"httpCode": 404, "message": "No traces found"}
    }
    err = get(seeded, "/api/v3/traces/xyz", 400)["error"]
    assert err["httpCode"] == 400 and "trace_id" in err["message"]


def test_v3_search(seeded: Seeded) -> None:
    params = {
        "query.service_name": BACKEND,
        "query.start_time_min": _rfc3339(NOW - 3600 * 10**9),
        "query.start_time_max": _rfc3339(NOW + 10**9),
    }
    body = get(seeded, "/api/v3/traces", **params)
    ids = {s.trace_id.hex() for s in _spans(otlp_json.request_from_json(body["result"])).values()}
    assert {seeded.ok_id, seeded.error_id, *seeded.batch_ids} <= ids and seeded.old_id not in ids
    errors_only = get(seeded, "/api/v3/traces", **params, **{"query.attributes": '{"error": "true"}'})
    ids = {s.trace_id.hex() for s in _spans(otlp_json.request_from_json(errors_only["result"])).values()}
    assert seeded.error_id in ids and not {seeded.ok_id, *seeded.batch_ids} & ids
    two = get(seeded, "/api/v3/traces", **params, **{"query.num_traces": "2", "query.duration_min": "1ms"})
    assert len({s.trace_id for s in _spans(otlp_json.request_from_json(two["result"])).values()}) == 2
    depth = get(seeded, "/api/v3/traces", **params, **{"query.search_depth": "3"})
    assert len({s.trace_id for s in _spans(otlp_json.request_from_json(depth["result"])).values()}) == 3
    # Jaeger's gateway answers an empty search with 404 (http_gateway.go returnTraces)
    empty = get(seeded, "/api/v3/traces", 404, **{**params, "query.service_name": "nope"})
    assert empty == {"error": {"httpCode": 404, "message": "No traces found"}}


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"query.service_name": BACKEND}, "query.startTimeMin and query.startTimeMax are required"),
        (
            {
                "query.service_name": BACKEND,
                "query.start_time_min": "yesterday",
                "query.start_time_max": "now",
            },
            "query.start_time_min",
        ),
        (
            {
                "query.service_name": BACKEND,
                "query.start_time_min": "2026-01-01T00:00:00Z",
                "query.start_time_max": "2026-01-02T00:00:00Z",
                "query.duration_min": "fast",
            },
            "query.duration_min",
        ),
    ],
)
def test_v3_search_bad_parameters(seeded: Seeded, params: dict[str, str], needle: str) -> None:
    err = get(seeded, "/api/v3/traces", 400, **params)["error"]
    assert err["httpCode"] == 400 and needle in err["message"]


# --- the UI's files -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/search", "/trace/abc", "/dependencies"])
def test_ui_paths_answer_index_html(seeded: Seeded, path: str) -> None:
    response = requests.get(seeded.url + path, timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    assert "<html" in response.text.lower()
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]


@pytest.mark.parametrize(
    ("name", "content_type"),
    [("app.js", "text/javascript"), ("app.css", "text/css"), ("favicon.svg", "image/svg+xml")],
)
def test_static_files(seeded: Seeded, name: str, content_type: str) -> None:
    response = requests.get(f"{seeded.url}/static/{name}", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith(content_type)
    assert response.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize(
    "path",
    ["/static/..%2Fserver.py", "/static/.hidden", "/static/nope.js", "/static/%2e%2e", "/static/sub/app.js"],
)
def test_static_files_stay_inside_the_ui_folder(seeded: Seeded, path: str) -> None:
    assert requests.get(seeded.url + path, timeout=10).status_code == 404
