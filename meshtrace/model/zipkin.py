"""Zipkin v1/v2 <-> OTLP, as pure functions over plain data.

The common currency is the Zipkin v2 JSON span as a dict (`{"traceId", "id", "kind", ...}`): the
v2 protobuf `ListOfSpans` and v1 JSON decode into it, and `zipkin_v2_to_otlp` maps it to an
`ExportTraceServiceRequest` the way the Collector's zipkin receiver does (kind 1:1,
`localEndpoint.serviceName` -> resource `service.name`, tags -> attributes, `error` -> status
Error, annotations -> events, endpoints -> `net.host.*` / `peer.service` and `net.peer.*`).
`otlp_to_zipkin_v2` is the reverse, following the OpenTelemetry specification's Zipkin exporter
mapping. Every decoder raises `ValueError` naming the offending field, never anything else.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from meshtrace.model.attributes import as_json, as_string
from meshtrace.model.validate import MAX_TIME_NS

ZipkinSpan = dict[str, Any]

_HEX = re.compile(r"[0-9a-fA-F]+")
_MAX_MICROS = 2**63 // 1000  # timestamps become uint64/int64 nanoseconds

# Zipkin v2 kind <-> OTLP span kind. Without a kind the Collector reads a `span.kind` tag
# (`internal` -> INTERNAL) and otherwise leaves the kind UNSPECIFIED.
_KIND_TO_OTLP = {
    "CLIENT": Span.SPAN_KIND_CLIENT,
    "SERVER": Span.SPAN_KIND_SERVER,
    "PRODUCER": Span.SPAN_KIND_PRODUCER,
    "CONSUMER": Span.SPAN_KIND_CONSUMER,
}
_OTLP_TO_KIND = {v: k for k, v in _KIND_TO_OTLP.items()}

# Tags the OpenTelemetry Zipkin exporters write for OTLP fields that have no Zipkin field: they
# become those fields again instead of attributes.
_SCOPE_NAME_TAGS = ("otel.scope.name", "otel.library.name")
_SCOPE_VERSION_TAGS = ("otel.scope.version", "otel.library.version")
_STATUS_CODE_TAG = "otel.status_code"
_STATUS_DESCRIPTION_TAG = "otel.status_description"
_SPAN_KIND_TAG = "span.kind"
_TRACESTATE_TAG = "w3c.tracestate"
_SCOPE_TAGS = frozenset((*_SCOPE_NAME_TAGS, *_SCOPE_VERSION_TAGS))
# The values the Collector reads in `otel.status_code` (its own zipkin exporter writes "Ok"/"Error");
# any other value is consumed and leaves the status unset.
_STATUS_CODES: dict[str, Status.StatusCode.ValueType] = {
    "STATUS_CODE_UNSET": Status.STATUS_CODE_UNSET,
    "STATUS_CODE_OK": Status.STATUS_CODE_OK,
    "STATUS_CODE_ERROR": Status.STATUS_CODE_ERROR,
    "Unset": Status.STATUS_CODE_UNSET,
    "Ok": Status.STATUS_CODE_OK,
    "Error": Status.STATUS_CODE_ERROR,
}
# A span without `timestamp` starts at 0 and is marked so (the Collector's attribute).
START_TIME_ABSENT = "otel.zipkin.absentField.startTime"
# `parse_string_tags`: the Collector's patterns (ASCII digits); anything else stays a string.
_INT_TAG = re.compile(r"-?[0-9]+", re.ASCII)
_DOUBLE_TAG = re.compile(r"-?[0-9]+\.[0-9]+", re.ASCII)
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


# --- zipkin.proto (openzipkin/zipkin-api), built from a descriptor at import: no protoc needed ---


def _build_proto_classes() -> tuple[type[Message], type[Message]]:
    fd = descriptor_pb2.FileDescriptorProto(name="meshtrace_zipkin.proto", package="zipkin.proto3")
    fd.syntax = "proto3"
    f = descriptor_pb2.FieldDescriptorProto
    optional, repeated = f.LABEL_OPTIONAL, f.LABEL_REPEATED

    def add(msg: descriptor_pb2.DescriptorProto, name: str, number: int, type_: int, **kw: Any) -> None:
        msg.field.add(name=name, number=number, type=type_, label=kw.pop("label", optional), **kw)

    endpoint = fd.message_type.add(name="Endpoint")
    add(endpoint, "service_name", 1, f.TYPE_STRING)
    add(endpoint, "ipv4", 2, f.TYPE_BYTES)
    add(endpoint, "ipv6", 3, f.TYPE_BYTES)
    add(endpoint, "port", 4, f.TYPE_INT32)
    annotation = fd.message_type.add(name="Annotation")
    add(annotation, "timestamp", 1, f.TYPE_FIXED64)
    add(annotation, "value", 2, f.TYPE_STRING)
    span = fd.message_type.add(name="Span")
    kind = span.enum_type.add(name="Kind")
    for i, name in enumerate(("SPAN_KIND_UNSPECIFIED", "CLIENT", "SERVER", "PRODUCER", "CONSUMER")):
        kind.value.add(name=name, number=i)
    tags = span.nested_type.add(name="TagsEntry")
    tags.options.map_entry = True
    add(tags, "key", 1, f.TYPE_STRING)
    add(tags, "value", 2, f.TYPE_STRING)
    add(span, "trace_id", 1, f.TYPE_BYTES)
    add(span, "parent_id", 2, f.TYPE_BYTES)
    add(span, "id", 3, f.TYPE_BYTES)
    add(span, "kind", 4, f.TYPE_ENUM, type_name=".zipkin.proto3.Span.Kind")
    add(span, "name", 5, f.TYPE_STRING)
    add(span, "timestamp", 6, f.TYPE_FIXED64)
    add(span, "duration", 7, f.TYPE_UINT64)
    add(span, "local_endpoint", 8, f.TYPE_MESSAGE, type_name=".zipkin.proto3.Endpoint")
    add(span, "remote_endpoint", 9, f.TYPE_MESSAGE, type_name=".zipkin.proto3.Endpoint")
    add(span, "annotations", 10, f.TYPE_MESSAGE, type_name=".zipkin.proto3.Annotation", label=repeated)
    add(span, "tags", 11, f.TYPE_MESSAGE, type_name=".zipkin.proto3.Span.TagsEntry", label=repeated)
    add(span, "debug", 12, f.TYPE_BOOL)
    add(span, "shared", 13, f.TYPE_BOOL)
    list_of_spans = fd.message_type.add(name="ListOfSpans")
    add(list_of_spans, "spans", 1, f.TYPE_MESSAGE, type_name=".zipkin.proto3.Span", label=repeated)
    # A private pool: the official Zipkin proto exporter may register the same names globally.
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    get = message_factory.GetMessageClass
    return get(pool.FindMessageTypeByName("zipkin.proto3.ListOfSpans")), get(
        pool.FindMessageTypeByName("zipkin.proto3.Span")
    )


ListOfSpans, _ProtoSpan = _build_proto_classes()
_PROTO_KINDS = ("", "CLIENT", "SERVER", "PRODUCER", "CONSUMER")


def _endpoint_from_proto(ep: Any) -> dict[str, Any] | None:
    out: dict[str, Any] = {}
    if ep.service_name:
        out["serviceName"] = ep.service_name
    if ep.ipv4:
        if len(ep.ipv4) != 4:
            raise ValueError(f"ipv4 must be 4 bytes, got {len(ep.ipv4)}")
        out["ipv4"] = str(ipaddress.IPv4Address(ep.ipv4))
    if ep.ipv6:
        if len(ep.ipv6) != 16:
            raise ValueError(f"ipv6 must be 16 bytes, got {len(ep.ipv6)}")
        out["ipv6"] = str(ipaddress.IPv6Address(ep.ipv6))
    if ep.port:
        out["port"] = ep.port
    return out or None


def decode_list_of_spans(body: bytes) -> list[ZipkinSpan]:
    """Zipkin v2 protobuf `ListOfSpans` -> v2 JSON-shaped dicts."""
    message: Any = ListOfSpans()
    try:
        message.ParseFromString(body)
    except DecodeError as exc:
        raise ValueError(f"invalid zipkin protobuf ListOfSpans: {exc}") from None
    spans: list[ZipkinSpan] = []
    for i, ps in enumerate(message.spans):
        span: ZipkinSpan = {"traceId": ps.trace_id.hex(), "id": ps.id.hex()}
        if ps.parent_id:
            span["parentId"] = ps.parent_id.hex()
        if ps.name:
            span["name"] = ps.name
        if ps.kind:
            if ps.kind >= len(_PROTO_KINDS):
                raise ValueError(f"spans[{i}].kind: unknown value {ps.kind}")
            span["kind"] = _PROTO_KINDS[ps.kind]
        if ps.timestamp:
            span["timestamp"] = ps.timestamp
        if ps.duration:
            span["duration"] = ps.duration
        for field, key in (("local_endpoint", "localEndpoint"), ("remote_endpoint", "remoteEndpoint")):
            if ps.HasField(field):
                try:
                    endpoint = _endpoint_from_proto(getattr(ps, field))
                except ValueError as exc:
                    raise ValueError(f"spans[{i}].{key}: {exc}") from None
                if endpoint is not None:
                    span[key] = endpoint
        if ps.annotations:
            span["annotations"] = [{"timestamp": a.timestamp, "value": a.value} for a in ps.annotations]
        if ps.tags:
            span["tags"] = dict(ps.tags)
        if ps.debug:
            span["debug"] = True
        if ps.shared:
            span["shared"] = True
        spans.append(span)
    return spans


def _endpoint_to_proto(ep: Mapping[str, Any], out: Any) -> None:
    if ep.get("serviceName"):
        out.service_name = ep["serviceName"]
    if ep.get("ipv4"):
        out.ipv4 = ipaddress.IPv4Address(ep["ipv4"]).packed
    if ep.get("ipv6"):
        out.ipv6 = ipaddress.IPv6Address(ep["ipv6"]).packed
    if ep.get("port"):
        out.port = int(ep["port"])


def encode_list_of_spans(spans: Iterable[Mapping[str, Any]]) -> bytes:
    """v2 JSON-shaped dicts -> Zipkin v2 protobuf `ListOfSpans`."""
    message: Any = ListOfSpans()
    for span in spans:
        ps = message.spans.add()
        ps.trace_id = bytes.fromhex(span["traceId"])
        ps.id = bytes.fromhex(span["id"])
        if span.get("parentId"):
            ps.parent_id = bytes.fromhex(span["parentId"])
        if span.get("kind"):
            ps.kind = _PROTO_KINDS.index(span["kind"])
        if span.get("name"):
            ps.name = span["name"]
        if span.get("timestamp"):
            ps.timestamp = int(span["timestamp"])
        if span.get("duration"):
            ps.duration = int(span["duration"])
        if span.get("localEndpoint"):
            _endpoint_to_proto(span["localEndpoint"], ps.local_endpoint)
        if span.get("remoteEndpoint"):
            _endpoint_to_proto(span["remoteEndpoint"], ps.remote_endpoint)
        for a in span.get("annotations") or ():
            ps.annotations.add(timestamp=int(a["timestamp"]), value=a["value"])
        for k, v in (span.get("tags") or {}).items():
            ps.tags[k] = v
        ps.debug = bool(span.get("debug"))
        ps.shared = bool(span.get("shared"))
    return bytes(message.SerializeToString())


# --- JSON bodies ---


def _load_json_list(body: bytes | str, what: str) -> list[Any]:
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"invalid {what} JSON: {exc}") from None
    if not isinstance(data, list):
        raise ValueError(f"{what} body must be a JSON array of spans, got {type(data).__name__}")
    return data


def decode_v2_json(body: bytes | str) -> list[ZipkinSpan]:
    """A Zipkin v2 JSON body (`[{...}, ...]`); the spans are validated by `zipkin_v2_to_otlp`."""
    spans = _load_json_list(body, "zipkin v2")
    for i, span in enumerate(spans):
        if not isinstance(span, dict):
            raise ValueError(f"spans[{i}] must be an object, got {type(span).__name__}")
    return spans


def decode_v1_json(body: bytes | str) -> list[ZipkinSpan]:
    """A Zipkin v1 JSON body, converted to v2 spans."""
    return zipkin_v1_to_v2(_load_json_list(body, "zipkin v1"))


# --- v1 -> v2 (the core annotations cs/sr/ss/cr/ms/mr carry kind, times and endpoints) ---

_CORE_ANNOTATIONS = {"cs", "cr", "sr", "ss", "ms", "mr", "ws", "wr"}
_REMOTE_ADDRESS_KEYS = {"ca": "SERVER", "sa": "CLIENT", "ma": None}


def _v1_tag_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    raise ValueError(f"unsupported binary annotation value {value!r}")


_V1_INT32 = re.compile(r"[+-]?[0-9]+", re.ASCII)
_V1_STATUS_TAG: dict[int, str] = {
    Status.STATUS_CODE_UNSET: "STATUS_CODE_UNSET",
    Status.STATUS_CODE_OK: "STATUS_CODE_OK",
    Status.STATUS_CODE_ERROR: "STATUS_CODE_ERROR",
}


def _v1_int32(text: str) -> int | None:
    if not _V1_INT32.fullmatch(text):
        return None
    value = int(text)
    return value if -(2**31) <= value < 2**31 else None


def _v1_status(tags: dict[str, str]) -> None:
    """The Collector's v1 status rules, re-expressed as the v2 tags its v2 rules read.

    In order of precedence: `census.status_code` (0 OK, else Error; message from
    `census.status_description` / `opencensus.status_description`), `otel.status_code` (the
    numeric code; message `otel.status_description`), an `error` tag (Error; message from the
    census or otel description), `http.status_code` (100-399 Unset, else Error; message
    `http.status_message`). The census, otel and error tags are consumed; the http ones stay.
    """
    census_code = otel_code = http_code = None
    census_message = otel_message = http_message = ""
    error = False
    for key in list(tags):
        value = tags[key]
        if key == "census.status_code":
            code = _v1_int32(value)
            if code is not None:
                census_code = Status.STATUS_CODE_OK if code == 0 else Status.STATUS_CODE_ERROR
        elif key in ("census.status_description", "opencensus.status_description"):
            census_message = value
        elif key == _STATUS_CODE_TAG:
            otel_code = _v1_int32(value)
        elif key == _STATUS_DESCRIPTION_TAG:
            otel_message = value
        elif key == "error":
            error = True
        else:
            if key == "http.status_code" and (code := _v1_int32(value)) is not None:
                http_code = Status.STATUS_CODE_UNSET if 100 <= code < 400 else Status.STATUS_CODE_ERROR
            elif key == "http.status_message":
                http_message = value
            continue
        del tags[key]
    if census_code is not None:
        code, message = census_code, census_message
    elif otel_code is not None:
        code, message = otel_code, otel_message
    elif error:
        code, message = Status.STATUS_CODE_ERROR, census_message or otel_message
    elif http_code is not None:
        code, message = http_code, http_message
    else:
        return
    # A code outside OTLP's three (the Collector keeps it as is) reads back as Unset.
    tags[_STATUS_CODE_TAG] = _V1_STATUS_TAG.get(code, "STATUS_CODE_UNSET")
    if message:
        tags[_STATUS_DESCRIPTION_TAG] = message


@dataclasses.dataclass
class _V1Span:
    """What one v1 span says, read once: the v2 fields it shares, the core annotations' times and
    endpoints, the remote endpoints of its address annotations, and its local endpoint."""

    base: ZipkinSpan
    times: dict[str, int] = dataclasses.field(default_factory=dict)
    endpoints: dict[str, Any] = dataclasses.field(default_factory=dict)
    remote: dict[str, Any] = dataclasses.field(default_factory=dict)
    local_endpoint: Any = None

    def part(self, kind: str | None, start: str, end: str, peer_key: str) -> ZipkinSpan:
        """The v2 span of one side (`start`/`end`: its core annotations; `peer_key`: the address
        annotation naming its peer)."""
        span = dict(self.base)
        times = self.times
        if kind:
            span["kind"] = kind
        if start in times:
            span["timestamp"] = times[start]
            if end in times and times[end] >= times[start]:
                span["duration"] = times[end] - times[start]
        elif end in times:
            span["timestamp"] = times[end]
        endpoint = self.endpoints.get(start) or self.endpoints.get(end) or self.local_endpoint
        if endpoint:
            span["localEndpoint"] = endpoint
        if self.remote.get(peer_key):
            span["remoteEndpoint"] = self.remote[peer_key]
        return span


def _v1_base(where: str, v1: Mapping[str, Any]) -> ZipkinSpan:
    base: ZipkinSpan = {k: v1[k] for k in ("traceId", "id", "parentId", "name", "debug") if k in v1}
    # The Collector's v1 reader takes only full-length ids (the v2 rules then check the digits).
    for key, lengths in (("traceId", (16, 32)), ("id", (16,)), ("parentId", (16,))):
        value = base.get(key)
        if isinstance(value, str) and value and len(value) not in lengths:
            digits = " or ".join(map(str, lengths))
            raise ValueError(f"{where}.{key} must have {digits} hex digits, got {value!r}")
    return base


def _v1_read(where: str, v1: Mapping[str, Any]) -> _V1Span:
    annotations = v1.get("annotations") or []
    binary = v1.get("binaryAnnotations") or []
    if not isinstance(annotations, list) or not isinstance(binary, list):
        raise ValueError(f"{where}: annotations and binaryAnnotations must be arrays")
    read = _V1Span(_v1_base(where, v1))
    other: list[dict[str, Any]] = []
    for j, a in enumerate(annotations):
        if not isinstance(a, dict) or not isinstance(a.get("value"), str):
            raise ValueError(f"{where}.annotations[{j}] must be an object with a string value")
        value = a["value"]
        if value in _CORE_ANNOTATIONS:
            read.times[value] = a.get("timestamp", 0)
            read.endpoints[value] = a.get("endpoint")
        else:
            other.append({"timestamp": a.get("timestamp", 0), "value": value})
            read.local_endpoint = read.local_endpoint or a.get("endpoint")
    tags: dict[str, str] = {}
    for j, b in enumerate(binary):
        if not isinstance(b, dict) or not isinstance(b.get("key"), str):
            raise ValueError(f"{where}.binaryAnnotations[{j}] must be an object with a string key")
        key = b["key"]
        if key in _REMOTE_ADDRESS_KEYS and b.get("value") in (True, "true", 1):
            read.remote[key] = b.get("endpoint")
            continue
        try:
            tags[key] = _v1_tag_value(b.get("value"))
        except ValueError as exc:
            raise ValueError(f"{where}.binaryAnnotations[{j}]: {exc}") from None
        read.local_endpoint = read.local_endpoint or b.get("endpoint")
    _v1_status(tags)
    if other:
        read.base["annotations"] = other
    if tags:
        read.base["tags"] = tags
    return read


def _v1_span_to_v2(i: int, v1: Any) -> list[ZipkinSpan]:
    where = f"spans[{i}]"
    if not isinstance(v1, dict):
        raise ValueError(f"{where} must be an object, got {type(v1).__name__}")
    read = _v1_read(where, v1)
    times = read.times
    is_client = "cs" in times or "cr" in times
    is_server = "sr" in times or "ss" in times
    if is_client and is_server:
        # One v1 span shared by client and server (the same span id): two v2 spans.
        client = read.part("CLIENT", "cs", "cr", "sa")
        server = read.part("SERVER", "sr", "ss", "ca")
        server["shared"] = True
        return [client, server]
    if is_client:
        span = read.part("CLIENT", "cs", "cr", "sa")
    elif is_server:
        span = read.part("SERVER", "sr", "ss", "ca")
    elif "ms" in times:
        span = read.part("PRODUCER", "ms", "ws", "ma")
    elif "mr" in times:
        span = read.part("CONSUMER", "mr", "wr", "ma")
    else:
        span = read.part(None, "", "", "")
        if read.local_endpoint:
            span["localEndpoint"] = read.local_endpoint
    # The span's own timestamp/duration, when present, win over the annotation-derived ones.
    for key in ("timestamp", "duration"):
        if v1.get(key) is not None:
            span[key] = v1[key]
    return [span]


def zipkin_v1_to_v2(spans: Iterable[Any]) -> list[ZipkinSpan]:
    """Zipkin v1 JSON spans -> v2 spans (a span shared by client and server becomes two)."""
    out: list[ZipkinSpan] = []
    for i, v1 in enumerate(spans):
        out.extend(_v1_span_to_v2(i, v1))
    return out


# --- v2 -> OTLP ---


def _hex_id(value: Any, size: int, field: str, required: bool = True) -> bytes:
    """A Zipkin hex id of up to `size` bytes, left-padded (a 64-bit trace id becomes 128 bits)."""
    if value is None or value == "":
        if required:
            raise ValueError(f"{field} is required")
        return b""
    if not isinstance(value, str) or len(value) > size * 2 or not _HEX.fullmatch(value):
        raise ValueError(f"{field} must be a hex string of at most {size * 2} characters, got {value!r}")
    raw = bytes.fromhex(value.rjust(size * 2, "0"))
    if raw == bytes(size):
        if required:
            raise ValueError(f"{field} must not be all zeros")
        return b""
    return raw


def _uint(value: Any, field: str) -> int:
    if value is None:
        return 0
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (math.isfinite(value) and 0 <= value < _MAX_MICROS)
    ):
        raise ValueError(f"{field} must be a non-negative number of microseconds, got {value!r}")
    return int(value)


def _str_attr(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def _int_attr(key: str, value: int) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(int_value=value))


def python_to_any_value(value: Any) -> AnyValue:
    """A JSON-like Python value as an OTLP AnyValue (containers as JSON strings)."""
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int) and -(2**63) <= value < 2**63:
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, str):
        return AnyValue(string_value=value)
    return AnyValue(string_value=json.dumps(value))


def _event_from_annotation(annotation: Any, field: str) -> Span.Event:
    if not isinstance(annotation, dict) or not isinstance(annotation.get("value"), str):
        raise ValueError(f"{field} must be an object with a string value")
    event = Span.Event(time_unix_nano=_uint(annotation.get("timestamp"), f"{field}.timestamp") * 1000)
    value: str = annotation["value"]
    # The OpenTelemetry exporters encode an event with attributes as `{"<name>": {attrs}}`.
    if value.startswith("{"):
        try:
            parsed = json.loads(value)
        except (json.JSONDecodeError, RecursionError):
            parsed = None
        if isinstance(parsed, dict) and len(parsed) == 1:
            ((name, attrs),) = parsed.items()
            if isinstance(attrs, dict):
                event.name = name
                event.attributes.extend(
                    KeyValue(key=str(k), value=python_to_any_value(v)) for k, v in attrs.items()
                )
                return event
    event.name = value
    return event


def _endpoint(value: Any, field: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{field} must be an object")
    port = value.get("port")
    if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 0 <= port < 65536):
        raise ValueError(f"{field}.port must be an integer 0-65535, got {port!r}")
    for key in ("serviceName", "ipv4", "ipv6"):
        if value.get(key) is not None and not isinstance(value[key], str):
            raise ValueError(f"{field}.{key} must be a string")
    return value


def _endpoint_attributes(endpoint: Mapping[str, Any], field: str, prefix: str) -> list[KeyValue]:
    """`net.<prefix>.ip` (IPv6 over IPv4, in canonical text) and `net.<prefix>.port`."""
    attrs: list[KeyValue] = []
    ip = ""
    for key, family in (("ipv4", ipaddress.IPv4Address), ("ipv6", ipaddress.IPv6Address)):
        if endpoint.get(key):
            try:
                ip = str(family(endpoint[key]))
            except ValueError:
                raise ValueError(f"{field}.{key} is not an address: {endpoint[key]!r}") from None
    if ip:
        attrs.append(_str_attr(f"net.{prefix}.ip", ip))
    if endpoint.get("port"):
        attrs.append(_int_attr(f"net.{prefix}.port", endpoint["port"]))
    return attrs


def _typed_tag(key: str, value: str) -> KeyValue:
    """`parse_string_tags`: an integer, a decimal with digits on both sides of the point, or
    true/false become that type; anything else ("1e5", "+3", ".5", " 42") stays a string."""
    if value in ("true", "false"):
        return KeyValue(key=key, value=AnyValue(bool_value=value == "true"))
    if _INT_TAG.fullmatch(value):
        return _int_attr(key, max(_INT64_MIN, min(int(value), _INT64_MAX)))  # Go's ParseInt clamps
    if _DOUBLE_TAG.fullmatch(value):
        return KeyValue(key=key, value=AnyValue(double_value=float(value)))
    return _str_attr(key, value)


def _kind(z: Mapping[str, Any], tags: dict[str, str], where: str) -> Span.SpanKind.ValueType:
    kind = z.get("kind")
    if kind in _KIND_TO_OTLP:
        return _KIND_TO_OTLP[kind]
    if kind is not None:
        raise ValueError(f"{where}.kind must be one of {sorted(_KIND_TO_OTLP)}, got {kind!r}")
    if tags.pop(_SPAN_KIND_TAG, None) == "internal":
        return Span.SPAN_KIND_INTERNAL
    return Span.SPAN_KIND_UNSPECIFIED


def _status(tags: dict[str, str]) -> Status:
    """`otel.status_code` (+ description) then `error`: any value sets Error; only `error=true`
    (a flag, as Envoy and Brave write it) is consumed, a message stays an attribute."""
    status = Status()
    if _STATUS_CODE_TAG in tags:
        status.code = _STATUS_CODES.get(tags.pop(_STATUS_CODE_TAG), Status.STATUS_CODE_UNSET)
        if _STATUS_DESCRIPTION_TAG in tags:
            status.message = tags.pop(_STATUS_DESCRIPTION_TAG)
    if "error" in tags:
        status.code = Status.STATUS_CODE_ERROR
        if tags["error"] == "true":
            del tags["error"]
    return status


def _to_otlp_span(i: int, z: Any, parse_string_tags: bool) -> tuple[str | None, tuple[str, str], Span]:
    where = f"spans[{i}]"
    if not isinstance(z, dict):
        raise ValueError(f"{where} must be an object, got {type(z).__name__}")
    span = Span(
        trace_id=_hex_id(z.get("traceId"), 16, f"{where}.traceId"),
        span_id=_hex_id(z.get("id"), 8, f"{where}.id"),
        parent_span_id=_hex_id(z.get("parentId"), 8, f"{where}.parentId", required=False),
    )
    if span.parent_span_id == span.span_id:
        span.parent_span_id = b""  # its own parent: a root, as the Collector reads it
    name = z.get("name")
    if name is not None and not isinstance(name, str):
        raise ValueError(f"{where}.name must be a string")
    span.name = name or ""
    raw_tags = z.get("tags") or {}
    if not isinstance(raw_tags, dict):
        raise ValueError(f"{where}.tags must be an object of strings")
    for key, value in raw_tags.items():
        if not isinstance(value, str):
            raise ValueError(f"{where}.tags.{key} must be a string, got {type(value).__name__}")
    tags: dict[str, str] = dict(raw_tags)
    if _TRACESTATE_TAG in tags:
        span.trace_state = tags.pop(_TRACESTATE_TAG)
    span.kind = _kind(z, tags, where)
    span.status.CopyFrom(_status(tags))
    span.attributes.extend(
        _typed_tag(key, value) if parse_string_tags else _str_attr(key, value)
        for key, value in tags.items()
        if key not in _SCOPE_TAGS
    )
    local = _endpoint(z.get("localEndpoint"), f"{where}.localEndpoint")
    remote = _endpoint(z.get("remoteEndpoint"), f"{where}.remoteEndpoint")
    span.attributes.extend(_endpoint_attributes(local, f"{where}.localEndpoint", "host"))
    if remote.get("serviceName"):
        span.attributes.append(_str_attr("peer.service", remote["serviceName"]))
    span.attributes.extend(_endpoint_attributes(remote, f"{where}.remoteEndpoint", "peer"))
    start = _uint(z.get("timestamp"), f"{where}.timestamp")
    end = start + _uint(z.get("duration"), f"{where}.duration")
    if end * 1000 > MAX_TIME_NS:  # model/validate.py would refuse it with an OTLP path
        raise ValueError(f"{where}.duration: the span would end after 2262-04-11 ({end} µs)")
    span.start_time_unix_nano = start * 1000
    span.end_time_unix_nano = end * 1000
    if not start:
        span.attributes.append(KeyValue(key=START_TIME_ABSENT, value=AnyValue(bool_value=True)))
    annotations = z.get("annotations") or []
    if not isinstance(annotations, list):
        raise ValueError(f"{where}.annotations must be an array")
    span.events.extend(
        _event_from_annotation(a, f"{where}.annotations[{j}]") for j, a in enumerate(annotations)
    )
    scope_name = next((tags[k] for k in _SCOPE_NAME_TAGS if k in tags), "")
    scope_version = next((tags[k] for k in _SCOPE_VERSION_TAGS if k in tags), "")
    return local.get("serviceName"), (scope_name, scope_version), span


def zipkin_v2_to_otlp(spans: Iterable[Any], parse_string_tags: bool = False) -> ExportTraceServiceRequest:
    """Zipkin v2 spans -> one OTLP request: a ResourceSpans per service, a ScopeSpans per scope.

    Tags are string attributes; with `parse_string_tags` (the receiver's option of that name)
    values that read as bool, int or float become attributes of that type."""
    resources: dict[str | None, dict[tuple[str, str], list[Span]]] = {}
    for i, z in enumerate(spans):
        try:
            service, scope, span = _to_otlp_span(i, z, parse_string_tags)
        except (UnicodeError, OverflowError, TypeError) as exc:
            # Strings protobuf cannot hold (lone surrogates), numbers out of range.
            raise ValueError(f"spans[{i}]: {exc}") from None
        resources.setdefault(service, {}).setdefault(scope, []).append(span)
    request = ExportTraceServiceRequest()
    for service, scopes in resources.items():
        rs: ResourceSpans = request.resource_spans.add()
        if service:
            rs.resource.attributes.append(_str_attr("service.name", service))
        for (scope_name, scope_version), otlp_spans in scopes.items():
            ss: ScopeSpans = rs.scope_spans.add()
            ss.scope.name, ss.scope.version = scope_name, scope_version
            ss.spans.extend(otlp_spans)
    return request


# --- OTLP -> v2 (the OpenTelemetry specification's Zipkin exporter mapping) ---


def _ip_endpoint_key(text: str) -> str | None:
    try:
        return "ipv4" if ipaddress.ip_address(text).version == 4 else "ipv6"
    except ValueError:
        return None


def _remote_endpoint(attrs: Mapping[str, Any]) -> dict[str, Any]:
    remote: dict[str, Any] = {}
    service = attrs.get("peer.service") or attrs.get("server.address") or attrs.get("net.peer.name")
    if isinstance(service, str) and service and _ip_endpoint_key(service) is None:
        remote["serviceName"] = service
    for key in ("net.peer.ip", "network.peer.address", "server.address", "client.address"):
        ip = attrs.get(key)
        if isinstance(ip, str) and (family := _ip_endpoint_key(ip)):
            remote[family] = ip
            break
    for key in ("net.peer.port", "network.peer.port", "server.port", "client.port"):
        port = attrs.get(key)
        if isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536:
            remote["port"] = port
            break
    return remote


def _usec(nanos: int) -> int:
    return (nanos + 500) // 1000


def otlp_to_zipkin_v2(request: ExportTraceServiceRequest) -> list[ZipkinSpan]:
    """An OTLP request -> Zipkin v2 JSON spans (what a Zipkin provider is sent)."""
    out: list[ZipkinSpan] = []
    for rs in request.resource_spans:
        service = next(
            (kv.value.string_value for kv in rs.resource.attributes if kv.key == "service.name"), ""
        )
        for ss in rs.scope_spans:
            for s in ss.spans:
                z: ZipkinSpan = {"traceId": s.trace_id.hex(), "id": s.span_id.hex(), "name": s.name}
                if s.parent_span_id:
                    z["parentId"] = s.parent_span_id.hex()
                if s.kind in _OTLP_TO_KIND:
                    z["kind"] = _OTLP_TO_KIND[s.kind]
                z["timestamp"] = _usec(s.start_time_unix_nano)
                z["duration"] = max(_usec(s.end_time_unix_nano) - z["timestamp"], 0)
                z["localEndpoint"] = {"serviceName": service or "unknown_service"}
                attrs = {kv.key: as_json(kv.value) for kv in s.attributes}
                remote = _remote_endpoint(attrs)
                if remote:
                    z["remoteEndpoint"] = remote
                tags = {kv.key: as_string(kv.value) for kv in s.attributes}
                if ss.scope.name:
                    tags["otel.scope.name"] = ss.scope.name
                if ss.scope.version:
                    tags["otel.scope.version"] = ss.scope.version
                # As the Collector's zipkin exporter: `error=true` plus the description in
                # `otel.status_description`, so its receiver (and ours) reads the status back.
                if s.status.code == Status.STATUS_CODE_ERROR:
                    tags[_STATUS_CODE_TAG] = "ERROR"
                    tags["error"] = "true"
                elif s.status.code == Status.STATUS_CODE_OK:
                    tags[_STATUS_CODE_TAG] = "OK"
                if s.status.code != Status.STATUS_CODE_UNSET and s.status.message:
                    tags[_STATUS_DESCRIPTION_TAG] = s.status.message
                if s.kind == Span.SPAN_KIND_INTERNAL:
                    tags[_SPAN_KIND_TAG] = "internal"  # Zipkin has no internal kind
                if tags:
                    z["tags"] = tags
                if s.events:
                    z["annotations"] = [
                        {
                            "timestamp": _usec(e.time_unix_nano),
                            "value": json.dumps(
                                {e.name: {kv.key: as_json(kv.value) for kv in e.attributes}},
                                sort_keys=True,
                            )
                            if e.attributes
                            else e.name,
                        }
                        for e in s.events
                    ]
                out.append(z)
    return out
