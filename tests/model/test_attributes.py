"""OTLP attribute values in each target format (`meshtrace/model/attributes.py`), with the bytes
encoding per target that upstream uses, and the converters that call it."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList

from meshtrace.model import jaeger, zipkin
from meshtrace.model.attributes import (
    as_json,
    as_python,
    as_string,
    go_float,
    jaeger_tag,
    otlp_json_value,
    search_values,
)

RAW = b"\x00\xffhi"
B64 = base64.b64encode(RAW).decode()  # "AP9oaQ=="


def _array(*values: AnyValue) -> AnyValue:
    return AnyValue(array_value=ArrayValue(values=list(values)))


def _kvlist(**values: AnyValue) -> AnyValue:
    return AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key=k, value=v) for k, v in values.items()]))


# (value, as_string = the Collector's pcommon AsString, the Jaeger tag's type and value)
CASES: list[tuple[AnyValue, str, str, Any]] = [
    (AnyValue(), "", "string", ""),
    (AnyValue(string_value="a b"), "a b", "string", "a b"),
    (AnyValue(bool_value=True), "true", "bool", True),
    (AnyValue(int_value=-7), "-7", "int64", -7),
    (AnyValue(int_value=2**53 - 1), str(2**53 - 1), "int64", 2**53 - 1),
    (AnyValue(int_value=2**53), str(2**53), "int64", str(2**53)),  # beyond JavaScript's integers
    (AnyValue(int_value=-(2**63)), str(-(2**63)), "int64", str(-(2**63))),
    (AnyValue(double_value=2.5), "2.5", "float64", 2.5),
    (AnyValue(double_value=5.0), "5", "float64", 5.0),
    (AnyValue(double_value=1e16), "10000000000000000", "float64", 1e16),
    (AnyValue(double_value=1e21), "1e+21", "float64", 1e21),
    (AnyValue(double_value=1e-7), "1e-7", "float64", 1e-7),
    (AnyValue(double_value=0.00001), "0.00001", "float64", 0.00001),
    (AnyValue(double_value=float("nan")), "nan", "float64", "nan"),
    (AnyValue(bytes_value=RAW), B64, "binary", B64),
    (AnyValue(bytes_value=b""), "", "binary", ""),
    (_array(AnyValue(string_value="x"), AnyValue(bytes_value=RAW)), f'["x","{B64}"]', "string", None),
    (_kvlist(k=AnyValue(int_value=1), b=AnyValue(bytes_value=RAW)), f'{{"k":1,"b":"{B64}"}}', "string", None),
]


@pytest.mark.parametrize(("value", "text", "jaeger_type", "jaeger_value"), CASES)
def test_each_target(value: AnyValue, text: str, jaeger_type: str, jaeger_value: Any) -> None:
    assert as_string(value) == text
    tag = jaeger_tag("k", value)
    assert tag["type"] == jaeger_type
    assert tag["value"] == (text if jaeger_value is None else jaeger_value)
    json.dumps(as_json(value), allow_nan=False)  # always valid JSON


@pytest.mark.parametrize(
    ("number", "text"),
    [(0.0, "0"), (-0.0, "-0"), (0.1, "0.1"), (100.0, "100"), (1e20, "100000000000000000000"),
     (1.5e-7, "1.5e-7"), (-1e21, "-1e+21"), (1e-6, "0.000001"), (123456.789, "123456.789")],
)  # fmt: skip
def test_go_float(number: float, text: str) -> None:
    assert go_float(number) == text


def test_as_python_keeps_types() -> None:
    value = _array(AnyValue(bytes_value=RAW), _kvlist(n=AnyValue(double_value=1.5)))
    assert as_python(value) == [RAW, {"n": 1.5}]
    assert as_python(AnyValue()) is None


@pytest.mark.parametrize(
    ("text", "kinds"),
    [("abc", ["string_value"]), ("true", ["string_value", "bool_value"]),
     ("42", ["string_value", "double_value", "int_value"]), ("1.5", ["string_value", "double_value"]),
     ("nan", ["string_value"]), ("1e30", ["string_value", "double_value"]), (B64, ["string_value"])],
)  # fmt: skip
def test_search_values(text: str, kinds: list[str]) -> None:
    assert [v.WhichOneof("value") for v in search_values(text)] == kinds


def _request(value: AnyValue) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    span = (
        request.resource_spans.add()
        .scope_spans.add()
        .spans.add(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, name="op", start_time_unix_nano=10**15)
    )
    span.end_time_unix_nano = span.start_time_unix_nano + 1000
    span.attributes.add(key="raw", value=value)
    span.events.add(name="ev", time_unix_nano=10**15).attributes.add(key="raw", value=value)
    return request


def test_zipkin_writes_bytes_as_base64() -> None:
    """The Collector's zipkin translator writes every tag with pcommon AsString: bytes in base64
    (meshtrace wrote hex before)."""
    (span,) = zipkin.otlp_to_zipkin_v2(_request(AnyValue(bytes_value=RAW)))
    assert span["tags"]["raw"] == B64
    assert json.loads(span["annotations"][0]["value"]) == {"ev": {"raw": B64}}


def test_jaeger_round_trips_bytes_and_big_ints() -> None:
    """Jaeger's query writes binary tags in base64 and an int64 beyond 2^53-1 as a string (a
    JavaScript number would round it; meshtrace wrote the number before); both read back."""
    for value, written in ((AnyValue(bytes_value=RAW), B64), (AnyValue(int_value=2**62), str(2**62))):
        (trace,) = jaeger.to_jaeger_traces(_request(value))
        (tag,) = [t for t in trace["spans"][0]["tags"] if t["key"] == "raw"]
        assert tag["value"] == written
        back = jaeger.from_jaeger({"data": [trace]})
        (kv,) = [kv for kv in back.resource_spans[0].scope_spans[0].spans[0].attributes if kv.key == "raw"]
        assert kv.value == value, tag


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (AnyValue(), "{}"),
        (AnyValue(string_value='a"\n'), '{"stringValue":"a\\"\\n"}'),
        (AnyValue(int_value=-(2**63)), '{"intValue":"-9223372036854775808"}'),
        (AnyValue(bool_value=False), '{"boolValue":false}'),
        (AnyValue(double_value=float("inf")), '{"doubleValue":"Infinity"}'),
        (AnyValue(bytes_value=RAW), f'{{"bytesValue":"{B64}"}}'),
        (_array(AnyValue(int_value=1)), '{"arrayValue":{"values":[{"intValue":"1"}]}}'),
    ],
)
def test_otlp_json(value: AnyValue, text: str) -> None:
    """OTLP/JSON is protobuf's JSON mapping: bytes base64, int64 as a string."""
    assert otlp_json_value(value) == text
    assert json_format.Parse(text, AnyValue()) == value
