"""The routes today's Jaeger UI calls, against a real store over HTTP: trace summaries (including
the UI's "all services" search), SPM series computed from stored spans, the archive outliving
retention, and `?prettyPrint`."""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from fuzzing import examples
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from meshtrace.query.archive import otlp_to_jaeger
from meshtrace.query.params import ParamError
from meshtrace.query.spm import timestamp
from meshtrace.query.uiparams import parse_metrics, parse_trace_id_any, parse_v3_search
from meshtrace.store.synthetic import BACKEND, FRONTEND, mesh_trace
from tests.query.conftest import RunningQuery, serve_query
from tests.store.conftest import FakeClock

MS = 10**6
S = 10**9
T0 = (time.time_ns() // (60 * S) - 10) * 60 * S  # a whole minute, ten minutes ago


def _write(running: RunningQuery, request: ExportTraceServiceRequest) -> None:
    running.store.write(request.SerializeToString()).result(10)


def _span_request(service: str, spans: list[tuple[str, int, int, int, bool]]) -> ExportTraceServiceRequest:
    """One root span per (name, kind, start, duration, error)."""
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.add(key="service.name").value.string_value = service
    ss = rs.scope_spans.add()
    rng = random.Random(len(spans))
    for name, kind, start, duration, error in spans:
        span = ss.spans.add(trace_id=rng.randbytes(16), span_id=rng.randbytes(8), name=name, kind=kind)  # type: ignore[arg-type]
        span.start_time_unix_nano = start
        span.end_time_unix_nano = start + duration
        if error:
            span.status.code = Status.STATUS_CODE_ERROR
    return request


@pytest.fixture(scope="module")
def spm(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with serve_query(tmp_path_factory.mktemp("spm") / "traces.db") as running:
        server = Span.SPAN_KIND_SERVER
        _write(
            running,
            _span_request(
                "shop",
                [
                    ("GET /a", server, T0 + 10 * S, 10 * MS, False),
                    ("GET /a", server, T0 + 11 * S, 10 * MS, False),
                    ("GET /a", server, T0 + 12 * S, 10 * MS, True),
                    ("GET /b", server, T0 + 70 * S, 100 * MS, False),
                    ("call db", Span.SPAN_KIND_CLIENT, T0 + 70 * S, 5 * MS, True),
                ],
            ),
        )
        yield running


def _metrics(running: RunningQuery, kind: str, **params: Any) -> Any:
    query = {"service": "shop", "endTs": (T0 + 120 * S) // MS, "lookback": 120_000, "step": 60_000}
    query.update({"ratePer": 60_000, **params})
    response = requests.get(f"{running.url}/api/metrics/{kind}", params=query, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def _points(family: Any, operation: str | None = None) -> list[Any]:
    for metric in family["metrics"]:
        labels = {label["name"]: label["value"] for label in metric["labels"]}
        if labels.get("operation") == operation:
            return [p["gaugeValue"]["doubleValue"] for p in metric["metricPoints"]]
    raise AssertionError(f"no series for {operation!r} in {family}")


def test_spm_calls_errors_and_latencies_per_service(spm: RunningQuery) -> None:
    calls = _metrics(spm, "calls")
    assert (calls["name"], calls["type"], calls["help"]) == (
        "service_call_rate",
        "GAUGE",
        "calls/sec, grouped by service",
    )
    (series,) = calls["metrics"]
    assert series["labels"] == [{"name": "service_name", "value": "shop"}]
    # points at T0, T0+60s, T0+120s, each over the SERVER spans of the minute before
    assert [p["timestamp"] for p in series["metricPoints"]] == [timestamp(T0 + i * 60 * S) for i in range(3)]
    assert _points(calls) == [0, 3 / 60, 1 / 60]
    assert _points(_metrics(spm, "errors")) == ["NaN", 1 / 3, 0]
    p50 = _metrics(spm, "latencies", quantile=0.5)
    assert p50["name"] == "service_latencies"
    assert p50["help"] == "0.50th quantile latency, grouped by service"
    nan, at_a, at_b = _points(p50)
    assert nan == "NaN"
    assert math.isclose(at_a, 10.0, rel_tol=0.03) and math.isclose(at_b, 100.0, rel_tol=0.03)


def test_spm_grouped_by_operation_and_span_kind(spm: RunningQuery) -> None:
    calls = _metrics(spm, "calls", groupByOperation="true")
    assert calls["name"] == "service_operation_call_rate"
    assert calls["help"] == "calls/sec, grouped by service & operation"
    assert _points(calls, "GET /a") == [0, 3 / 60, 0]
    assert _points(calls, "GET /b") == [0, 0, 1 / 60]
    errors = _metrics(spm, "errors", groupByOperation="true")
    assert _points(errors, "GET /b") == [0, 0, 0]  # no error in the range: zeros, as Jaeger fills
    assert _points(errors, "GET /a") == ["NaN", 1 / 3, "NaN"]
    client = _metrics(spm, "calls", spanKind="client", groupByOperation="true")
    assert [m["labels"][1]["value"] for m in client["metrics"]] == ["call db"]
    both = _metrics(spm, "calls", spanKind=["server", "client"])
    assert _points(both) == [0, 3 / 60, 2 / 60]


def test_spm_window_longer_than_step_and_unknown_service(spm: RunningQuery) -> None:
    # ratePer 10 min (the UI's) over 1-minute steps: each point counts the 10 minutes before it
    calls = _metrics(spm, "calls", ratePer=600_000)
    assert _points(calls) == [0, 3 / 600, 4 / 600]
    assert _metrics(spm, "calls", service="nobody")["metrics"] == []


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"quantile": "1.5"}, "unable to parse param 'quantile': must be between 0 and 1"),
        ({"step": "0"}, "unable to parse param 'step': must be between 1 and"),
        ({"endTs": "9" * 30}, "unable to parse param 'endTs': must be between 0 and"),
        ({"ratePer": "-5"}, "unable to parse param 'ratePer'"),
        ({"lookback": "-1"}, "unable to parse param 'lookback'"),
        (
            {"lookback": str(30 * 24 * 3600 * 1000), "step": "60"},
            "unable to parse param 'step': lookback/step",
        ),
    ],
)
def test_spm_range_errors_name_the_parameter(spm: RunningQuery, params: dict[str, str], needle: str) -> None:
    query = {"service": "shop", "quantile": "0.5", **params}
    response = requests.get(f"{spm.url}/api/metrics/latencies", params=query, timeout=10)
    assert response.status_code == 400
    assert needle in response.json()["errors"][0]["msg"]


