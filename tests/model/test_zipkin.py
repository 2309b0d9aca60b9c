"""The Zipkin <-> OTLP converters and the ListOfSpans codec, as pure functions."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fuzzing import examples
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from meshtrace.model import zipkin
from meshtrace.model.attributes import as_python

TRACE = "5af7183fb1d4cf5f5af7183fb1d4cf5f"
SPAN = "352bff9a74ca9ad2"
PARENT = "6b221d5bc9e6496c"


def v2_span(**over: object) -> dict[str, object]:
    span: dict[str, object] = {
        "traceId": TRACE,
        "id": SPAN,
        "parentId": PARENT,
        "name": "get /api",
        "kind": "CLIENT",
        "timestamp": 1_700_000_000_000_001,
        "duration": 2500,
        "localEndpoint": {"serviceName": "frontend", "ipv4": "10.0.0.1", "port": 8080},
        "remoteEndpoint": {"serviceName": "backend", "ipv4": "10.0.0.2", "port": 9000},
        "tags": {
            "http.method": "GET",
            "error": "boom",
            "otel.scope.name": "lib",
            "otel.scope.version": "1.2",
        },
        "annotations": [{"timestamp": 1_700_000_000_000_500, "value": "retry"}],
    }
    span.update(over)
    return span


def attrs(span: Span) -> dict[str, object]:
    return {kv.key: as_python(kv.value) for kv in span.attributes}


def test_v2_to_otlp_maps_every_field() -> None:
    req = zipkin.zipkin_v2_to_otlp([v2_span()])
    (rs,) = req.resource_spans
    assert [(a.key, a.value.string_value) for a in rs.resource.attributes] == [("service.name", "frontend")]
    (ss,) = rs.scope_spans
    assert (ss.scope.name, ss.scope.version) == ("lib", "1.2")
    (s,) = ss.spans
    assert s.trace_id.hex() == TRACE and s.span_id.hex() == SPAN and s.parent_span_id.hex() == PARENT
    assert s.name == "get /api" and s.kind == Span.SPAN_KIND_CLIENT
    assert s.start_time_unix_nano == 1_700_000_000_000_001_000
    assert s.end_time_unix_nano - s.start_time_unix_nano == 2_500_000
    # As the Collector: an `error` tag sets status Error; a message (not `true`) stays an attribute.
    assert s.status.code == Status.STATUS_CODE_ERROR and s.status.message == ""
    assert attrs(s) == {
        "http.method": "GET",
        "error": "boom",
        "net.host.ip": "10.0.0.1",
        "net.host.port": 8080,
        "peer.service": "backend",
        "net.peer.ip": "10.0.0.2",
        "net.peer.port": 9000,
    }
    (event,) = s.events
    assert event.name == "retry" and event.time_unix_nano == 1_700_000_000_000_500_000


def test_v2_to_otlp_short_trace_id_server_kind_and_flags() -> None:
    span = v2_span(traceId="5af7183fb1d4cf5f", kind="SERVER", tags={"error": "true"}, shared=True)
    (s,) = zipkin.zipkin_v2_to_otlp([span]).resource_spans[0].scope_spans[0].spans
    assert s.trace_id.hex() == "0000000000000000" + "5af7183fb1d4cf5f"
    assert s.kind == Span.SPAN_KIND_SERVER
    assert s.status.code == Status.STATUS_CODE_ERROR and s.status.message == ""
    assert attrs(s)["net.peer.ip"] == "10.0.0.2" and "error" not in attrs(s)
    no_kind = zipkin.zipkin_v2_to_otlp([{"traceId": TRACE, "id": SPAN}]).resource_spans[0]
    assert no_kind.scope_spans[0].spans[0].kind == Span.SPAN_KIND_UNSPECIFIED
    assert not no_kind.resource.attributes


def test_spans_group_by_service() -> None:
    a = v2_span(localEndpoint={"serviceName": "a"})
    b = v2_span(localEndpoint={"serviceName": "b"}, id="1111111111111111")
    c = v2_span(localEndpoint={"serviceName": "a"}, id="2222222222222222")
    req = zipkin.zipkin_v2_to_otlp([a, b, c])
    assert [len(rs.scope_spans[0].spans) for rs in req.resource_spans] == [2, 1]


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"traceId": "xyz"}, "spans[0].traceId"),
        ({"traceId": "0" * 32}, "spans[0].traceId must not be all zeros"),
        ({"traceId": "a" * 33}, "spans[0].traceId"),
        ({"id": None}, "spans[0].id is required"),
        ({"id": "ab cd"}, "spans[0].id"),
        ({"kind": "BOTH"}, "spans[0].kind"),
        ({"timestamp": -1}, "spans[0].timestamp"),
        ({"duration": "5"}, "spans[0].duration"),
        (
            {"timestamp": 2**63 // 1000 - 1, "duration": 10},
            "spans[0].duration: the span would end after 2262",
        ),
        ({"tags": {"a": 1}}, "spans[0].tags.a"),
        ({"remoteEndpoint": {"port": 70000}}, "spans[0].remoteEndpoint.port"),
        ({"annotations": [{"timestamp": 1}]}, "spans[0].annotations[0]"),
    ],
)
def test_v2_errors_name_the_field(over: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        zipkin.zipkin_v2_to_otlp([v2_span(**over)])


def test_json_body_shape_errors() -> None:
    with pytest.raises(ValueError, match="invalid zipkin v2 JSON"):
        zipkin.decode_v2_json(b"[{")
    with pytest.raises(ValueError, match="JSON array"):
        zipkin.decode_v2_json(b'{"traceId": "1"}')
    with pytest.raises(ValueError, match=r"spans\[1\] must be an object"):
        zipkin.decode_v2_json(b"[{}, 3]")


def test_event_attributes_round_trip_through_the_exporter_encoding() -> None:
    value = json.dumps({"exception": {"exception.type": "ValueError", "attempt": 2}})
    span = v2_span(annotations=[{"timestamp": 5, "value": value}])
    (event,) = zipkin.zipkin_v2_to_otlp([span]).resource_spans[0].scope_spans[0].spans[0].events
    assert event.name == "exception"
    assert {kv.key: as_python(kv.value) for kv in event.attributes} == {
        "exception.type": "ValueError",
        "attempt": 2,
    }
    back = zipkin.otlp_to_zipkin_v2(zipkin.zipkin_v2_to_otlp([span]))[0]
    assert json.loads(back["annotations"][0]["value"]) == json.loads(value)


def test_otlp_to_zipkin_v2_is_the_inverse() -> None:
    original = v2_span()
    (back,) = zipkin.otlp_to_zipkin_v2(zipkin.zipkin_v2_to_otlp([original]))
    for key in ("traceId", "id", "parentId", "name", "kind", "timestamp", "duration", "annotations"):
        assert back[key] == original[key], key
    assert back["localEndpoint"] == {"serviceName": "frontend"}
    assert back["remoteEndpoint"] == {"serviceName": "backend", "ipv4": "10.0.0.2", "port": 9000}
    assert back["tags"]["http.method"] == "GET"
    assert back["tags"]["error"] == "true" and back["tags"]["otel.status_code"] == "ERROR"
    assert back["tags"]["otel.scope.name"] == "lib"


def test_list_of_spans_round_trip() -> None:
    spans: list[dict[str, object]] = [
        v2_span(shared=True, debug=True),
        {"traceId": TRACE, "id": "0000000000000001"},
    ]
    decoded = zipkin.decode_list_of_spans(zipkin.encode_list_of_spans(spans))
    assert decoded[0] == {**v2_span(), "shared": True, "debug": True}
    assert decoded[1] == {"traceId": TRACE, "id": "0000000000000001"}


def test_list_of_spans_errors() -> None:
    with pytest.raises(ValueError, match="invalid zipkin protobuf"):
        zipkin.decode_list_of_spans(b"\x0a\xff\xff")
    bad_ip = zipkin.ListOfSpans()
    bad_ip.spans.add(trace_id=b"1" * 16, id=b"2" * 8).local_endpoint.ipv4 = b"\x01\x02"
    with pytest.raises(ValueError, match=r"spans\[0\].localEndpoint: ipv4 must be 4 bytes"):
        zipkin.decode_list_of_spans(bad_ip.SerializeToString())


def test_v1_client_server_shared_span_splits_in_two() -> None:
    endpoint_a = {"serviceName": "frontend", "ipv4": "10.0.0.1", "port": 80}
    endpoint_b = {"serviceName": "backend", "ipv4": "10.0.0.2", "port": 90}
    v1 = {
        "traceId": "5af7183fb1d4cf5f",
        "id": SPAN,
        "name": "get",
        "annotations": [
            {"timestamp": 100, "value": "cs", "endpoint": endpoint_a},
            {"timestamp": 110, "value": "sr", "endpoint": endpoint_b},
            {"timestamp": 190, "value": "ss", "endpoint": endpoint_b},
            {"timestamp": 200, "value": "cr", "endpoint": endpoint_a},
            {"timestamp": 150, "value": "cache miss", "endpoint": endpoint_b},
        ],
        "binaryAnnotations": [
            {"key": "http.path", "value": "/a", "endpoint": endpoint_b},
            {"key": "retries", "value": 3, "endpoint": endpoint_b},
        ],
    }
    client, server = zipkin.zipkin_v1_to_v2([v1])
    assert client["kind"] == "CLIENT" and client["timestamp"] == 100 and client["duration"] == 100
    assert client["localEndpoint"] == endpoint_a
    assert server["kind"] == "SERVER" and server["shared"] is True
    assert server["timestamp"] == 110 and server["duration"] == 80 and server["localEndpoint"] == endpoint_b
    assert server["tags"] == {"http.path": "/a", "retries": "3"}
    assert server["annotations"] == [{"timestamp": 150, "value": "cache miss"}]


def test_v1_remote_address_and_local_span() -> None:
    local = {"serviceName": "svc"}
    v1 = [
        {
            "traceId": TRACE,
            "id": SPAN,
            "name": "call",
            "timestamp": 10,
            "duration": 5,
            "annotations": [{"timestamp": 10, "value": "cs", "endpoint": local}],
            "binaryAnnotations": [
                {"key": "sa", "value": True, "endpoint": {"serviceName": "db", "port": 5432}}
            ],
        },
        {
            "traceId": TRACE,
            "id": PARENT,
            "name": "work",
            "timestamp": 1,
            "duration": 2,
            "binaryAnnotations": [{"key": "lc", "value": "worker", "endpoint": local}],
        },
    ]
    client, internal = zipkin.zipkin_v1_to_v2(v1)
    assert client["remoteEndpoint"] == {"serviceName": "db", "port": 5432}
    assert client["duration"] == 5 and client["kind"] == "CLIENT"
    assert "kind" not in internal and internal["localEndpoint"] == local
    assert internal["timestamp"] == 1 and internal["duration"] == 2 and internal["tags"] == {"lc": "worker"}
    with pytest.raises(ValueError, match=r"spans\[0\]\.binaryAnnotations\[0\]"):
        zipkin.zipkin_v1_to_v2([{"binaryAnnotations": [{"value": 1}]}])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
span_like = st.fixed_dictionaries(
    {},
    optional={
        k: json_values | st.text(alphabet="0123456789abcdef", max_size=34)
        for k in ("traceId", "id", "parentId", "name", "kind", "timestamp", "duration", "tags")
    }
    | {"localEndpoint": json_values, "remoteEndpoint": json_values, "annotations": json_values},
)


@settings(max_examples=examples(200), deadline=None)
@given(st.lists(span_like | json_values, max_size=4))
def test_fuzz_v2_json_never_crashes(body: list[object]) -> None:
    raw = json.dumps(body).encode()
    try:
        zipkin.zipkin_v2_to_otlp(zipkin.decode_v2_json(raw))
    except ValueError as exc:
        assert str(exc)


@settings(max_examples=examples(200), deadline=None)
@given(st.lists(json_values, max_size=4))
def test_fuzz_v1_json_never_crashes(body: list[object]) -> None:
    try:
        zipkin.zipkin_v2_to_otlp(zipkin.decode_v1_json(json.dumps(body)))
    except ValueError as exc:
        assert str(exc)


@settings(max_examples=examples(200), deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_protobuf_never_crashes(body: bytes) -> None:
    try:
        zipkin.zipkin_v2_to_otlp(zipkin.decode_list_of_spans(body))
    except ValueError as exc:
        assert str(exc)


@settings(max_examples=examples(100), deadline=None)
@given(st.binary(max_size=40))
def test_fuzz_mutated_protobuf_never_crashes(noise: bytes) -> None:
    valid = zipkin.encode_list_of_spans([v2_span()])
    cut = len(noise) % len(valid)
    try:
        zipkin.zipkin_v2_to_otlp(zipkin.decode_list_of_spans(valid[:cut] + noise + valid[cut:]))
    except ValueError as exc:
        assert str(exc)


ids = st.binary(min_size=8, max_size=8).filter(any)
otlp_spans = st.tuples(
    st.binary(min_size=16, max_size=16).filter(any),
    ids,
    st.one_of(st.just(b""), ids),
    st.text(max_size=20),
    st.sampled_from(
        [Span.SPAN_KIND_INTERNAL, Span.SPAN_KIND_SERVER, Span.SPAN_KIND_CLIENT, Span.SPAN_KIND_PRODUCER]
    ),
    st.integers(min_value=0, max_value=2**50),
    st.integers(min_value=0, max_value=2**30),
    st.dictionaries(
        st.text(min_size=1, max_size=8).filter(lambda k: not k.startswith("otel.") and k != "error"),
        st.text(max_size=8),
        max_size=3,
    ),
    # A status message "true" cannot round-trip: the tag error=true (Envoy's) means Error, no message.
    st.one_of(st.none(), st.text(max_size=10).filter(lambda m: m != "true")),
)


@settings(max_examples=examples(200), deadline=None)
@given(st.lists(otlp_spans, min_size=1, max_size=4), st.text(min_size=1, max_size=10))
def test_otlp_zipkin_round_trip_through_protobuf(spans: list[tuple[Any, ...]], service: str) -> None:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.add(key="service.name").value.string_value = service
    ss = rs.scope_spans.add()
    for trace, sid, parent, name, kind, start, dur, attributes, error in spans:
        s = ss.spans.add(
            trace_id=trace,
            span_id=sid,
            parent_span_id=parent,
            name=name,
            kind=kind,
            start_time_unix_nano=start * 1000,
            end_time_unix_nano=(start + dur) * 1000,
        )
        for k, v in attributes.items():
            s.attributes.add(key=k).value.string_value = v
        if error is not None:
            s.status.code, s.status.message = Status.STATUS_CODE_ERROR, error
    zipkin_spans = zipkin.otlp_to_zipkin_v2(req)
    json.dumps(zipkin_spans)  # what a Zipkin provider is sent must serialize
    back = zipkin.zipkin_v2_to_otlp(zipkin.decode_list_of_spans(zipkin.encode_list_of_spans(zipkin_spans)))
    got = [s for r in back.resource_spans for sc in r.scope_spans for s in sc.spans]
    assert {r.resource.attributes[0].value.string_value for r in back.resource_spans} == {service}
    for original, s in zip(ss.spans, got, strict=True):
        for field in ("trace_id", "span_id", "name", "kind", "start_time_unix_nano"):
            assert getattr(s, field) == getattr(original, field), field
        # A span that names itself as its parent is a root to the Collector's receiver.
        own = original.parent_span_id == original.span_id
        assert s.parent_span_id == (b"" if own else original.parent_span_id)
        assert s.end_time_unix_nano == original.end_time_unix_nano
        assert (s.status.code, s.status.message) == (original.status.code, original.status.message)
        # A span starting at 0 comes back marked as having had no timestamp (the Collector's way).
        absent = {zipkin.START_TIME_ABSENT: True} if not original.start_time_unix_nano else {}
        assert attrs(s) == attrs(original) | absent
