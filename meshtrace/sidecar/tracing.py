"""Spans as Envoy + Istio make them (docs/upstream-behaviour.md §2), built straight into OTLP protobuf,
and their export: batched off the request path through a buffer bounded in bytes, to the direction's
provider over OTLP/HTTP, OTLP gRPC (grpcio imported only then) or Zipkin v2 JSON, retrying what the
collector refuses for now. A slow or dead collector costs buffered, then dropped spans (counted),
never request latency."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from meshtrace.document import DEFAULT_PATHS, CustomTag
from meshtrace.model.otlp_answer import (
    RETRYABLE_HTTP,
    grpc_retryable,
    jittered,
    partial_success,
    retry_after,
    retry_info_delay,
)
from meshtrace.sidecar.client import request, split_url
from meshtrace.sidecar.config import Provider, SidecarConfig, Tracing
from meshtrace.sidecar.conn import Pool
from meshtrace.sidecar.grpc import GrpcCall

log = logging.getLogger("meshtrace.sidecar")


@dataclass(slots=True)
class SpanRecord:
    """Everything one span needs; filled by the proxy as the request goes."""

    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes | None
    name: str
    server: bool
    start_ns: int
    end_ns: int
    request_id: str
    url: str
    method: str
    status: int  # 0: no response
    user_agent: str
    peer_address: str
    downstream_cluster: str
    upstream_cluster: str
    request_size: int
    response_size: int
    flags: str
    headers: Mapping[str, str]
    protocol: str = "HTTP/1.1"
    grpc: GrpcCall | None = None


def _kv(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


# Spans are written straight to protobuf wire bytes (docs/architecture.md: no object per span where bytes
# will do): encoded messages concatenate, so a batch is a few joins. Field numbers are
# opentelemetry/proto/trace/v1/trace.proto's; tests decode the bytes with the generated classes.
def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL = [_varint(i) for i in range(16384)]


def _ld(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field."""
    n = len(payload)
    return tag + (_SMALL[n] if n < 16384 else _varint(n)) + payload


def _attr(key: str, value: str) -> bytes:
    """Span.attributes (field 9) entry: KeyValue{key, AnyValue{string_value}}."""
    any_value = _ld(b"\x0a", value.encode())
    return _ld(b"\x4a", _ld(b"\x0a", key.encode()) + _ld(b"\x12", any_value))


_SCOPE = _ld(b"\x0a", InstrumentationScope(name="envoy", version="meshtrace").SerializeToString())
_KIND_SERVER = b"\x30" + _varint(Span.SPAN_KIND_SERVER)
_KIND_CLIENT = b"\x30" + _varint(Span.SPAN_KIND_CLIENT)
_STATUS_ERROR = _ld(b"\x7a", b"\x18" + _varint(Status.STATUS_CODE_ERROR))


# Envoy's substitution format commands in a formatter tag: %REQ(name?alternative):max_length%
# is evaluated; any other command is one meshtrace does not implement (explain warns) and,
# like a value Envoy does not have, prints "-".
_FORMAT_COMMAND = re.compile(r"%([A-Z_0-9]+)(?:\(([^)]*)\))?(?::(\d+))?%")


def format_value(template: str, headers: Mapping[str, str]) -> str:
    """An Envoy format string (Telemetry customTags `formatter`) over the request headers."""

    def command(m: re.Match[str]) -> str:
        name, arg, limit = m.group(1), m.group(2) or "", m.group(3)
        value = None
        if name == "REQ":
            for header in arg.split("?", 1):
                value = headers.get(header.strip().lower())
                if value is not None:
                    break
        if value is None:
            return "-"
        return value[: int(limit)] if limit else value

    return _FORMAT_COMMAND.sub(command, template)


def custom_tag_values(
    tags: Mapping[str, CustomTag], headers: Mapping[str, str], url: str = "", method: str = ""
) -> list[tuple[str, str]]:
    """Telemetry customTags: literal, environment (this process's env), request header and
    formatter values; a tag with no value and no default is left out, as Envoy does."""
    out: list[tuple[str, str]] = []
    for name, tag in tags.items():
        value: Any = None
        if tag.literal is not None:
            value = tag.literal.get("value")
        elif tag.environment is not None:
            env = tag.environment
            value = os.environ.get(env.get("name", ""), env.get("default_value"))
        elif tag.header is not None:
            hdr = tag.header
            value = headers.get(hdr.get("name", "").lower(), hdr.get("default_value"))
        elif tag.formatter is not None:
            # Envoy's %REQ()% also reads the HTTP/2 pseudo-headers; HTTP/1.1 has them in the
            # request line, which `url` (http://authority/path) and `method` carry.
            authority, _, path = url.removeprefix("http://").partition("/")
            request = {**headers, ":method": method, ":authority": authority, ":path": "/" + path}
            value = format_value(tag.formatter.get("value", ""), request)
        if value is not None:
            out.append((name, str(value)))
    return out