def _v3_window() -> dict[str, str]:
    return {"query.startTimeMin": timestamp(T0 - 3600 * S), "query.startTimeMax": timestamp(T0 + 3600 * S)}


def test_trace_summaries_for_all_services_newest_first(query_api: RunningQuery) -> None:
    rng = random.Random(21)
    older, newer = mesh_trace(T0 + S, rng), mesh_trace(T0 + 2 * S, rng, error=True)
    for request in (older, newer):
        _write(query_api, request)
    params = {**_v3_window(), "query.searchDepth": "2"}
    body = requests.get(f"{query_api.url}/api/v3/trace-summaries", params=params, timeout=10).json()
    ids = [s["traceId"] for s in body["summaries"]]
    tid = lambda r: r.resource_spans[0].scope_spans[0].spans[0].trace_id.hex()  # noqa: E731
    assert ids == [tid(newer), tid(older)]
    first = body["summaries"][0]
    assert first["rootServiceName"] == FRONTEND and first["spanCount"] == 4
    assert [s["name"] for s in first["services"]] == [BACKEND, FRONTEND]
    assert first["errorSpanCount"] >= 1 and "orphanSpanCount" not in first
    # a service's search, and one that finds nothing: proto3 JSON leaves the empty list out
    backend = {**params, "query.serviceName": BACKEND}
    assert (
        len(
            requests.get(f"{query_api.url}/api/v3/trace-summaries", params=backend, timeout=10).json()[
                "summaries"
            ]
        )
        == 2
    )
    nobody = {**params, "query.serviceName": "nobody"}
    assert requests.get(f"{query_api.url}/api/v3/trace-summaries", params=nobody, timeout=10).json() == {}


