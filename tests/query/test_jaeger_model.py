"""Units and fuzz for the pure parts: Jaeger JSON <-> OTLP converters, import parsing, query params."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from fuzzing import examples
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from meshtrace.model import otlp_json
from meshtrace.model.jaeger import from_jaeger, parse_trace_id, to_jaeger_traces, trace_id_to_hex
from meshtrace.query import params
from meshtrace.query.importer import parse_import

FUZZ = settings(max_examples=examples(200), deadline=None)


def test_trace_id_spelling() -> None:
    assert trace_id_to_hex(bytes(8) + b"\x00" * 7 + b"\x01") == "0000000000000001"
    assert trace_id_to_hex(b"\x01" + bytes(15)) == "01" + "00" * 15
    assert parse_trace_id("1") == bytes(15) + b"\x01"
    assert parse_trace_id("ABCDEF") == parse_trace_id("abcdef")
    for bad in ("", "g", "1" * 33, "12 34"):
        with pytest.raises(ValueError):
            parse_trace_id(bad)


@pytest.mark.parametrize(
    ("text", "ns"),
    [("1.2s", 1_200_000_000), ("100ms", 100_000_000), ("1m30s", 90 * 10**9), ("500us", 500_000), ("7ns", 7)],
)
def test_go_durations(text: str, ns: int) -> None:
    assert params.parse_duration_ns(text, "minDuration") == ns


def test_rfc3339() -> None:
    assert params.parse_rfc3339_ns("1970-01-01T00:00:01.5Z", "t") == 1_500_000_000
    assert params.parse_rfc3339_ns("1970-01-01T01:00:00+01:00", "t") == 0
    assert params.parse_rfc3339_ns("2026-11-26T04:00:00.123456789Z", "t") % 10**9 == 123456789
    with pytest.raises(params.ParamError, match=r"query\.start_time_min"):
        params.parse_rfc3339_ns("2026-13-45T00:00:00Z", "query.start_time_min")


def test_search_defaults_match_jaeger() -> None:
    now = 10**18
    parsed = params.parse_search({"service": ["s"]}, now)
    assert parsed.query is not None
    assert parsed.query.limit == 100
    assert parsed.query.start_max_ns == now
    assert parsed.query.start_min_ns == now - 48 * 3600 * 10**9
    assert params.parse_dependencies({}, 5_000_000)[1] == 24 * 3600 * 10**9


def _attribute_values() -> st.SearchStrategy[AnyValue]:
    return st.one_of(
        st.text(max_size=20).map(lambda v: AnyValue(string_value=v)),
        st.booleans().map(lambda v: AnyValue(bool_value=v)),
        st.integers(-(2**63), 2**63 - 1).map(lambda v: AnyValue(int_value=v)),
        st.floats(allow_nan=False, allow_infinity=False).map(lambda v: AnyValue(double_value=v)),
        st.binary(max_size=8).map(lambda v: AnyValue(bytes_value=v)),
    )


_KEYS = st.text(min_size=1, max_size=12).filter(
    lambda k: (
        k not in {"span.kind", "error", "otel.status_code", "otel.status_description", "w3c.tracestate"}
        and not k.startswith("otel.")
    )
)


@st.composite
def requests_(draw: st.DrawFn) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    trace_id = draw(st.binary(min_size=16, max_size=16).filter(any))
    for r in range(draw(st.integers(1, 3))):
        rs = request.resource_spans.add()
        rs.resource.attributes.add(key="service.name", value=AnyValue(string_value=f"svc-{r}"))
        for key, value in draw(
            st.dictionaries(_KEYS.filter(lambda k: k != "service.name"), _attribute_values(), max_size=3)
        ).items():
            rs.resource.attributes.add(key=key, value=value)
        ss = rs.scope_spans.add()
        ss.scope.name = draw(st.sampled_from(["", "lib"]))
        for _ in range(draw(st.integers(1, 3))):
            span = ss.spans.add()
            span.trace_id = trace_id
            span.span_id = draw(st.binary(min_size=8, max_size=8).filter(any))
            if draw(st.booleans()):
                span.parent_span_id = draw(st.binary(min_size=8, max_size=8).filter(any))
            span.name = draw(st.text(max_size=10))
            span.kind = draw(st.sampled_from(list(Span.SpanKind.values())))
            start_us = draw(st.integers(1, 2**50))
            span.start_time_unix_nano = start_us * 1000
            span.end_time_unix_nano = (start_us + draw(st.integers(0, 10**9))) * 1000
            code = draw(
                st.sampled_from([Status.STATUS_CODE_UNSET, Status.STATUS_CODE_OK, Status.STATUS_CODE_ERROR])
            )
            if code:
                span.status.code = code
            if code == Status.STATUS_CODE_ERROR:
                span.status.message = draw(st.text(max_size=5))
            for key, value in draw(st.dictionaries(_KEYS, _attribute_values(), max_size=4)).items():
                span.attributes.add(key=key, value=value)
            for _ in range(draw(st.integers(0, 2))):
                event = span.events.add(
                    time_unix_nano=draw(st.integers(0, 2**50)) * 1000,
                    name=draw(st.text(min_size=1, max_size=5)),
                )
                event.attributes.add(key="k", value=AnyValue(string_value="v"))
            if draw(st.booleans()):
                span.links.add(
                    trace_id=draw(st.binary(min_size=16, max_size=16)),
                    span_id=draw(st.binary(min_size=8, max_size=8)),
                )
    return request


def _normal(request: ExportTraceServiceRequest) -> dict[bytes, tuple[str, bytes]]:
    out = {}
    for rs in request.resource_spans:
        resource = sorted(kv.SerializeToString() for kv in rs.resource.attributes)
        for ss in rs.scope_spans:
            for span in ss.spans:
                copy = Span()
                copy.CopyFrom(span)
                copy.flags = 0
                if not copy.status.code and not copy.status.message:
                    copy.ClearField("status")
                out[span.span_id] = (ss.scope.name, copy.SerializeToString() + b"|" + b"".join(resource))
    return out


@settings(max_examples=examples(60), deadline=None)  # each example is a whole trace: keep the suite fast
@given(requests_())
def test_otlp_jaeger_otlp_round_trip(request: ExportTraceServiceRequest) -> None:
    (trace,) = to_jaeger_traces(request)
    json.dumps(trace)  # plain JSON
    back = from_jaeger({"data": [trace]})
    assert _normal(back) == _normal(request)


@FUZZ
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda c: (
            st.lists(c, max_size=4)
            | st.dictionaries(
                st.sampled_from(
                    [
                        "data",
                        "spans",
                        "traceID",
                        "spanID",
                        "processes",
                        "processID",
                        "tags",
                        "logs",
                        "references",
                        "key",
                        "type",
                        "value",
                        "startTime",
                    ]
                ),
                c,
                max_size=5,
            )
        ),
        max_leaves=30,
    )
)
def test_from_jaeger_only_raises_value_error(document: Any) -> None:
    with contextlib.suppress(ValueError):
        from_jaeger(document)


@FUZZ
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_parse_import_only_raises_value_error(body: bytes) -> None:
    with contextlib.suppress(ValueError):
        parse_import(body)


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "service",
                "operation",
                "tags",
                "tag",
                "limit",
                "start",
                "end",
                "minDuration",
                "maxDuration",
                "traceID",
            ]
        ),
        st.lists(st.text(max_size=12), min_size=1, max_size=2),
    )
)
def test_search_params_only_raise_param_error(query: dict[str, list[str]]) -> None:
    with contextlib.suppress(params.ParamError):
        params.parse_search(query, 10**18)


def test_import_accepts_the_file_exporters_lines_and_a_single_pretty_object() -> None:
    request = ExportTraceServiceRequest()
    span = (
        request.resource_spans.add()
        .scope_spans.add()
        .spans.add(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, name="x")
    )
    line = otlp_json.dumps(request)
    assert len(parse_import(line + b"\n\n" + line + b"\n").resource_spans) == 2
    pretty = json.dumps(otlp_json.request_to_json(request), indent=2).encode()
    assert parse_import(pretty).resource_spans[0].scope_spans[0].spans[0] == span