def build_span(rec: SpanRecord, t: Tracing, cfg: SidecarConfig, node_id: str) -> bytes:
    """One encoded `Span` with Envoy's and Istio's tags."""
    limit = t.provider.max_tag_length if t.provider else 256
    status = rec.status
    tags = [
        ("guid:x-request-id", rec.request_id),
        ("http.url", rec.url[: t.spec.max_path_tag_length]),
        ("http.method", rec.method),
        ("http.protocol", rec.protocol),
        ("http.status_code", str(status)),
        ("user_agent", rec.user_agent),
        ("peer.address", rec.peer_address),
        ("downstream_cluster", rec.downstream_cluster),
        ("upstream_cluster", rec.upstream_cluster),
        ("upstream_cluster.name", rec.upstream_cluster),
        ("request_size", str(rec.request_size)),
        ("response_size", str(rec.response_size)),
        ("response_flags", rec.flags),
    ]
    error = status == 0 or status >= 500
    if rec.grpc is not None:
        tags += rec.grpc.tags()
        error = error or rec.grpc.server_error
    if error:
        tags.append(("error", "true"))
    if t.spec.custom_tags:
        tags += custom_tag_values(t.spec.custom_tags, rec.headers, rec.url, rec.method)
    parts = [
        _ld(b"\x0a", rec.trace_id),
        _ld(b"\x12", rec.span_id),
        _ld(b"\x22", rec.parent_span_id) if rec.parent_span_id else b"",
        _ld(b"\x2a", rec.name.encode()),
        _KIND_SERVER if rec.server else _KIND_CLIENT,
        b"\x39" + rec.start_ns.to_bytes(8, "little"),
        b"\x41" + rec.end_ns.to_bytes(8, "little"),
        *(_attr(k, v[:limit]) for k, v in tags),
        _static_tags(t, cfg, node_id, limit),
    ]
    # docs/upstream-behaviour.md §6: 5xx (or no answer) is Error; 4xx is Error only on CLIENT spans.
    if error or (status >= 400 and not rec.server):
        parts.append(_STATUS_ERROR)
    return b"".join(parts)


_static_cache: dict[tuple[str, ...], bytes] = {}


def _static_tags(t: Tracing, cfg: SidecarConfig, node_id: str, limit: int) -> bytes:
    """The tags that are the same on every span of this config, encoded once per value set."""
    w = cfg.workload
    istio = (w.canonical_service, w.canonical_revision, cfg.mesh.mesh_id, w.namespace, cfg.mesh.cluster_id)
    key = (node_id, str(limit), *(istio if t.spec.enable_istio_tags else ()))
    encoded = _static_cache.get(key)
    if encoded is None:
        tags = [("component", "proxy"), ("node_id", node_id), ("zone", "")]
        if t.spec.enable_istio_tags:
            names = ("canonical_service", "canonical_revision", "mesh_id", "namespace", "cluster_id")
            tags += [(f"istio.{n}", v) for n, v in zip(names, istio, strict=True)]
        if len(_static_cache) > 64:
            _static_cache.clear()  # values of old configs
        encoded = _static_cache[key] = b"".join(_attr(k, v[:limit]) for k, v in tags)
    return encoded


# Export retries (the OTLP exporter rules of meshtrace.model.otlp_answer): the first wait is about
# RETRY_INITIAL_S, doubling up to RETRY_MAX_S, each spread ±RETRY_JITTER; a server's RetryInfo /
# Retry-After is the least wait. A batch still refused after RETRY_MAX_ELAPSED_S (the Collector's
# `max_elapsed_time` default) is dropped, so one dead endpoint cannot hold the buffer for ever.
RETRY_INITIAL_S = 1.0
RETRY_MAX_S = 30.0
RETRY_JITTER = 0.5
RETRY_MAX_ELAPSED_S = 300.0
# Spans waiting for export, including the batch being retried (--span-buffer-bytes): ~4,800
# spans of ~880 bytes (a CLIENT span with Envoy's and Istio's tags), as many as the old
# 4096-span queue held.
SPAN_BUFFER_BYTES = 4 * 1024 * 1024
DROP_LOG_INTERVAL_S = 10.0
DROP_REASONS = ("buffer_full", "export_failed", "rejected", "shutdown")


