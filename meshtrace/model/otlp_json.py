"""OTLP/JSON for traces (the OTLP spec's JSON mapping), as pure functions.

Differences from protobuf's canonical JSON that OTLP/JSON requires: trace and span ids are hex
(not base64), enums are integers, keys are lowerCamelCase, 64-bit integers are strings (on
output; numbers are accepted on input) and unknown fields are ignored. Everything else is
protobuf's JSON mapping. Spans are written (as text) and read field by field
(google.protobuf.json_format is several times slower and uses base64 ids); resources and
scopes, a few per request, go through json_format.

    request_to_json(req) -> dict          request_from_json(obj) -> ExportTraceServiceRequest
    dumps(req) -> bytes                   loads(bytes | str) -> ExportTraceServiceRequest
    iter_dumps(req) -> pieces of text (for encoding large batches without blocking a loop)

Decoding errors are ValueError whose message starts with the field path
(`resourceSpans[0].scopeSpans[0].spans[3].traceId: ...`).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator
from json.encoder import encode_basestring as _quote
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from meshtrace.model.attributes import otlp_json_value

_SPAN_KINDS = dict(Span.SpanKind.items())
_STATUS_CODES = dict(Status.StatusCode.items())


def _compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def _generic(message: Any) -> str:
    return _compact(json_format.MessageToDict(message, use_integers_for_enums=True))


def _attributes_text(message: Any) -> str:
    """`,"attributes":[...]` and `,"droppedAttributesCount":n` when present."""
    out = ""
    if message.attributes:
        # Twenty attributes a span is common: string values are written inline, one f-string each
        # (no call per value, no intermediate strings; ~15% of a span's encoding).
        items = [
            f'{{"key":{_quote(kv.key)},"value":{{"stringValue":{_quote(value.string_value)}}}}}'
            if (value := kv.value).WhichOneof("value") == "string_value"
            else f'{{"key":{_quote(kv.key)},"value":{otlp_json_value(value)}}}'
            for kv in message.attributes
        ]
        out = ',"attributes":[' + ",".join(items) + "]"
    if message.dropped_attributes_count:
        out += ',"droppedAttributesCount":' + str(message.dropped_attributes_count)
    return out


def _span_text(span: Any) -> str:
    """One span as OTLP/JSON text, written field by field (json_format is about ten times slower
    and writes base64 ids); default values are left out, as protobuf's JSON mapping does."""
    parts = [f'{{"traceId":"{span.trace_id.hex()}","spanId":"{span.span_id.hex()}"']
    if span.trace_state:
        parts.append(f',"traceState":{_quote(span.trace_state)}')
    if parent := span.parent_span_id:
        parts.append(f',"parentSpanId":"{parent.hex()}"')
    if flags := span.flags:
        parts.append(f',"flags":{flags}')
    if name := span.name:
        parts.append(f',"name":{_quote(name)}')
    if kind := span.kind:
        parts.append(f',"kind":{kind}')
    if start := span.start_time_unix_nano:
        parts.append(f',"startTimeUnixNano":"{start}"')
    if end := span.end_time_unix_nano:
        parts.append(f',"endTimeUnixNano":"{end}"')
    parts.append(_attributes_text(span))
    if span.events:
        events = [
            '{"timeUnixNano":"'
            + str(e.time_unix_nano)
            + '","name":'
            + _quote(e.name)
            + _attributes_text(e)
            + "}"
            for e in span.events
        ]
        parts += [',"events":[', ",".join(events), "]"]
    if span.dropped_events_count:
        parts += [',"droppedEventsCount":', str(span.dropped_events_count)]
    if span.links:
        links = []
        for link in span.links:
            text = '{"traceId":"' + link.trace_id.hex() + '","spanId":"' + link.span_id.hex() + '"'
            if link.trace_state:
                text += ',"traceState":' + _quote(link.trace_state)
            text += _attributes_text(link)
            if link.flags:
                text += ',"flags":' + str(link.flags)
            links.append(text + "}")
        parts += [',"links":[', ",".join(links), "]"]
    if span.dropped_links_count:
        parts += [',"droppedLinksCount":', str(span.dropped_links_count)]
    if span.HasField("status"):
        status = []
        if span.status.message:
            status.append('"message":' + _quote(span.status.message))
        if span.status.code:
            status.append('"code":' + str(span.status.code))
        parts += [',"status":{', ",".join(status), "}"]
    parts.append("}")
    return "".join(parts)