def test_archived_trace_outlives_retention(tmp_path: Path) -> None:
    clock = FakeClock()
    with serve_query(
        tmp_path / "traces.db", retention_s=1.0, maintenance_interval_s=0.1, clock=clock
    ) as running:
        kept, lost = (
            mesh_trace(time.time_ns(), random.Random(1)),
            mesh_trace(time.time_ns(), random.Random(2)),
        )
        for request in (kept, lost):
            _write(running, request)
        kept_id = kept.resource_spans[0].scope_spans[0].spans[0].trace_id
        lost_id = lost.resource_spans[0].scope_spans[0].spans[0].trace_id
        archived = requests.post(f"{running.url}/api/archive/{kept_id.hex()}", timeout=10)
        assert archived.status_code == 200
        assert archived.json() == {"data": [], "total": 0, "limit": 0, "offset": 0, "errors": []}
        clock.advance(2)
        assert running.store.flush(5)  # wakes the writer, which applies retention
        assert running.store.get_trace(kept_id) is None, "retention did not evict the trace"
        v1 = requests.get(f"{running.url}/api/traces/{kept_id.hex()}", timeout=10)
        assert v1.status_code == 200 and len(v1.json()["data"][0]["spans"]) == 4
        by_ids = requests.get(
            f"{running.url}/api/traces", params={"traceID": [kept_id.hex(), lost_id.hex()]}, timeout=10
        )
        assert [t["traceID"] for t in by_ids.json()["data"]] == [kept_id.hex()]
        assert [e["traceID"] for e in by_ids.json()["errors"]] == [lost_id.hex()]
        v3 = requests.get(f"{running.url}/api/v3/traces/{kept_id.hex()}", timeout=10)
        assert v3.status_code == 200 and v3.json()["result"]["resourceSpans"]
        assert requests.get(f"{running.url}/api/traces/{lost_id.hex()}", timeout=10).status_code == 404
        missing = requests.post(f"{running.url}/api/archive/{'ab' * 16}", timeout=10)
        assert missing.status_code == 404 and missing.json()["errors"][0]["msg"] == "trace not found"
        bad = requests.post(f"{running.url}/api/archive/xyz", timeout=10)
        assert bad.status_code == 400 and "traceID" in bad.json()["errors"][0]["msg"]


@pytest.mark.parametrize(
    "path",
    ["/api/services", "/api/v3/services", "/api/traces/zz", "/api/v3/traces/zz", "/api/metrics/calls"],
)
def test_pretty_print_indents_every_json_answer(query_api: RunningQuery, path: str) -> None:
    compact = requests.get(query_api.url + path, timeout=10)
    pretty = requests.get(query_api.url + path, params={"prettyPrint": "true"}, timeout=10)
    assert pretty.status_code == compact.status_code
    assert pretty.json() == compact.json()
    assert pretty.text == json.dumps(compact.json(), indent=4, ensure_ascii=False)
    off = requests.get(query_api.url + path, params={"prettyPrint": "false"}, timeout=10)
    assert off.text == compact.text and "\n" not in compact.text


_text = st.text(max_size=40)
_wire = st.dictionaries(
    st.sampled_from(
        [
            "query.serviceName",
            "query.startTimeMin",
            "query.start_time_max",
            "query.startTimeMax",
            "query.searchDepth",
            "query.num_traces",
            "query.durationMin",
            "query.duration_max",
            "query.attributes",
            "query.rawTraces",
            "service",
            "spanKind",
            "groupByOperation",
            "endTs",
            "lookback",
            "step",
            "ratePer",
        ]
    ),
    st.lists(st.one_of(_text, st.integers(-(10**20), 10**20).map(str)), min_size=1, max_size=2),
)


@settings(max_examples=examples(300), deadline=None)
@given(_wire)
def test_ui_parameter_parsers_answer_param_errors_only(params: dict[str, list[str]]) -> None:
    for parse in (parse_v3_search, parse_metrics):
        with contextlib.suppress(ParamError):
            parse(params)


