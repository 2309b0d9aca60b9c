"""OTLP/JSON for traces (the OTLP spec's JSON mapping), as pure functions.

Differences from protobuf's canonical JSON that OTLP/JSON requires: trace and span ids are hex
(not base64), enums are integers, keys are lowerCamelCase, 64-bit integers are strings (on
output; numbers are accepted on input) and unknown fields are ignored. Everything else is
protobuf's JSON mapping. Encoding writes spans field by field (json_format is about ten times
slower); decoding rewrites hex ids to base64 and lets google.protobuf.json_format do the rest.

    request_to_json(req) -> dict          request_from_json(obj) -> ExportTraceServiceRequest
    dumps(req) -> bytes                   loads(bytes | str) -> ExportTraceServiceRequest

Decoding errors are ValueError whose message starts with the field path
(`resourceSpans[0].scopeSpans[0].spans[3].traceId: ...`).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

# id field -> its length in bytes
_SPAN_IDS = {"traceId": 16, "spanId": 8, "parentSpanId": 8}
_LINK_IDS = {"traceId": 16, "spanId": 8}


def _hex_to_b64(value: Any, size: int, path: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{path}: expected a hex string, got {type(value).__name__}")
    if value == "":
        return ""
    if len(value) != size * 2:
        raise ValueError(f"{path}: expected {size * 2} hex digits ({size} bytes), got {len(value)}")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise ValueError(f"{path}: not a hex string: {value!r}") from None
    return base64.b64encode(raw).decode("ascii")


def _spans(obj: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    """(path, span) for every span dict, checking the containers' shapes on the way."""
    out: list[tuple[str, dict[str, Any]]] = []

    def items(container: dict[str, Any], key: str, where: str) -> list[tuple[str, dict[str, Any]]]:
        value = container.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise ValueError(f"{where}{key}: expected a list, got {type(value).__name__}")
        result = []
        for i, item in enumerate(value):
            item_path = f"{where}{key}[{i}]"
            if not isinstance(item, dict):
                raise ValueError(f"{item_path}: expected an object, got {type(item).__name__}")
            result.append((item_path, item))
        return result

    for rs_path, rs in items(obj, "resourceSpans", path):
        for ss_path, ss in items(rs, "scopeSpans", rs_path + "."):
            out.extend(items(ss, "spans", ss_path + "."))
    return out


def _rewrite_ids(obj: dict[str, Any], convert: Callable[[Any, int, str], str]) -> None:
    for span_path, span in _spans(obj):
        for key, size in _SPAN_IDS.items():
            if key in span:
                span[key] = convert(span[key], size, f"{span_path}.{key}")
        links = span.get("links")
        if isinstance(links, list):
            for i, link in enumerate(links):
                if not isinstance(link, dict):
                    raise ValueError(f"{span_path}.links[{i}]: expected an object")
                for key, size in _LINK_IDS.items():
                    if key in link:
                        link[key] = convert(link[key], size, f"{span_path}.links[{i}].{key}")


def _value(v: Any) -> dict[str, Any]:
    which = v.WhichOneof("value")
    if which == "string_value":
        return {"stringValue": v.string_value}
    if which == "int_value":
        return {"intValue": str(v.int_value)}
    if which == "bool_value":
        return {"boolValue": v.bool_value}
    if which is None:
        return {}
    # Doubles (NaN/Infinity), bytes (base64), arrays and kvlists: protobuf's mapping, as is.
    return json_format.MessageToDict(v, use_integers_for_enums=True)


def _attributes(out: dict[str, Any], message: Any) -> None:
    if message.attributes:
        out["attributes"] = [{"key": kv.key, "value": _value(kv.value)} for kv in message.attributes]
    if message.dropped_attributes_count:
        out["droppedAttributesCount"] = message.dropped_attributes_count


