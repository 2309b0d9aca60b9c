"""count_spans walks the wire format: the same count as a full parse for any request, None (never
an exception) for bytes that are not one. encoded_attributes reads a span's KeyValues as bytes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from meshtrace.model.otlp_wire import count_spans, encoded_attributes

names = st.text(max_size=5)


@st.composite
def requests(draw: st.DrawFn) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    for _ in range(draw(st.integers(0, 3))):
        rs = request.resource_spans.add(schema_url=draw(names))
        rs.resource.attributes.add(key=draw(names)).value.int_value = draw(st.integers(-(2**63), 2**63 - 1))
        for _ in range(draw(st.integers(0, 3))):
            ss = rs.scope_spans.add()
            ss.scope.name = draw(names)
            for _ in range(draw(st.integers(0, 4))):
                ss.spans.add(
                    name=draw(names),
                    trace_id=draw(st.binary(max_size=16)),
                    start_time_unix_nano=draw(st.integers(0, 2**64 - 1)),
                    kind=draw(st.integers(0, 5)),
                ).attributes.add(key="k").value.double_value = draw(st.floats(allow_nan=False))
    return request


@given(requests())
def test_same_count_as_a_full_parse(request: ExportTraceServiceRequest) -> None:
    expected = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
    assert count_spans(request.SerializeToString()) == expected


@given(requests(), st.integers(1, 50))
def test_truncated_is_none_or_a_count(request: ExportTraceServiceRequest, cut: int) -> None:
    data = request.SerializeToString()
    assert count_spans(data[: max(0, len(data) - cut)]) in (None, *range(0, 100))


@given(st.binary(max_size=200))
def test_random_bytes_never_raise(data: bytes) -> None:
    result = count_spans(data)
    assert result is None or result >= 0


def _fill(value: AnyValue, draw: st.DrawFn, depth: int) -> None:
    kind = draw(st.sampled_from(["string", "int", "bool", "double", "bytes", "array", "kvlist", "none"]))
    if kind == "string":
        value.string_value = draw(st.text(max_size=8))
    elif kind == "int":
        value.int_value = draw(st.integers(-(2**63), 2**63 - 1))
    elif kind == "bool":
        value.bool_value = draw(st.booleans())
    elif kind == "double":
        value.double_value = draw(st.floats(allow_nan=False))
    elif kind == "bytes":
        value.bytes_value = draw(st.binary(max_size=8))
    elif kind == "array" and depth < 2:
        for _ in range(draw(st.integers(0, 2))):
            _fill(value.array_value.values.add(), draw, depth + 1)
    elif kind == "kvlist" and depth < 2:
        for _ in range(draw(st.integers(0, 2))):
            _fill(value.kvlist_value.values.add(key=draw(names)).value, draw, depth + 1)


@st.composite
def spans(draw: st.DrawFn) -> Span:
    span = Span(name=draw(names), trace_id=draw(st.binary(min_size=16, max_size=16)))
    for _ in range(draw(st.integers(0, 6))):
        _fill(span.attributes.add(key=draw(names)).value, draw, 0)
    if draw(st.booleans()):
        span.events.add(name="e").attributes.add(key="in-event").value.string_value = "not a span attribute"
    return span


@given(spans())
def test_encoded_attributes_are_each_keyvalue_serialized(span: Span) -> None:
    """The store's attribute filters hash these bytes, and searches hash KeyValue encodings: they
    must be equal, byte for byte, in order, and only the span's own attributes."""
    expected = [kv.SerializeToString() for kv in span.attributes]
    assert list(encoded_attributes(span.SerializeToString())) == expected
