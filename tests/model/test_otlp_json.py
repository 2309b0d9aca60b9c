"""OTLP/JSON: the spec's mapping (hex ids, integer enums, camelCase, int64 as strings), round
trips, field paths in errors, and fuzzing that only ever yields a request or a ValueError."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fuzzing import examples
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from meshtrace.model import otlp_json


def rich_request() -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.add(key="service.name", value=AnyValue(string_value="frontend"))
    rs.schema_url = "https://opentelemetry.io/schemas/1.21.0"
    ss = rs.scope_spans.add()
    ss.scope.name, ss.scope.version = "lib", "1.0"
    span = ss.spans.add()
    span.trace_id = bytes.fromhex("5b8efff798038103d269b633813fc60c")
    span.span_id = bytes.fromhex("eee19b7ec3c1b174")
    span.parent_span_id = bytes.fromhex("eee19b7ec3c1b173")
    span.trace_state = "ot=th:8"
    span.name = "GET /"
    span.kind = 2
    span.start_time_unix_nano = 1544712660000000000
    span.end_time_unix_nano = 1544712661000000000
    span.flags = 0x301
    for kv in (
        KeyValue(key="s", value=AnyValue(string_value="x")),
        KeyValue(key="i", value=AnyValue(int_value=2**62)),
        KeyValue(key="d", value=AnyValue(double_value=1.5)),
        KeyValue(key="b", value=AnyValue(bool_value=True)),
        KeyValue(key="raw", value=AnyValue(bytes_value=b"\x00\xff")),
    ):
        span.attributes.append(kv)
    arr = span.attributes.add(key="arr")
    arr.value.array_value.values.add(string_value="a")
    event = span.events.add(name="exception", time_unix_nano=1544712660500000000)
    event.attributes.add(key="exception.type", value=AnyValue(string_value="E"))
    link = span.links.add(trace_id=b"\x01" * 16, span_id=b"\x02" * 8)
    link.attributes.add(key="k", value=AnyValue(string_value="v"))
    span.status.code = 2
    span.status.message = "boom"
    span.dropped_attributes_count = 3
    return req


def test_encoding_follows_the_otlp_json_mapping() -> None:
    obj = otlp_json.request_to_json(rich_request())
    span = obj["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert span["traceId"] == "5b8efff798038103d269b633813fc60c"
    assert span["spanId"] == "eee19b7ec3c1b174"
    assert span["parentSpanId"] == "eee19b7ec3c1b173"
    assert span["kind"] == 2 and span["status"] == {"code": 2, "message": "boom"}
    assert span["startTimeUnixNano"] == "1544712660000000000"
    assert span["droppedAttributesCount"] == 3
    assert span["links"][0]["traceId"] == "01" * 16 and span["links"][0]["spanId"] == "02" * 8
    attrs = {kv["key"]: kv["value"] for kv in span["attributes"]}
    assert attrs["i"] == {"intValue": str(2**62)}
    assert attrs["raw"] == {"bytesValue": "AP8="}  # non-id bytes stay base64
    assert obj["resourceSpans"][0]["schemaUrl"].startswith("https://")


def test_round_trip_and_compact_bytes() -> None:
    req = rich_request()
    data = otlp_json.dumps(req)
    assert b"\n" not in data
    assert otlp_json.loads(data) == req
    assert otlp_json.request_from_json(otlp_json.request_to_json(req)) == req


def test_decoding_accepts_numbers_for_int64_and_ignores_unknown_fields() -> None:
    obj = {
        "resourceSpans": [
            {
                "futureField": {"x": 1},
                "scopeSpans": [{"spans": [{"traceId": "AB" * 16, "startTimeUnixNano": 5, "whatever": [1]}]}],
            }
        ]
    }
    span = otlp_json.request_from_json(obj).resource_spans[0].scope_spans[0].spans[0]
    assert span.trace_id == b"\xab" * 16 and span.start_time_unix_nano == 5


@pytest.mark.parametrize(
    ("obj", "path"),
    [
        (
            {"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "abc"}]}]}]},
            "resourceSpans[0].scopeSpans[0].spans[0].traceId",
        ),
        (
            {"resourceSpans": [{"scopeSpans": [{"spans": [{}, {"spanId": "zz" * 8}]}]}]},
            "resourceSpans[0].scopeSpans[0].spans[1].spanId",
        ),
        (
            {"resourceSpans": [{"scopeSpans": [{"spans": [{"links": [{"traceId": "01" * 15}]}]}]}]},
            "resourceSpans[0].scopeSpans[0].spans[0].links[0].traceId",
        ),
        ({"resourceSpans": [{"scopeSpans": "nope"}]}, "resourceSpans[0].scopeSpans"),
        (
            {"resourceSpans": [{"scopeSpans": [{"spans": [{"kind": {"x": 1}}]}]}]},
            "resourceSpans[0].scopeSpans[0].spans[0].kind",
        ),
        (
            {"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": "soon"}]}]}]},
            "startTimeUnixNano",
        ),
    ],
)
def test_errors_name_the_field_path(obj: dict[str, Any], path: str) -> None:
    with pytest.raises(ValueError) as info:
        otlp_json.request_from_json(obj)
    assert path in str(info.value)


def test_invalid_json_is_a_value_error() -> None:
    for data in (b"", b"{", b"\xff\xfe", b"[1]", b"null", b"[" * 100000):
        with pytest.raises(ValueError):
            otlp_json.loads(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
keys = st.sampled_from(
    [
        "resourceSpans",
        "scopeSpans",
        "spans",
        "traceId",
        "spanId",
        "parentSpanId",
        "links",
        "name",
        "kind",
        "attributes",
        "key",
        "value",
        "stringValue",
        "intValue",
        "startTimeUnixNano",
        "status",
        "code",
        "resource",
    ]
)
otlp_like = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=34)
    | st.sampled_from(["01" * 16, "02" * 8, "7"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=examples(200), deadline=None)
@given(st.one_of(json_values, otlp_like))
def test_fuzz_decoder_returns_a_request_or_a_value_error(obj: Any) -> None:
    try:
        request = otlp_json.request_from_json(obj)
    except ValueError:
        return
    assert isinstance(request, ExportTraceServiceRequest)
    assert otlp_json.request_from_json(json.loads(otlp_json.dumps(request))) == request


ids = st.binary(min_size=16, max_size=16)


@settings(max_examples=examples(100), deadline=None)
@given(
    st.lists(
        st.tuples(
            ids,
            st.binary(min_size=8, max_size=8),
            st.text(max_size=10),
            st.integers(0, 5),
            st.integers(0, 2**64 - 1),
        ),
        max_size=5,
    )
)
def test_fuzz_round_trip(spans: list[tuple[bytes, bytes, str, int, int]]) -> None:
    req = ExportTraceServiceRequest()
    ss = req.resource_spans.add().scope_spans.add()
    for trace_id, span_id, name, kind, start in spans:
        ss.spans.add(trace_id=trace_id, span_id=span_id, name=name, kind=kind, start_time_unix_nano=start)
    assert otlp_json.loads(otlp_json.dumps(req)) == req


def test_pieces_join_into_the_document_across_resources_scopes_and_chunks() -> None:
    req = ExportTraceServiceRequest()
    for r in range(2):
        rs = req.resource_spans.add(schema_url=f"r{r}")
        for s in range(2):
            ss = rs.scope_spans.add(schema_url=f"s{s}")
            for i in range(5):
                ss.spans.add(name=f"{r}.{s}.{i}", trace_id=b"\x01" * 16, span_id=(i + 1).to_bytes(8, "big"))
        rs.scope_spans.add()  # an empty scope
    text = "".join(otlp_json.iter_dumps(req, chunk=2))
    assert otlp_json.loads(text) == req
    assert text.encode() == otlp_json.dumps(req)
    assert otlp_json.loads(otlp_json.dumps(ExportTraceServiceRequest())) == ExportTraceServiceRequest()


def test_encoding_matches_protobufs_json_mapping_apart_from_hex_ids() -> None:
    import base64

    from google.protobuf import json_format

    req = rich_request()
    reference = json_format.MessageToDict(req, use_integers_for_enums=True)
    for rs in reference["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for span in ss["spans"]:
                for item in [span, *span.get("links", [])]:
                    for key in ("traceId", "spanId", "parentSpanId"):
                        if key in item:
                            item[key] = base64.b64decode(item[key]).hex()
    assert otlp_json.request_to_json(req) == reference
