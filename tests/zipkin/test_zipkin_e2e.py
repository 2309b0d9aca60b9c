"""The zipkin receiver in a running `meshtrace collector`, fed by real Zipkin clients: the official
OpenTelemetry zipkin-json exporter (v2 JSON) and py_zipkin (v2 protobuf, v1 JSON). What the file
exporter wrote is checked field by field."""

from __future__ import annotations

import gzip
import ipaddress
import json
import zlib
from collections.abc import Callable
from typing import Any

import requests
from opentelemetry.exporter.zipkin.json import ZipkinExporter
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.proto.trace.v1.trace_pb2 import Status as OtlpStatus
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode
from py_zipkin.encoding import Encoding
from py_zipkin.transport import SimpleHTTPTransport
from py_zipkin.zipkin import Kind, zipkin_span

from meshtrace.model import zipkin as model
from meshtrace.model.attributes import as_python

_KIND = {SpanKind.SERVER: Span.SPAN_KIND_SERVER, SpanKind.CLIENT: Span.SPAN_KIND_CLIENT}


def us_ns(ns: int | None) -> int:
    """A nanosecond time as it survives Zipkin's microseconds (the exporter rounds)."""
    assert ns is not None
    return ((ns + 500) // 1000) * 1000


def send_with_sdk(endpoint: str) -> list[ReadableSpan]:
    """Two spans through the official zipkin-json exporter; returns what the SDK recorded."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "checkout"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    provider.add_span_processor(SimpleSpanProcessor(ZipkinExporter(endpoint=endpoint)))
    tracer = provider.get_tracer("shop.lib", "2.0")
    with tracer.start_as_current_span("GET /cart", kind=SpanKind.SERVER) as parent:
        parent.set_attribute("http.request.method", "GET")
        with tracer.start_as_current_span("charge", kind=SpanKind.CLIENT) as child:
            child.set_attribute("peer.service", "payments")
            child.set_attribute("retries", 3)
            child.add_event("retry", {"attempt": 2})
            child.set_status(Status(StatusCode.ERROR, "card declined"))
    provider.shutdown()
    return list(memory.get_finished_spans())


def test_official_zipkin_json_exporter(zipkin_collector: Callable[..., Any]) -> None:
    collector = zipkin_collector()
    sent = {s.context.span_id.to_bytes(8, "big"): s for s in send_with_sdk(collector.url())}
    written = collector.wait_for(2)
    assert len(written) == 2
    for w in written:
        s = sent[w.span.span_id]
        assert w.span.trace_id == s.context.trace_id.to_bytes(16, "big")
        assert w.span.name == s.name and w.span.kind == _KIND[s.kind]
        assert w.span.start_time_unix_nano == us_ns(s.start_time)
        assert s.end_time is not None and s.start_time is not None
        # Zipkin carries a duration, rounded to microseconds by the exporter.
        assert w.span.end_time_unix_nano - w.span.start_time_unix_nano == us_ns(s.end_time - s.start_time)
        assert w.resource == {"service.name": "checkout"}
        assert w.scope == ("shop.lib", "2.0")
    parent = next(w.span for w in written if w.span.name == "GET /cart")
    child = next(w.span for w in written if w.span.name == "charge")
    assert not parent.parent_span_id and child.parent_span_id == parent.span_id
    # The exporter also copies the SDK's resource attributes into every span's tags (Zipkin has no
    # resource): they arrive as span attributes.
    copied = {"service.name", "service.instance.id", "telemetry.sdk.language", "telemetry.sdk.name"}
    copied |= {"telemetry.sdk.version"}

    def own(span: Span) -> dict[str, Any]:
        return {kv.key: as_python(kv.value) for kv in span.attributes if kv.key not in copied}

    assert own(parent) == {"http.request.method": "GET"}
    # Zipkin tags are strings. The exporter writes the status as `otel.status_code: ERROR` (a
    # spelling the Collector does not read) and `error: <description>`: as in the Collector, the
    # `error` tag sets status Error and, being a message rather than `true`, stays an attribute.
    assert own(child) == {"peer.service": "payments", "retries": "3", "error": "card declined"}
    assert child.status.code == OtlpStatus.STATUS_CODE_ERROR and child.status.message == ""
    (event,) = child.events
    assert event.name == "retry" and as_python(event.attributes[0].value) == 2
    assert parent.status.code == OtlpStatus.STATUS_CODE_UNSET


# The official opentelemetry-exporter-zipkin-proto-http 1.11.1 cannot run with the pinned
# protobuf 7: its generated zipkin_pb2 is refused by upb ("Descriptors cannot be created
# directly") and, with the pure-Python implementation, fails encoding tags
# (`'RepeatedCompositeFieldContainer' object has no attribute 'update'`). py_zipkin's V2_PROTO3
# encoding is the real protobuf client here.
def own_attributes(span: Span) -> dict[str, Any]:
    """The span's attributes but the local endpoint's address (py_zipkin sends this host's IP,
    which the receiver maps to `net.host.ip` as the Collector does)."""
    attrs = {kv.key: as_python(kv.value) for kv in span.attributes}
    ipaddress.ip_address(attrs.pop("net.host.ip", "127.0.0.1"))
    return attrs


def test_py_zipkin_v2_protobuf(zipkin_collector: Callable[..., Any]) -> None:
    collector = zipkin_collector()
    host, port = collector.address.rsplit(":", 1)
    with zipkin_span(
        service_name="inventory",
        span_name="reserve",
        transport_handler=SimpleHTTPTransport(host, int(port)),  # posts application/x-protobuf
        sample_rate=100.0,
        encoding=Encoding.V2_PROTO3,
        kind=Kind.SERVER,
        binary_annotations={"sku": "A-1"},
    ) as span:
        span.add_annotation("locked")
    (w,) = collector.wait_for(1)
    attrs = span.zipkin_attrs
    assert attrs is not None
    assert w.span.trace_id.hex() == attrs.trace_id.rjust(32, "0") and w.span.span_id.hex() == attrs.span_id
    assert not w.span.parent_span_id
    assert w.span.name == "reserve" and w.span.kind == Span.SPAN_KIND_SERVER
    assert w.resource == {"service.name": "inventory"}
    assert own_attributes(w.span) == {"sku": "A-1"}
    assert [e.name for e in w.span.events] == ["locked"]
    assert w.span.start_time_unix_nano <= w.span.events[0].time_unix_nano <= w.span.end_time_unix_nano


def test_py_zipkin_v1_json(zipkin_collector: Callable[..., Any]) -> None:
    collector = zipkin_collector()
    host, port = collector.address.rsplit(":", 1)
    transport = SimpleHTTPTransport(host, int(port))
    with (
        zipkin_span(
            service_name="legacy",
            span_name="get /v1",
            transport_handler=transport,
            sample_rate=100.0,
            encoding=Encoding.V1_JSON,
            kind=Kind.SERVER,
            binary_annotations={"http.path": "/v1"},
        ) as server,
        zipkin_span(service_name="legacy", span_name="query", kind=Kind.CLIENT) as client,
    ):
        client.add_sa_binary_annotation(port=5432, service_name="postgres", host="10.0.0.9")
        client.update_binary_annotations({"db.statement": "select 1"})
    written = collector.wait_for(2)
    by_name = {w.span.name: w for w in written}
    assert set(by_name) == {"get /v1", "query"}
    attrs = server.zipkin_attrs
    assert attrs is not None
    trace_id = bytes.fromhex(attrs.trace_id.rjust(32, "0"))
    s, c = by_name["get /v1"].span, by_name["query"].span
    assert s.trace_id == trace_id == c.trace_id
    assert s.span_id.hex() == attrs.span_id and c.parent_span_id == s.span_id
    assert s.kind == Span.SPAN_KIND_SERVER and c.kind == Span.SPAN_KIND_CLIENT
    assert by_name["query"].resource == {"service.name": "legacy"}
    assert own_attributes(c) == {
        "db.statement": "select 1",
        "peer.service": "postgres",
        "net.peer.ip": "10.0.0.9",
        "net.peer.port": 5432,
    }
    assert own_attributes(s) == {"http.path": "/v1"}
    assert c.end_time_unix_nano >= c.start_time_unix_nano > 0


V2_SPAN: list[dict[str, Any]] = [
    {"traceId": "5af7183fb1d4cf5f", "id": "352bff9a74ca9ad2", "name": "ok", "timestamp": 1, "duration": 1}
]


def test_bad_input_statuses_and_the_receiver_keeps_serving(zipkin_collector: Callable[..., Any]) -> None:
    collector = zipkin_collector(receiver={"max_request_body_size": 4096})
    url, v1 = collector.url(), collector.url("/api/v1/spans")
    json_type = {"Content-Type": "application/json"}

    def post(target: str, body: bytes, **headers: str) -> requests.Response:
        return requests.post(target, data=body, headers=headers, timeout=10)

    r = post(url, b"[{", **json_type)
    assert r.status_code == 400 and "invalid zipkin v2 JSON" in r.text
    r = post(url, json.dumps([{"traceId": "abc", "id": "xyz"}]).encode(), **json_type)
    assert r.status_code == 400 and "spans[0].id" in r.text
    r = post(url, b"\x0a\x05\xff", **{"Content-Type": "application/x-protobuf"})
    assert r.status_code == 400 and "protobuf" in r.text
    assert post(url, b"x", **{"Content-Type": "text/plain"}).status_code == 415
    r = post(v1, b"\x0c\x00", **{"Content-Type": "application/x-thrift"})
    assert r.status_code == 415 and "Thrift" in r.text
    assert post(url, b"[" + b" " * 5000 + b"]", **json_type).status_code == 413
    assert requests.get(url, timeout=10).status_code == 405
    assert post(url, b"\x1f\x8b garbage", **json_type, **{"Content-Encoding": "gzip"}).status_code == 400
    # Still serving: a gzip body and a protobuf body are accepted.
    gz = gzip.compress(json.dumps(V2_SPAN).encode())
    assert post(url, gz, **json_type, **{"Content-Encoding": "gzip"}).status_code == 202
    proto = model.encode_list_of_spans([{**V2_SPAN[0], "id": "0000000000000002", "name": "proto"}])
    assert post(url, proto, **{"Content-Type": "application/x-protobuf"}).status_code == 202
    assert sorted(w.span.name for w in collector.wait_for(2)) == ["ok", "proto"]


def test_a_web_page_of_another_origin_cannot_write_spans(zipkin_collector: Callable[..., Any]) -> None:
    """A browser may POST a form-typed body to loopback from any page without a preflight, and the
    receiver reads such bodies as JSON (as Zipkin does): a foreign Origin is refused, tools (no
    Origin) and same-origin pages are not."""
    collector = zipkin_collector()
    url = collector.url()
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    body = json.dumps(V2_SPAN).encode()
    for origin in ("http://evil.example", "null"):
        r = requests.post(url, data=body, headers={**form, "Origin": origin}, timeout=10)
        assert r.status_code == 403 and "cross-origin request refused" in r.text
    host = url.split("/")[2]
    assert (
        requests.post(url, data=body, headers={**form, "Origin": f"http://{host}"}, timeout=10).status_code
        == 202
    )
    assert [w.span.name for w in collector.wait_for(1)] == ["ok"]


def test_memory_limiter_refusal_is_a_retryable_503(zipkin_collector: Callable[..., Any]) -> None:
    # A 1 MiB limit is below any Python process's RSS: everything is refused.
    collector = zipkin_collector(processors={"memory_limiter": {"check_interval": "1s", "limit_mib": 1}})
    r = requests.post(collector.url(), json=V2_SPAN, timeout=10)
    assert r.status_code == 503 and "high memory usage" in r.text
    assert r.headers["Retry-After"] == "1"


def test_content_encodings_as_confighttp(zipkin_collector: Callable[..., Any]) -> None:
    """gzip, deflate (zlib-wrapped and raw) and `zlib` bodies are 202 (the Collector's confighttp
    takes `zlib` too; aiohttp alone answered 400); a bomb is 413 naming the decompressed limit;
    unsupported codings are 415 naming the supported ones."""
    collector = zipkin_collector(receiver={"max_request_body_size": 4096})
    url = collector.url()
    body = json.dumps(V2_SPAN).encode()

    def post(data: bytes, encoding: str) -> requests.Response:
        headers = {"Content-Type": "application/json", "Content-Encoding": encoding}
        return requests.post(url, data=data, headers=headers, timeout=10)

    raw = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    for data, encoding in (
        (zlib.compress(body), "zlib"),
        (zlib.compress(body), "deflate"),
        (raw.compress(body) + raw.flush(), "deflate"),
        (gzip.compress(body), "gzip"),
    ):
        r = post(data, encoding)
        assert r.status_code == 202, (encoding, r.text)
    r = post(gzip.compress(b"[" + b" " * 100_000 + b"]"), "gzip")
    assert r.status_code == 413 and "decompressed request body over the limit of 4096 bytes" in r.text
    r = post(body, "zstd")
    assert r.status_code == 415 and "gzip, deflate, zlib" in r.text
    assert len(collector.wait_for(4)) == 4
