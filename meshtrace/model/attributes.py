"""OTLP attribute values (`AnyValue`) in each format meshtrace writes them to, with the bytes
encoding each target uses (docs/upstream-behaviour.md §5b):

- Zipkin v2 tags, event annotations and the debug exporter: `as_string`, the Collector's
  `pcommon.Value.AsString` (its zipkin translator calls it for every tag): bytes are standard
  base64 with padding; arrays and maps are compact JSON of `as_json`, where bytes are base64 too
  (Go's encoding/json writes a []byte so).
- Jaeger JSON (`jaeger_tag`): the Collector's jaeger translator keeps bytes as a `binary` tag and
  Jaeger's query writes its value as base64 (Go's encoding/json again); arrays and maps become a
  `string` tag holding `as_string`; an int64 outside ±(2^53-1) is written as a decimal string, as
  Jaeger's query does, since JavaScript numbers cannot hold it.
- OTLP/JSON (`otlp_json_value`): protobuf's JSON mapping, which the OTLP specification uses:
  bytes base64, int64 as a decimal string, NaN and Infinity as strings.
- The store: spans stay encoded OTLP, so values are never converted; a search tag's text is
  typed by `search_values` (bytes are not searchable: no text spelling of them is canonical).
- Processors that compare values (tail sampling): `as_python`, bytes left as bytes.
"""

from __future__ import annotations

import base64
import json
import math
from decimal import Decimal
from json.encoder import encode_basestring
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

JS_MAX_SAFE_INTEGER = 2**53 - 1


def as_python(value: AnyValue) -> Any:
    """The value as Python: None (empty), str, bool, int, float, bytes, list or dict."""
    which = value.WhichOneof("value")
    if which == "array_value":
        return [as_python(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: as_python(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, which) if which else None


def as_json(value: AnyValue) -> Any:
    """The value as plain JSON data: bytes as base64 text, a non-finite double as its Python
    name ("nan", "inf"; JSON has no number for them)."""
    which = value.WhichOneof("value")
    if which == "array_value":
        return [as_json(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: as_json(kv.value) for kv in value.kvlist_value.values}
    if which == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    if which == "double_value" and not math.isfinite(value.double_value):
        return str(value.double_value)
    return getattr(value, which) if which else None


def go_float(number: float) -> str:
    """A double as pcommon's AsString writes it (ES6 number to string): plain digits unless the
    magnitude is below 1e-6 or at least 1e21, shortest round-trip digits, `1e-7` not `1e-07`."""
    if not math.isfinite(number):
        return str(number)  # pcommon writes an error text here; the Python name says more
    magnitude = abs(number)
    if magnitude != 0 and (magnitude < 1e-6 or magnitude >= 1e21):
        text = repr(number)
        mantissa, _, exponent = text.partition("e")
        sign, digits = exponent[0], exponent[1:].lstrip("0")
        return f"{mantissa.removesuffix('.0')}e{sign}{digits}"
    return format(Decimal(repr(number)).normalize(), "f")


def as_string(value: AnyValue) -> str:
    """The value as one string, as the Collector's `pcommon.Value.AsString`."""
    which = value.WhichOneof("value")
    if which is None:
        return ""
    if which == "string_value":
        return value.string_value
    if which == "bool_value":
        return "true" if value.bool_value else "false"
    if which == "int_value":
        return str(value.int_value)
    if which == "double_value":
        return go_float(value.double_value)
    if which == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return json.dumps(as_json(value), separators=(",", ":"))


def jaeger_tag(key: str, value: AnyValue) -> dict[str, Any]:
    """A Jaeger JSON tag `{key, type, value}`."""
    which = value.WhichOneof("value")
    if which == "bool_value":
        return {"key": key, "type": "bool", "value": value.bool_value}
    if which == "int_value":
        n = value.int_value
        return {"key": key, "type": "int64", "value": n if abs(n) <= JS_MAX_SAFE_INTEGER else str(n)}
    if which == "double_value":
        d = value.double_value
        return {"key": key, "type": "float64", "value": d if math.isfinite(d) else str(d)}
    if which == "bytes_value":
        return {"key": key, "type": "binary", "value": base64.b64encode(value.bytes_value).decode()}
    return {"key": key, "type": "string", "value": as_string(value)}


def otlp_json_value(value: AnyValue) -> str:
    """The value's OTLP/JSON text (`{"stringValue":"x"}`); the common types written directly,
    as the file exporter and `otlp_http` write many of them."""
    which = value.WhichOneof("value")
    if which == "string_value":
        return '{"stringValue":' + encode_basestring(value.string_value) + "}"
    if which == "int_value":
        return '{"intValue":"' + str(value.int_value) + '"}'
    if which == "bool_value":
        return '{"boolValue":true}' if value.bool_value else '{"boolValue":false}'
    if which is None:
        return "{}"
    # Doubles (NaN/Infinity), bytes (base64), arrays and kvlists: protobuf's mapping, as is.
    mapped = json_format.MessageToDict(value, use_integers_for_enums=True)
    return json.dumps(mapped, separators=(",", ":"))


def search_values(text: str) -> list[AnyValue]:
    """Every value a search tag's text can mean: the string, and the bool, double and int it
    reads as (Jaeger's query compares tags of every type by their text)."""
    values = [AnyValue(string_value=text)]
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        values.append(AnyValue(bool_value=lowered == "true"))
    try:
        number = float(text)
    except ValueError:
        return values
    if math.isfinite(number):
        values.append(AnyValue(double_value=number))
        if number.is_integer() and -(2**63) <= number < 2**63:
            values.append(AnyValue(int_value=int(number)))
    return values
