"""Zipkin v2 -> OTLP against collector-contrib's translator and receiver tests (the YAML files
here, each naming its upstream file, test and commit): the spans go through the same decoder and
converter the zipkin receiver runs on a request body."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from meshtrace.model import zipkin
from meshtrace.model.attributes import as_python

HERE = Path(__file__).parent
DATA = yaml.safe_load((HERE / "v2_to_otlp.yaml").read_text())


def attributes(span: Span) -> dict[str, Any]:
    return {kv.key: as_python(kv.value) for kv in span.attributes}


def cases() -> list[Any]:
    return [
        pytest.param(case, id=f"{Path(source['file'].split()[0]).name}/{case['test']}")
        for source in DATA["sources"]
        for case in source["cases"]
    ]


@pytest.mark.parametrize("case", cases())
def test_v2_to_otlp_tables(case: dict[str, Any]) -> None:
    expect = case["expect"]
    body = case["body"] if "body" in case else json.dumps(case["spans"])
    if expect.get("error"):
        with pytest.raises(ValueError):
            zipkin.zipkin_v2_to_otlp(zipkin.decode_v2_json(body))
        return
    request = zipkin.zipkin_v2_to_otlp(zipkin.decode_v2_json(body), case.get("parse_string_tags", False))
    (rs,) = request.resource_spans
    (ss,) = rs.scope_spans
    (span,) = ss.spans
    if "resource" in expect:
        assert {kv.key: kv.value.string_value for kv in rs.resource.attributes} == expect["resource"]
    if "name" in expect:
        assert span.name == expect["name"]
    if "kind" in expect:
        assert Span.SpanKind.Name(span.kind) == expect["kind"]
    if "status" in expect:
        assert Status.StatusCode.Name(span.status.code) == expect["status"]
    if "message" in expect:
        assert span.status.message == expect["message"]
    if "start_ns" in expect:
        assert (span.start_time_unix_nano, span.end_time_unix_nano) == (expect["start_ns"], expect["end_ns"])
    if "parent" in expect:
        assert span.parent_span_id.hex() == expect["parent"]
    if "tracestate" in expect:
        assert span.trace_state == expect["tracestate"]
    if "attributes" in expect:
        assert attributes(span) == expect["attributes"]
    for key, value in expect.get("attribute", {}).items():
        assert attributes(span)[key] == value
    if "no_attribute" in expect:
        assert expect["no_attribute"] not in attributes(span)


TYPES = {"int": "int_value", "double": "double_value", "bool": "bool_value", "string": "string_value"}


@pytest.mark.parametrize("case", DATA["parse_string_tags"]["cases"], ids=lambda c: repr(c["value"]))
def test_parse_string_tags_patterns(case: dict[str, Any]) -> None:
    span = {"traceId": "4d1e00c0db9010db86154a4ba6e91385", "id": "4d1e00c0db9010db", "kind": "CLIENT"}
    span |= {"timestamp": 1472470996199000, "tags": {"t": case["value"]}}
    (otlp,) = zipkin.zipkin_v2_to_otlp([span], parse_string_tags=True).resource_spans[0].scope_spans[0].spans
    (kv,) = [kv for kv in otlp.attributes if kv.key == "t"]
    assert kv.value.WhichOneof("value") == TYPES[case["type"]]
    assert as_python(kv.value) == case.get("python", case["value"])


V1_STATUS = yaml.safe_load((HERE / "v1_status.yaml").read_text())


@pytest.mark.parametrize("case", V1_STATUS["cases"], ids=lambda c: c["name"])
def test_v1_status_table(case: dict[str, Any]) -> None:
    endpoint = {"serviceName": "svc"}
    v1 = {
        "traceId": "0123456789abcdef",
        "id": "0123456789abcdef",
        "name": "s",
        "annotations": [{"timestamp": 1, "value": "sr", "endpoint": endpoint}],
        "binaryAnnotations": [{"key": k, "value": v, "endpoint": endpoint} for k, v in case["tags"].items()],
    }
    (span,) = (
        zipkin.zipkin_v2_to_otlp(zipkin.decode_v1_json(json.dumps([v1])))
        .resource_spans[0]
        .scope_spans[0]
        .spans
    )
    # A documented divergence gives meshtrace's answer (the v2 rules) instead of upstream's.
    want = case.get("divergence") or {"status": case["status"], "message": case.get("message", "")}
    assert (Status.StatusCode.Name(span.status.code), span.status.message) == (
        want["status"],
        want.get("message", ""),
    )


JSON_TEST = V1_STATUS["json_test"]
TRACE_ID, SPAN_ID = "00000000000000010000000000000002", "0000000000000001"


def v1_span(**fields: Any) -> Span:
    v1 = {"traceId": TRACE_ID, "id": SPAN_ID, **fields}
    request = zipkin.zipkin_v2_to_otlp(zipkin.decode_v1_json(json.dumps([v1])), parse_string_tags=True)
    (span,) = request.resource_spans[0].scope_spans[0].spans
    return span


@pytest.mark.parametrize("case", JSON_TEST["annotations_to_status"], ids=lambda c: c["name"])
def test_v1_annotations_to_status(case: dict[str, Any]) -> None:
    binary = [{"key": k, "value": v} for k, v in case["tags"].items()]
    span = v1_span(timestamp=1, binaryAnnotations=binary)
    assert Status.StatusCode.Name(span.status.code) == case["status"]
    assert span.status.message == case.get("message", "")
    assert attributes(span) == case["attributes"]


@pytest.mark.parametrize("case", JSON_TEST["http_status_ranges"], ids=lambda c: f"{c['from']}-{c['to']}")
def test_v1_http_status_codes(case: dict[str, Any]) -> None:
    for code in range(case["from"], case["to"] + 1):
        span = v1_span(binaryAnnotations=[{"key": "http.status_code", "value": str(code)}])
        assert Status.StatusCode.Name(span.status.code) == case["status"], code


@pytest.mark.parametrize(
    "case",
    [pytest.param(c, id=f"span id/{c['name']}") for c in JSON_TEST["span_ids"]]
    + [pytest.param(c, id=f"trace id/{c['name']}") for c in JSON_TEST["trace_ids"]],
)
def test_v1_ids(case: dict[str, Any]) -> None:
    fields = (
        {"timestamp": 1, "id": case["id"]} if "id" in case else {"timestamp": 1, "traceId": case["trace_id"]}
    )
    if case.get("error"):
        with pytest.raises(ValueError, match="spans\\[0\\]"):
            v1_span(**fields)
        return
    span = v1_span(**fields)
    assert (span.span_id if "id" in case else span.trace_id).hex() == case["want"]


@pytest.mark.parametrize("case", JSON_TEST["timestamps"], ids=lambda c: c["name"])
def test_v1_timestamps(case: dict[str, Any]) -> None:
    span = v1_span(**({"timestamp": case["timestamp"]} if case["timestamp"] is not None else {}))
    want = case.get("divergence", case)  # a documented divergence gives meshtrace's value
    assert span.start_time_unix_nano == want["start_ns"]
    for key, value in case.get("attributes", {}).items():
        assert attributes(span)[key] == value
