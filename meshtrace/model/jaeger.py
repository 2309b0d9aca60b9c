"""Jaeger UI JSON (what Jaeger's `/api/traces` answers and its UI downloads) to and from OTLP.
Pure converters; the mapping follows Jaeger's own OTLP translator (docs/upstream-behaviour.md §5):

- trace ids are lowercase hex, 16 characters when the high half is zero, else 32;
- span kind -> tag `span.kind`; status Error -> tags `error=true`, `otel.status_code=ERROR`
  (+ `otel.status_description`); Ok -> `otel.status_code=OK`; scope -> `otel.scope.name`/`version`;
  tracestate -> `w3c.tracestate`;
- parent -> a `CHILD_OF` reference, links -> `FOLLOWS_FROM`; events -> logs (field `event` = name);
- each distinct resource -> a process (`service.name` -> `serviceName`, the rest -> `tags`).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from meshtrace.model.attributes import jaeger_tag
from meshtrace.model.validate import MAX_TIME_NS

JsonDict = dict[str, Any]

SPAN_KIND_NAMES: dict[int, str] = {
    Span.SPAN_KIND_INTERNAL: "internal",
    Span.SPAN_KIND_SERVER: "server",
    Span.SPAN_KIND_CLIENT: "client",
    Span.SPAN_KIND_PRODUCER: "producer",
    Span.SPAN_KIND_CONSUMER: "consumer",
}
SPAN_KIND_BY_NAME: dict[str, int] = {
    **{name: kind for kind, name in SPAN_KIND_NAMES.items()},
    "unspecified": Span.SPAN_KIND_UNSPECIFIED,
}
STATUS_NAMES: dict[int, str] = {
    Status.STATUS_CODE_UNSET: "UNSET",
    Status.STATUS_CODE_OK: "OK",
    Status.STATUS_CODE_ERROR: "ERROR",
}
STATUS_BY_NAME: dict[str, int] = {name: code for code, name in STATUS_NAMES.items()}
UNKNOWN_SERVICE = "unknown_service"


def trace_id_to_hex(trace_id: bytes) -> str:
    """Jaeger's spelling: 16 hex characters when the high 64 bits are zero, else 32."""
    if len(trace_id) == 16 and not any(trace_id[:8]):
        return trace_id[8:].hex()
    return trace_id.hex()


def _parse_hex_id(text: str, size: int, what: str) -> bytes:
    s = text.strip()
    if not s or len(s) > 2 * size:
        raise ValueError(f"{what} must be 1 to {2 * size} hex characters, got {text!r}")
    try:
        return bytes.fromhex(s.rjust(2 * size, "0"))
    except ValueError:
        raise ValueError(f"{what} must be hex, got {text!r}") from None


def parse_trace_id(text: str) -> bytes:
    """16 bytes from 1-32 hex characters (shorter ids are left-padded, as Jaeger does)."""
    return _parse_hex_id(text, 16, "trace id")


def parse_span_id(text: str) -> bytes:
    return _parse_hex_id(text, 8, "span id")


# --- OTLP -> Jaeger ---------------------------------------------------------------------------


def _str_tag(key: str, value: str) -> JsonDict:
    return {"key": key, "type": "string", "value": value}


def _tags(attributes: Iterable[KeyValue]) -> list[JsonDict]:
    return [jaeger_tag(kv.key, kv.value) for kv in attributes]


def _process(resource: Resource) -> JsonDict:
    service = UNKNOWN_SERVICE
    tags = []
    for kv in resource.attributes:
        if kv.key == "service.name" and kv.value.WhichOneof("value") == "string_value":
            service = kv.value.string_value or UNKNOWN_SERVICE
        else:
            tags.append(jaeger_tag(kv.key, kv.value))
    return {"serviceName": service, "tags": tags}


