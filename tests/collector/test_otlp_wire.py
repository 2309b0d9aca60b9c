"""count_spans walks the wire format: the same count as a full parse for any request, None (never
an exception) for bytes that are not one."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from meshtrace.model.otlp_wire import count_spans

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