def _span(span: Any) -> dict[str, Any]:
    """One span, written field by field: json_format is ten times slower and writes base64 ids."""
    out: dict[str, Any] = {"traceId": span.trace_id.hex(), "spanId": span.span_id.hex()}
    if span.trace_state:
        out["traceState"] = span.trace_state
    if span.parent_span_id:
        out["parentSpanId"] = span.parent_span_id.hex()
    if span.flags:
        out["flags"] = span.flags
    if span.name:
        out["name"] = span.name
    if span.kind:
        out["kind"] = span.kind
    if span.start_time_unix_nano:
        out["startTimeUnixNano"] = str(span.start_time_unix_nano)
    if span.end_time_unix_nano:
        out["endTimeUnixNano"] = str(span.end_time_unix_nano)
    _attributes(out, span)
    if span.events:
        events = []
        for event in span.events:
            e: dict[str, Any] = {"timeUnixNano": str(event.time_unix_nano), "name": event.name}
            _attributes(e, event)
            events.append(e)
        out["events"] = events
    if span.dropped_events_count:
        out["droppedEventsCount"] = span.dropped_events_count
    if span.links:
        links = []
        for link in span.links:
            item: dict[str, Any] = {"traceId": link.trace_id.hex(), "spanId": link.span_id.hex()}
            if link.trace_state:
                item["traceState"] = link.trace_state
            _attributes(item, link)
            if link.flags:
                item["flags"] = link.flags
            links.append(item)
        out["links"] = links
    if span.dropped_links_count:
        out["droppedLinksCount"] = span.dropped_links_count
    if span.HasField("status"):
        status: dict[str, Any] = {}
        if span.status.message:
            status["message"] = span.status.message
        if span.status.code:
            status["code"] = span.status.code
        out["status"] = status
    return out


def request_to_json(request: ExportTraceServiceRequest) -> dict[str, Any]:
    """The OTLP/JSON object of a request (a new dict)."""
    resource_spans = []
    for rs in request.resource_spans:
        # Resources and scopes are few: protobuf's generic mapping keeps every field of them.
        rs_out: dict[str, Any] = {}
        if rs.HasField("resource"):
            rs_out["resource"] = json_format.MessageToDict(rs.resource, use_integers_for_enums=True)
        scope_spans = []
        for ss in rs.scope_spans:
            ss_out: dict[str, Any] = {}
            if ss.HasField("scope"):
                ss_out["scope"] = json_format.MessageToDict(ss.scope, use_integers_for_enums=True)
            ss_out["spans"] = [_span(span) for span in ss.spans]
            if ss.schema_url:
                ss_out["schemaUrl"] = ss.schema_url
            scope_spans.append(ss_out)
        rs_out["scopeSpans"] = scope_spans
        if rs.schema_url:
            rs_out["schemaUrl"] = rs.schema_url
        resource_spans.append(rs_out)
    return {"resourceSpans": resource_spans}


def request_from_json(obj: Any) -> ExportTraceServiceRequest:
    """Parse an OTLP/JSON object; ValueError with the field path when it is not one."""
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    obj = json.loads(json.dumps(obj))  # own copy: ids are rewritten in place
    _rewrite_ids(obj, _hex_to_b64)
    request = ExportTraceServiceRequest()
    try:
        json_format.ParseDict(obj, request, ignore_unknown_fields=True)
    except (json_format.ParseError, binascii.Error, TypeError, RecursionError) as exc:
        raise ValueError(_path_of(str(exc))) from None
    return request


def _path_of(message: str) -> str:
    """json_format nests "Failed to parse X field: " prefixes; turn them into a dotted path."""
    parts = []
    prefix = "Failed to parse "
    while message.startswith(prefix) and " field: " in message:
        name, _, message = message[len(prefix) :].partition(" field: ")
        parts.append(name)
    return f"{'.'.join(parts)}: {message}" if parts else message


def dumps(request: ExportTraceServiceRequest) -> bytes:
    """Compact OTLP/JSON bytes (one line)."""
    return json.dumps(request_to_json(request), separators=(",", ":")).encode()


def loads(data: bytes | str) -> ExportTraceServiceRequest:
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"invalid JSON: {exc}") from None
    except RecursionError:
        raise ValueError("invalid JSON: nested too deeply") from None
    return request_from_json(obj)
