"""Reading encoded OTLP without decoding all of it (sans-IO).

`count_spans` counts the spans of an encoded ExportTraceServiceRequest by walking the protobuf
wire format, without parsing it: a request refused before it is decoded (too many bytes in
flight) is still counted in `otelcol_receiver_refused_spans`, and parsing it would cost the
memory the refusal is there to save. `encoded_attributes` reads the encoded KeyValues of a span
(the store's attribute filters hash those bytes)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_RESOURCE_SPANS = 1  # ExportTraceServiceRequest.resource_spans
_SCOPE_SPANS = 2  # ResourceSpans.scope_spans
_SPANS = 2  # ScopeSpans.spans


def _varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _fields(data: bytes, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(field number, start, end) of each length-delimited field; other fields skipped."""
    pos = start
    while pos < end:
        key, pos = _varint(data, pos, end)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            _, pos = _varint(data, pos, end)
        elif wire == _I64:
            pos += 8
        elif wire == _I32:
            pos += 4
        elif wire == _LEN:
            size, pos = _varint(data, pos, end)
            if pos + size > end:
                raise ValueError("truncated field")
            yield number, pos, pos + size
            pos += size
        else:
            raise ValueError(f"unsupported wire type {wire}")
    if pos != end:
        raise ValueError("truncated field")


def count_spans(data: bytes) -> int | None:
    """The number of spans, or None when `data` is not a well-formed request."""
    try:
        return sum(
            1
            for number, rs_start, rs_end in _fields(data, 0, len(data))
            if number == _RESOURCE_SPANS
            for scope_number, ss_start, ss_end in _fields(data, rs_start, rs_end)
            if scope_number == _SCOPE_SPANS
            for span_number, _, _ in _fields(data, ss_start, ss_end)
            if span_number == _SPANS
        )
    except ValueError:
        return None


def _span_attributes_type() -> Any:
    """A message wire-compatible with `Span` that declares only `attributes` (field 9), as
    `repeated bytes`: parsing an encoded span with it hands back each attribute's encoded
    KeyValue as it appears there, in C, without a Python object per KeyValue."""
    message = descriptor_pb2.DescriptorProto(name="SpanAttributes")
    message.field.add(
        name="attributes",
        number=9,
        type=descriptor_pb2.FieldDescriptorProto.TYPE_BYTES,
        label=descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED,
    )
    file = descriptor_pb2.FileDescriptorProto(
        name="meshtrace/span_attributes.proto", package="meshtrace.wire", syntax="proto3"
    )
    file.message_type.append(message)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("meshtrace.wire.SpanAttributes"))


_SPAN_ATTRIBUTES = _span_attributes_type()


def encoded_attributes(span: bytes) -> Sequence[bytes]:
    """The encoded KeyValues of an encoded Span's `attributes`. For bytes that upb serialized,
    each equals `KeyValue.SerializeToString()` of that attribute (an embedded message is encoded
    as the message itself), at half the cost of serializing them one by one."""
    attributes: Sequence[bytes] = _SPAN_ATTRIBUTES.FromString(span).attributes
    return attributes