def _span(span: Span, scope_name: str, scope_version: str, process_id: str) -> JsonDict:
    trace_hex = trace_id_to_hex(span.trace_id)
    references = []
    if span.parent_span_id and any(span.parent_span_id):
        references.append({"refType": "CHILD_OF", "traceID": trace_hex, "spanID": span.parent_span_id.hex()})
    for link in span.links:
        references.append(
            {
                "refType": "FOLLOWS_FROM",
                "traceID": trace_id_to_hex(link.trace_id),
                "spanID": link.span_id.hex(),
            }
        )
    tags = _tags(span.attributes)
    if scope_name:
        tags.append(_str_tag("otel.scope.name", scope_name))
    if scope_version:
        tags.append(_str_tag("otel.scope.version", scope_version))
    kind = SPAN_KIND_NAMES.get(span.kind)
    if kind:
        tags.append(_str_tag("span.kind", kind))
    code = span.status.code
    if code == Status.STATUS_CODE_ERROR:
        tags.append({"key": "error", "type": "bool", "value": True})
        tags.append(_str_tag("otel.status_code", "ERROR"))
        if span.status.message:
            tags.append(_str_tag("otel.status_description", span.status.message))
    elif code == Status.STATUS_CODE_OK:
        tags.append(_str_tag("otel.status_code", "OK"))
    if span.trace_state:
        tags.append(_str_tag("w3c.tracestate", span.trace_state))
    logs = []
    for event in span.events:
        fields = [_str_tag("event", event.name)] if event.name else []
        fields += _tags(event.attributes)
        logs.append({"timestamp": event.time_unix_nano // 1000, "fields": fields})
    start = span.start_time_unix_nano
    end = span.end_time_unix_nano
    return {
        "traceID": trace_hex,
        "spanID": span.span_id.hex(),
        "flags": (span.flags & 0xFF) or 1,  # every stored span was sampled
        "operationName": span.name,
        "references": references,
        "startTime": start // 1000,
        "duration": (end - start) // 1000 if end > start else 0,
        "tags": tags,
        "logs": logs,
        "processID": process_id,
        "warnings": None,
    }


def to_jaeger_traces(request: ExportTraceServiceRequest) -> list[JsonDict]:
    """Jaeger UI trace objects for every trace in `request`, in order of first appearance."""
    traces: dict[bytes, JsonDict] = {}
    processes: dict[bytes, dict[str, str]] = {}  # trace id -> process key -> process id
    for rs in request.resource_spans:
        process = _process(rs.resource)
        process_key = json.dumps(process, sort_keys=True)
        for ss in rs.scope_spans:
            for span in ss.spans:
                trace = traces.get(span.trace_id)
                if trace is None:
                    trace = traces[span.trace_id] = {
                        "traceID": trace_id_to_hex(span.trace_id),
                        "spans": [],
                        "processes": {},
                        "warnings": None,
                    }
                    processes[span.trace_id] = {}
                ids = processes[span.trace_id]
                pid = ids.get(process_key)
                if pid is None:
                    pid = ids[process_key] = f"p{len(ids) + 1}"
                    trace["processes"][pid] = process
                trace["spans"].append(_span(span, ss.scope.name, ss.scope.version, pid))
    return list(traces.values())


# --- Jaeger -> OTLP ---------------------------------------------------------------------------


def _any_value(tag_obj: Mapping[str, Any], where: str) -> AnyValue:
    kind = str(tag_obj.get("type", "string")).lower()
    value = tag_obj.get("value")
    try:
        if kind == "bool":
            if isinstance(value, str):
                return AnyValue(bool_value=value.strip().lower() == "true")
            return AnyValue(bool_value=bool(value))
        if kind == "int64":
            return AnyValue(int_value=int(value))  # type: ignore[arg-type]
        if kind == "float64":
            return AnyValue(double_value=float(value))  # type: ignore[arg-type]
        if kind == "binary":
            return AnyValue(bytes_value=base64.b64decode(str(value), validate=True))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: value {value!r} is not {kind}: {exc}") from None
    return AnyValue(string_value="" if value is None else str(value))


def _key_values(tags: Any, where: str) -> list[tuple[str, AnyValue]]:
    if tags is None:
        return []
    if not isinstance(tags, list):
        raise ValueError(f"{where}: expected a list of tags")
    out = []
    for i, t in enumerate(tags):
        if not isinstance(t, dict) or not isinstance(t.get("key"), str):
            raise ValueError(f"{where}[{i}]: expected {{key, type, value}}")
        out.append((t["key"], _any_value(t, f"{where}[{i}]")))
    return out


def _int(obj: Mapping[str, Any], key: str, where: str) -> int:
    value = obj.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{where}.{key}: expected a number")
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{where}.{key}: expected a number, got {value!r}") from None


def _micros(obj: Mapping[str, Any], key: str, where: str, since: int) -> int:
    """A time (`since` 0) or a duration after `since`, in microseconds, such that the time it
    ends at lies between 1970 and 2262 (model/validate.py)."""
    value = _int(obj, key, where)
    if not 0 <= (since + value) * 1000 <= MAX_TIME_NS:
        raise ValueError(f"{where}.{key}: {value} µs puts the span outside 1970-01-01..2262-04-11")
    return value


def _traces_of(document: Any) -> list[Any]:
    if isinstance(document, dict) and "data" in document:
        document = document["data"]
    if isinstance(document, dict):
        document = [document]
    if not isinstance(document, list):
        raise ValueError("expected Jaeger JSON: {data: [trace, ...]}, a list of traces or one trace")
    return document


def from_jaeger(document: Any) -> ExportTraceServiceRequest:
    """OTLP from Jaeger UI JSON: `{"data": [trace, ...]}` (a download), a list of traces, or one
    trace. ValueError names the offending field (e.g. `data[0].spans[2].spanID`)."""
    request = ExportTraceServiceRequest()
    resources: dict[str, ResourceSpans] = {}
    scopes: dict[tuple[str, str, str], ScopeSpans] = {}
    for ti, trace in enumerate(_traces_of(document)):
        tw = f"data[{ti}]"
        if not isinstance(trace, dict) or not isinstance(trace.get("spans"), list):
            raise ValueError(f"{tw}: expected a trace object with spans[]")
        processes = trace.get("processes") or {}
        if not isinstance(processes, dict):
            raise ValueError(f"{tw}.processes: expected an object")
        for si, obj in enumerate(trace["spans"]):
            sw = f"{tw}.spans[{si}]"
            if not isinstance(obj, dict):
                raise ValueError(f"{sw}: expected a span object")
            rkey, rs = _resource(obj, processes, sw, request, resources)
            span, scope_name, scope_version = _span_of(obj, trace, sw)
            skey = (rkey, scope_name, scope_version)
            ss = scopes.get(skey)
            if ss is None:
                ss = scopes[skey] = rs.scope_spans.add()
                ss.scope.name = scope_name
                ss.scope.version = scope_version
            ss.spans.append(span)
    return request


def _resource(
    obj: Mapping[str, Any],
    processes: Mapping[str, Any],
    sw: str,
    request: ExportTraceServiceRequest,
    resources: dict[str, ResourceSpans],
) -> tuple[str, ResourceSpans]:
    """The span's process as a resource (one per distinct service and tags), added on first use."""
    process = obj.get("process") or processes.get(obj.get("processID", ""), {})
    if not isinstance(process, dict):
        raise ValueError(f"{sw}.processID: unknown process")
    service = str(process.get("serviceName") or UNKNOWN_SERVICE)
    process_tags = _key_values(process.get("tags"), f"{sw}.process.tags")
    rkey = json.dumps([service, [(k, v.SerializeToString().hex()) for k, v in process_tags]])
    rs = resources.get(rkey)
    if rs is None:
        rs = resources[rkey] = request.resource_spans.add()
        rs.resource.attributes.add(key="service.name", value=AnyValue(string_value=service))
        for k, v in process_tags:
            rs.resource.attributes.add(key=k, value=v)
    return rkey, rs


def _span_of(obj: Mapping[str, Any], trace: Mapping[str, Any], sw: str) -> tuple[Span, str, str]:
    """One Jaeger span as an OTLP span, with its scope's name and version (from its tags)."""
    span = Span()
    try:
        span.trace_id = parse_trace_id(str(obj.get("traceID", trace.get("traceID", ""))))
        span.span_id = parse_span_id(str(obj.get("spanID", "")))
    except ValueError as exc:
        raise ValueError(f"{sw}: {exc}") from None
    span.name = str(obj.get("operationName", ""))
    start_us = _micros(obj, "startTime", sw, 0)
    span.start_time_unix_nano = start_us * 1000
    span.end_time_unix_nano = (start_us + _micros(obj, "duration", sw, start_us)) * 1000
    span.flags = _int(obj, "flags", sw) & 0xFF
    scope = _apply_tags(span, _key_values(obj.get("tags"), f"{sw}.tags"))
    _apply_references(span, obj.get("references") or [], sw)
    _apply_logs(span, obj.get("logs") or [], sw)
    return span, *scope


def _apply_tags(span: Span, tags: list[tuple[str, AnyValue]]) -> tuple[str, str]:
    """Span tags: the ones Jaeger's translator writes for OTLP fields go back to those fields
    (kind, status, scope, tracestate), the rest become attributes. Returns the scope."""
    scope_name = scope_version = ""
    status_code: int | None = None
    is_error = False
    for k, v in tags:
        text = v.string_value
        if k == "span.kind":
            span.kind = SPAN_KIND_BY_NAME.get(text.lower(), Span.SPAN_KIND_UNSPECIFIED)  # type: ignore[assignment]
        elif k == "otel.status_code":
            status_code = STATUS_BY_NAME.get(text.upper(), Status.STATUS_CODE_UNSET)
        elif k == "error":
            is_error = v.bool_value or text.lower() == "true"
        elif k == "otel.status_description":
            span.status.message = text
        elif k in ("otel.scope.name", "otel.library.name"):
            scope_name = text
        elif k in ("otel.scope.version", "otel.library.version"):
            scope_version = text
        elif k == "w3c.tracestate":
            span.trace_state = text
        else:
            span.attributes.add(key=k, value=v)
    if status_code is None:
        status_code = Status.STATUS_CODE_ERROR if is_error else Status.STATUS_CODE_UNSET
    if status_code:
        span.status.code = status_code  # type: ignore[assignment]
    return scope_name, scope_version


def _apply_references(span: Span, references: Any, sw: str) -> None:
    """The first CHILD_OF reference in the same trace is the parent; every other is a link."""
    for ri, ref in enumerate(references):
        rw = f"{sw}.references[{ri}]"
        if not isinstance(ref, dict):
            raise ValueError(f"{rw}: expected {{refType, traceID, spanID}}")
        try:
            ref_trace = parse_trace_id(str(ref.get("traceID", "")))
            ref_span = parse_span_id(str(ref.get("spanID", "")))
        except ValueError as exc:
            raise ValueError(f"{rw}: {exc}") from None
        if (
            ref.get("refType", "CHILD_OF") == "CHILD_OF"
            and ref_trace == span.trace_id
            and not span.parent_span_id
        ):
            span.parent_span_id = ref_span
        else:
            span.links.add(trace_id=ref_trace, span_id=ref_span)


def _apply_logs(span: Span, logs: Any, sw: str) -> None:
    """Logs -> events: the `event` field is the event's name."""
    for li, entry in enumerate(logs):
        lw = f"{sw}.logs[{li}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{lw}: expected {{timestamp, fields}}")
        event = span.events.add(time_unix_nano=_int(entry, "timestamp", lw) * 1000)
        for k, v in _key_values(entry.get("fields"), f"{lw}.fields"):
            if k == "event" and v.WhichOneof("value") == "string_value" and not event.name:
                event.name = v.string_value
            else:
                event.attributes.add(key=k, value=v)