class RetryableExport(Exception):
    """The server refused for now (or could not be reached): send the batch again later."""

    def __init__(self, message: str, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay


class FinalExport(Exception):
    """The server refused the batch for good (a non-retryable answer): drop it."""


class SpanExporter:
    """A buffer bounded in bytes + one background task sending batches (size or interval,
    whichever first) and retrying refused ones. `submit` never waits: a full buffer drops the
    span and counts it. Every span submitted ends up exported or counted in `dropped` (by reason)."""

    def __init__(
        self,
        pool: Pool,
        buffer_bytes: int = SPAN_BUFFER_BYTES,
        batch_size: int = 512,
        interval: float = 1.0,
    ) -> None:
        self.pool = pool
        self.buffer_bytes = buffer_bytes
        self.batch_size = batch_size
        self.interval = interval
        self.queue: deque[tuple[Provider, bytes]] = deque()
        self.resource = b""
        self.buffered = 0  # bytes of the spans in `queue` and in the batch being sent
        self.pending = 0  # spans in `queue` and in the batch being sent
        self.exported = 0  # spans the server accepted
        self.retries = 0  # export attempts that were retried
        self.dropped = dict.fromkeys(DROP_REASONS, 0)
        self._last_log: dict[str, float] = {}
        self._unlogged: dict[str, int] = dict.fromkeys(DROP_REASONS, 0)
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._grpc: dict[str, tuple[Any, Any]] = {}

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    def configure(self, cfg: SidecarConfig) -> None:
        w = cfg.workload
        resource = Resource(
            attributes=[
                _kv("service.name", w.service_name),
                _kv("k8s.namespace.name", w.namespace),
                _kv("k8s.workload.name", w.name),
            ]
        )
        self.resource = _ld(b"\x0a", resource.SerializeToString())  # ResourceSpans.resource

    def submit(self, provider: Provider, span: bytes) -> None:
        size = len(span)
        if self.buffered + size > self.buffer_bytes:
            self._drop("buffer_full", 1, "span buffer full")
            return
        self.buffered += size
        self.pending += 1
        self.queue.append((provider, span))
        if len(self.queue) >= self.batch_size:
            self._wake.set()

    def _drop(self, reason: str, count: int, why: str) -> None:
        """Count dropped spans; log at most once per DROP_LOG_INTERVAL_S per reason."""
        self.dropped[reason] += count
        self._unlogged[reason] += count
        if self._may_log(reason):
            log.warning("dropped %d spans (%s): %s", self._unlogged[reason], reason, why)
            self._unlogged[reason] = 0

    def _may_log(self, key: str) -> bool:
        """At most one line per DROP_LOG_INTERVAL_S per key: a refusing collector must not flood
        the sidecar's log."""
        now = time.monotonic()
        if now - self._last_log.get(key, -DROP_LOG_INTERVAL_S) < DROP_LOG_INTERVAL_S:
            return False
        self._last_log[key] = now
        return True

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._wake.wait()
            self._wake.clear()
            while self.queue and not self._stop.is_set():
                await self._send_batch()
                if len(self.queue) < self.batch_size:
                    break

    async def _send_batch(self) -> None:
        by_provider: dict[int, tuple[Provider, list[bytes]]] = {}
        for _ in range(min(self.batch_size, len(self.queue))):
            provider, span = self.queue.popleft()
            by_provider.setdefault(id(provider), (provider, []))[1].append(span)
        groups = list(by_provider.values())
        for i, (provider, spans) in enumerate(groups):
            try:
                await self._deliver(provider, spans)
            except asyncio.CancelledError:  # shutdown's time ran out: count what this costs
                lost = groups[i:]
                self._drop("shutdown", sum(len(g[1]) for g in lost), "export cancelled at shutdown")
                for _, later in lost[1:]:
                    self.buffered -= sum(len(span) for span in later)
                    self.pending -= len(later)
                raise
            finally:
                self.buffered -= sum(len(span) for span in spans)
                self.pending -= len(spans)

    async def _deliver(self, provider: Provider, spans: list[bytes]) -> None:
        """Send one batch, retrying retryable refusals with backoff until it is accepted, refused
        for good, RETRY_MAX_ELAPSED_S has passed, or the exporter stops."""
        scope_spans = _SCOPE + b"".join(_ld(b"\x12", span) for span in spans)
        req = _ld(b"\x0a", self.resource + _ld(b"\x12", scope_spans))  # ExportTraceServiceRequest
        count = len(spans)
        started = time.monotonic()
        interval = RETRY_INITIAL_S
        while True:
            try:
                rejected, message = await self._send(provider, req)
                rejected = min(rejected, count)  # a server's count is wire input
            except FinalExport as exc:
                self._drop("export_failed", count, f"{provider.endpoint} refused them: {exc}")
                return
            except Exception as exc:  # retryable: a refusal for now, or no answer at all
                delay = jittered(interval, RETRY_JITTER)
                if isinstance(exc, RetryableExport) and exc.delay is not None:
                    delay = max(delay, exc.delay)
                if self._stop.is_set():
                    self._drop("shutdown", count, f"export to {provider.endpoint} failed at shutdown: {exc}")
                    return
                if time.monotonic() - started + delay > RETRY_MAX_ELAPSED_S:
                    why = f"{provider.endpoint} still refusing after {RETRY_MAX_ELAPSED_S:.0f}s: {exc}"
                    self._drop("export_failed", count, why)
                    return
                self.retries += 1
                if self._may_log("retry"):
                    log.warning("span export to %s: retrying in %.1fs: %s", provider.endpoint, delay, exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
                interval = min(interval * 2, RETRY_MAX_S)
                continue
            self.exported += count - rejected
            # OTLP partial success: never retried; the server's message says why
            if rejected:
                self._drop("rejected", rejected, f"{provider.endpoint} rejected them: {message}")
            elif message and self._may_log("message"):
                log.warning("span export to %s: %s", provider.endpoint, message)
            return

    async def _send(self, provider: Provider, req: bytes) -> tuple[int, str]:
        """Send one encoded ExportTraceServiceRequest in the provider's protocol: (rejected spans,
        message) of the answer's partial success. Raises RetryableExport or FinalExport for a
        refusal, anything else when there was no answer (retried too)."""
        if provider.endpoint is None:
            raise FinalExport(f"provider {provider.name} has no resolved endpoint")
        if provider.protocol == "grpc":
            return await self._send_grpc(provider, req)
        host, port, _ = split_url(provider.endpoint)
        if provider.protocol == "zipkin":
            from meshtrace.model.zipkin import otlp_to_zipkin_v2

            body = json.dumps(otlp_to_zipkin_v2(ExportTraceServiceRequest.FromString(req))).encode()
            ctype = "application/json"
        else:
            body = req
            ctype = "application/x-protobuf"
        headers = {"content-type": ctype, **provider.headers}
        path = provider.path or DEFAULT_PATHS[provider.protocol]  # the contract sets it; mypy cannot know
        head, answer = await request(
            self.pool, host, port, "POST", path, body, headers, timeout=provider.timeout_s
        )
        if 200 <= head.status < 300:
            return (0, "") if provider.protocol == "zipkin" else partial_success(answer)
        message = f"HTTP {head.status}: {answer[:200]!r}"
        # Zipkin has no retry rules of its own: the same answers are transient there
        if head.status in RETRYABLE_HTTP:
            raise RetryableExport(message, retry_after(head.get("retry-after")))
        raise FinalExport(message)

    async def _send_grpc(self, provider: Provider, req: bytes) -> tuple[int, str]:
        # grpcio costs ~20 MB of RSS: only sidecars with a gRPC provider pay for it.
        import grpc

        entry = self._grpc.get(provider.endpoint or "")
        if entry is None:
            channel = grpc.aio.insecure_channel(
                (provider.endpoint or "").split("://", 1)[-1],
                options=[("grpc.enable_retries", 0)],  # retried here, by the OTLP rules
            )
            export = channel.unary_unary(  # the request is already encoded: send the bytes as they are
                "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                request_serializer=None,
                response_deserializer=None,
            )
            entry = self._grpc[provider.endpoint or ""] = (channel, export)
        try:
            answer = await entry[1](
                req, timeout=provider.timeout_s, metadata=tuple(provider.headers.items()) or None
            )
        except grpc.aio.AioRpcError as exc:
            code = exc.code().name
            delay = retry_info_delay(exc.trailing_metadata())
            message = f"{code}: {exc.details()}"
            if grpc_retryable(code, delay):
                raise RetryableExport(message, delay) from None
            raise FinalExport(message) from None
        return partial_success(answer)

    async def close(self, timeout: float = 5.0) -> None:
        """Flush what is buffered (one try per batch, bounded by `timeout`) and stop; what is
        left is dropped and counted."""
        self._stop.set()
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(self._task, timeout)
        try:
            async with asyncio.timeout(timeout):
                while self.queue:
                    await self._send_batch()
        except TimeoutError:
            pass
        if self.queue:
            self._drop("shutdown", len(self.queue), "still buffered at shutdown")
            self.queue.clear()
            self.buffered = self.pending = 0
        for reason, count in self._unlogged.items():  # what the rate limit held back
            if count:
                log.warning("dropped %d spans (%s) since the last report", count, reason)
        for channel, _ in self._grpc.values():
            with contextlib.suppress(Exception):
                await channel.close()