def iter_dumps(request: ExportTraceServiceRequest, chunk: int = 256) -> Iterator[str]:
    """The compact OTLP/JSON text of a request in pieces of at most `chunk` spans, so an event
    loop can run other work between pieces of a large batch. `"".join(...)` is the document."""
    yield '{"resourceSpans":['
    for r, rs in enumerate(request.resource_spans):
        yield "{" if r == 0 else ",{"
        if rs.HasField("resource"):
            # Resources and scopes are few: protobuf's generic mapping keeps every field of them.
            yield '"resource":' + _generic(rs.resource) + ","
        yield '"scopeSpans":['
        for i, ss in enumerate(rs.scope_spans):
            yield "{" if i == 0 else ",{"
            if ss.HasField("scope"):
                yield '"scope":' + _generic(ss.scope) + ","
            yield '"spans":['
            spans = ss.spans
            for start in range(0, len(spans), chunk):
                text = ",".join([_span_text(span) for span in spans[start : start + chunk]])
                yield text if start == 0 else "," + text
            yield "]"
            if ss.schema_url:
                yield ',"schemaUrl":' + _compact(ss.schema_url)
            yield "}"
        yield "]"
        if rs.schema_url:
            yield ',"schemaUrl":' + _compact(rs.schema_url)
        yield "}"
    yield "]}"


def dumps(request: ExportTraceServiceRequest) -> bytes:
    """Compact OTLP/JSON bytes (one line)."""
    return "".join(iter_dumps(request)).encode()


def request_to_json(request: ExportTraceServiceRequest) -> dict[str, Any]:
    """The OTLP/JSON object of a request (a new dict)."""
    obj: dict[str, Any] = json.loads(dumps(request))
    return obj


# --- decoding --------------------------------------------------------------------------------

_UINT32 = 2**32
_UINT64 = 2**64
_INT64 = 2**63


def _fail(path: str, message: str) -> ValueError:
    return ValueError(f"{path}: {message}")


def _objects(container: dict[str, Any], key: str, path: str) -> list[tuple[str, dict[str, Any]]]:
    """(path, item) for a list of objects under `key` (absent or null: none)."""
    value = container.get(key)
    if value is None:
        return []
    where = f"{path}.{key}" if path else key
    if not isinstance(value, list):
        raise _fail(where, f"expected a list, got {type(value).__name__}")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise _fail(f"{where}[{i}]", f"expected an object, got {type(item).__name__}")
        out.append((f"{where}[{i}]", item))
    return out