@settings(max_examples=examples(300), deadline=None)
@given(st.text(max_size=40))
def test_trace_id_parser_answers_param_errors_only(text: str) -> None:
    with contextlib.suppress(ParamError):
        assert len(parse_trace_id_any(text)) == 16


FAKE_INDEX = b"""<html><head><script>
      const JAEGER_CONFIG = DEFAULT_CONFIG;
      const JAEGER_STORAGE_CAPABILITIES = DEFAULT_STORAGE_CAPABILITIES;
      const JAEGER_BACKEND_CAPABILITIES = DEFAULT_BACKEND_CAPABILITIES;
</script></head><body></body></html>"""


def test_a_jaeger_ui_build_is_served_with_meshtrace_capabilities(tmp_path: Path) -> None:
    """The build's lines Jaeger's static handler rewrites (the UI shows the Monitor tab and the
    archive button from them), its files, and index.html for the UI's own routes."""
    build = tmp_path / "build"
    (build / "static").mkdir(parents=True)
    (build / "index.html").write_bytes(FAKE_INDEX)
    (build / "static" / "index-abc.js").write_text("console.log(1)")
    (tmp_path / "secret.txt").write_text("no")
    with serve_query(tmp_path / "traces.db", jaeger_ui=build) as running:
        for path in ("/", "/search", "/monitor", "/trace/abc", "/static/missing.js"):
            page = requests.get(running.url + path, timeout=10)
            assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
            assert "Content-Security-Policy" not in page.headers  # the build's inline script must run
            text = page.text
            assert 'JAEGER_STORAGE_CAPABILITIES = {"archiveStorage": true, "metricsStorage": true};' in text
            assert 'JAEGER_BACKEND_CAPABILITIES = {"archiveStorage": true, "metricsStorage": true};' in text
            assert 'JAEGER_CONFIG = {"archiveEnabled": true};' in text
        script = requests.get(running.url + "/static/index-abc.js", timeout=10)
        assert script.text == "console.log(1)" and "javascript" in script.headers["Content-Type"]
        escape = requests.get(running.url + "/static/..%2F..%2Fsecret.txt", timeout=10)
        assert escape.text != "no" and "JAEGER_CONFIG" in escape.text
        assert requests.get(running.url + "/api/v3/services", timeout=10).json() == {"services": []}


def test_query_extension_refuses_a_directory_that_is_no_jaeger_ui_build(tmp_path: Path) -> None:
    from meshtrace.query.extension import QueryConfig

    with pytest.raises(ValueError, match="not a Jaeger UI build"):
        QueryConfig(jaeger_ui=str(tmp_path))


def test_v3_search_extremes_are_answers_not_crashes(query_api: RunningQuery) -> None:
    """Times outside int64 nanoseconds (before 1970, after 2262) and durations past Go's 292 years
    are a 400 naming the parameter."""
    url = f"{query_api.url}/api/v3/trace-summaries"
    wide = {"query.startTimeMin": "1970-01-01T00:00:00Z", "query.startTimeMax": "9999-12-31T23:59:59Z"}
    response = requests.get(url, params=wide, timeout=10)
    assert response.status_code == 400
    assert "malformed parameter query.startTimeMax" in response.json()["error"]["message"]
    in_range = {**wide, "query.startTimeMax": "2262-04-11T23:47:16Z"}
    assert requests.get(url, params=in_range, timeout=10).status_code == 200
    huge = {**in_range, "query.durationMin": "9" * 30 + "h"}
    response = requests.get(url, params=huge, timeout=10)
    assert response.status_code == 400
    assert "malformed parameter query.durationMin" in response.json()["error"]["message"]


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=3),
    max_leaves=12,
)


@settings(max_examples=examples(300), deadline=None)
@given(
    st.one_of(st.binary(max_size=60), _json_values.map(lambda v: json.dumps({"resourceSpans": [v]}).encode()))
)
def test_transform_body_parser_answers_param_errors_only(body: bytes) -> None:
    with contextlib.suppress(ParamError):
        otlp_to_jaeger(body)