def _string(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise _fail(path, f"expected a string, got {type(value).__name__}")
    return value


def _integer(value: Any, path: str, low: int, high: int) -> int:
    """A protobuf integer: a JSON number or a decimal string (64-bit values come as strings)."""
    if isinstance(value, bool):
        raise _fail(path, "expected an integer, got a boolean")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    elif isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise _fail(path, f"expected an integer, got {value!r}") from None
    if not isinstance(value, int):
        raise _fail(path, f"expected an integer, got {type(value).__name__}")
    if not low <= value < high:
        raise _fail(path, f"integer {value} out of range")
    return value


def _enum(value: Any, path: str, names: dict[str, int]) -> int:
    """Integer enums (OTLP/JSON); protobuf's enum names are accepted too."""
    if isinstance(value, str) and value in names:
        return names[value]
    return _integer(value, path, -(2**31), 2**31)


def _id(value: Any, size: int, path: str) -> bytes:
    text = _string(value, path)
    if text == "":
        return b""
    if len(text) != size * 2:
        raise _fail(path, f"expected {size * 2} hex digits ({size} bytes), got {len(text)}")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise _fail(path, f"not a hex string: {text!r}") from None


def _double(value: Any, path: str) -> float:
    if isinstance(value, str) and value in ("NaN", "Infinity", "-Infinity"):
        return float(value.replace("Infinity", "inf"))
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(path, f"expected a number, got {type(value).__name__}")
    return float(value)


def _set_value(obj: Any, target: AnyValue, path: str, depth: int = 0) -> None:
    if not isinstance(obj, dict):
        raise _fail(path, f"expected an object, got {type(obj).__name__}")
    if depth > 64:
        raise _fail(path, "values nested too deeply")
    for key, value in obj.items():
        sub = f"{path}.{key}"
        if key == "stringValue":
            target.string_value = _string(value, sub)
        elif key == "intValue":
            target.int_value = _integer(value, sub, -_INT64, _INT64)
        elif key == "boolValue":
            if not isinstance(value, bool):
                raise _fail(sub, f"expected a boolean, got {type(value).__name__}")
            target.bool_value = value
        elif key == "doubleValue":
            target.double_value = _double(value, sub)
        elif key == "bytesValue":
            try:
                target.bytes_value = base64.b64decode(_string(value, sub), validate=True)
            except binascii.Error:
                raise _fail(sub, "not base64") from None
        elif key == "arrayValue":
            if not isinstance(value, dict):
                raise _fail(sub, f"expected an object, got {type(value).__name__}")
            array = target.array_value
            for item_path, item in _objects(value, "values", sub):
                _set_value(item, array.values.add(), item_path, depth + 1)
        elif key == "kvlistValue":
            if not isinstance(value, dict):
                raise _fail(sub, f"expected an object, got {type(value).__name__}")
            _set_attributes(value, target.kvlist_value.values, sub, "values", depth + 1)


def _set_attributes(
    obj: dict[str, Any], target: Any, path: str, key: str = "attributes", depth: int = 0
) -> None:
    for item_path, kv in _objects(obj, key, path):
        attribute = target.add(key=_string(kv.get("key", ""), f"{item_path}.key"))
        if kv.get("value") is not None:
            _set_value(kv["value"], attribute.value, f"{item_path}.value", depth)


def _count(obj: dict[str, Any], key: str, path: str) -> int:
    value = obj.get(key)
    return 0 if value is None else _integer(value, f"{path}.{key}", 0, _UINT32)


def _set_event(obj: dict[str, Any], event: Any, path: str) -> None:
    if obj.get("timeUnixNano") is not None:
        event.time_unix_nano = _integer(obj["timeUnixNano"], f"{path}.timeUnixNano", 0, _UINT64)
    if obj.get("name") is not None:
        event.name = _string(obj["name"], f"{path}.name")
    _set_attributes(obj, event.attributes, path)
    event.dropped_attributes_count = _count(obj, "droppedAttributesCount", path)


def _set_link(obj: dict[str, Any], link: Any, path: str) -> None:
    link.trace_id = _id(obj.get("traceId", ""), 16, f"{path}.traceId")
    link.span_id = _id(obj.get("spanId", ""), 8, f"{path}.spanId")
    if obj.get("traceState"):
        link.trace_state = _string(obj["traceState"], f"{path}.traceState")
    if obj.get("flags") is not None:
        link.flags = _integer(obj["flags"], f"{path}.flags", 0, _UINT32)
    _set_attributes(obj, link.attributes, path)
    link.dropped_attributes_count = _count(obj, "droppedAttributesCount", path)


def _set_status(obj: Any, status: Any, path: str) -> None:
    if not isinstance(obj, dict):
        raise _fail(path, f"expected an object, got {type(obj).__name__}")
    status.SetInParent()
    if obj.get("message") is not None:
        status.message = _string(obj["message"], f"{path}.message")
    if obj.get("code") is not None:
        status.code = _enum(obj["code"], f"{path}.code", _STATUS_CODES)


def _set_span(obj: dict[str, Any], span: Any, path: str) -> None:
    get = obj.get
    span.trace_id = _id(get("traceId", ""), 16, f"{path}.traceId")
    span.span_id = _id(get("spanId", ""), 8, f"{path}.spanId")
    if get("parentSpanId"):
        span.parent_span_id = _id(obj["parentSpanId"], 8, f"{path}.parentSpanId")
    if get("traceState"):
        span.trace_state = _string(obj["traceState"], f"{path}.traceState")
    if get("name") is not None:
        span.name = _string(obj["name"], f"{path}.name")
    if get("kind") is not None:
        span.kind = _enum(obj["kind"], f"{path}.kind", _SPAN_KINDS)
    if get("flags") is not None:
        span.flags = _integer(obj["flags"], f"{path}.flags", 0, _UINT32)
    if get("startTimeUnixNano") is not None:
        span.start_time_unix_nano = _integer(
            obj["startTimeUnixNano"], f"{path}.startTimeUnixNano", 0, _UINT64
        )
    if get("endTimeUnixNano") is not None:
        span.end_time_unix_nano = _integer(obj["endTimeUnixNano"], f"{path}.endTimeUnixNano", 0, _UINT64)
    _set_attributes(obj, span.attributes, path)
    span.dropped_attributes_count = _count(obj, "droppedAttributesCount", path)
    for event_path, event in _objects(obj, "events", path):
        _set_event(event, span.events.add(), event_path)
    span.dropped_events_count = _count(obj, "droppedEventsCount", path)
    for link_path, link in _objects(obj, "links", path):
        _set_link(link, span.links.add(), link_path)
    span.dropped_links_count = _count(obj, "droppedLinksCount", path)
    if get("status") is not None:
        _set_status(obj["status"], span.status, f"{path}.status")


def _set_generic(obj: Any, message: Any, path: str) -> None:
    """Resources and scopes (few per request): protobuf's JSON mapping, with its errors' path."""
    if not isinstance(obj, dict):
        raise _fail(path, f"expected an object, got {type(obj).__name__}")
    try:
        json_format.ParseDict(obj, message, ignore_unknown_fields=True)
    except (json_format.ParseError, TypeError, ValueError, RecursionError) as exc:
        raise _fail(path, str(exc)) from None


def request_from_json(obj: Any) -> ExportTraceServiceRequest:
    """Parse an OTLP/JSON object; ValueError with the field path when it is not one."""
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    request = ExportTraceServiceRequest()
    for rs_path, rs_obj in _objects(obj, "resourceSpans", ""):
        rs = request.resource_spans.add()
        if rs_obj.get("resource") is not None:
            _set_generic(rs_obj["resource"], rs.resource, f"{rs_path}.resource")
        if rs_obj.get("schemaUrl") is not None:
            rs.schema_url = _string(rs_obj["schemaUrl"], f"{rs_path}.schemaUrl")
        for ss_path, ss_obj in _objects(rs_obj, "scopeSpans", rs_path):
            ss = rs.scope_spans.add()
            if ss_obj.get("scope") is not None:
                _set_generic(ss_obj["scope"], ss.scope, f"{ss_path}.scope")
            if ss_obj.get("schemaUrl") is not None:
                ss.schema_url = _string(ss_obj["schemaUrl"], f"{ss_path}.schemaUrl")
            spans = ss.spans
            for span_path, span_obj in _objects(ss_obj, "spans", ss_path):
                _set_span(span_obj, spans.add(), span_path)
    return request


def loads(data: bytes | str) -> ExportTraceServiceRequest:
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"invalid JSON: {exc}") from None
    except RecursionError:
        raise ValueError("invalid JSON: nested too deeply") from None
    return request_from_json(obj)
