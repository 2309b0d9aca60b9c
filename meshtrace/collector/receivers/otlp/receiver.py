"""The otlp receiver: OTLP/gRPC (grpcio aio) and OTLP/HTTP (aiohttp) into the pipeline.

Requests stay encoded: the protobuf body is parsed once (upb, in C) to validate it and count
spans, then only the bytes and the count travel on in `Traces`, so exporters forward the original
bytes and batches hold no parsed messages.

Status mapping (REFERENCE.md §4): undecodable -> gRPC INVALID_ARGUMENT / HTTP 400; the pipeline
refusing (RefusedError, any unexpected error) -> UNAVAILABLE / 503 (+ Retry-After / RetryInfo
when the refusal says how long); a permanent rejection -> INVALID_ARGUMENT / 400.

Spans that decode but cannot be stored (empty or all-zero ids, times after 2262:
meshtrace/model/validate.py) are taken out of the request and the rest goes on: the answer is
success with `partial_success` (`rejected_spans` + `error_message`, gRPC and HTTP, protobuf and
JSON), and they count in `otelcol_receiver_refused_spans`, as does every span of a decoded
request the pipeline refuses. An undecodable body counts nothing (its spans cannot be counted).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import grpc
from aiohttp import web
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from meshtrace import ready
from meshtrace.collector.component import ComponentID, Host, PermanentError, RefusedError, TracesConsumer
from meshtrace.collector.httpserve import serve
from meshtrace.collector.receivers.otlp.config import MIB, GrpcConfig, HttpConfig, OtlpReceiverConfig
from meshtrace.collector.schema import host_port
from meshtrace.collector.telemetry import TELEMETRY, ReceiverMetrics
from meshtrace.model import Traces, otlp_json
from meshtrace.model.validate import Refused, refuse_invalid

log = logging.getLogger(__name__)

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
EMPTY_RESPONSE = ExportTraceServiceResponse().SerializeToString()
NONE_REFUSED = Refused()


def success_body(refused: Refused) -> bytes:
    """The encoded success answer: empty, or `partial_success` saying how many spans were refused
    and why."""
    if not refused.spans:
        return EMPTY_RESPONSE
    answer = ExportTraceServiceResponse()
    answer.partial_success.rejected_spans = refused.spans
    answer.partial_success.error_message = refused.message
    return answer.SerializeToString()


def decode_protobuf(body: bytes) -> tuple[Traces, Refused]:
    """The request's spans that can be stored, and the refused ones (model/validate.py)."""
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(body)
        refused = refuse_invalid(request)
    except DecodeError as exc:
        raise PermanentError(f"cannot decode protobuf ExportTraceServiceRequest: {exc}") from None
    except ValueError as exc:  # an id of the wrong length: the Collector's decoder refuses it too
        raise PermanentError(str(exc)) from None
    if refused.spans:
        return Traces.from_message(request), refused
    # Only the bytes and the count travel on: the parsed message is several times the size of
    # the bytes, and batching and forwarding never read it (a processor that does re-parses).
    count = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
    return Traces.from_bytes(body, span_count=count), refused


def decode_json(body: bytes) -> tuple[Traces, Refused]:
    try:
        request = otlp_json.loads(body)
        refused = refuse_invalid(request)
    except ValueError as exc:
        raise PermanentError(f"cannot decode OTLP/JSON: {exc}") from None
    return Traces.from_message(request), refused


class Outcome:
    """What to answer: a gRPC code / HTTP status, a message, and a Retry-After if known."""

    __slots__ = ("grpc_code", "http_status", "message", "retry_after")

    def __init__(
        self, grpc_code: grpc.StatusCode, http_status: int, message: str, retry_after: float | None = None
    ) -> None:
        self.grpc_code, self.http_status, self.message, self.retry_after = (
            grpc_code,
            http_status,
            message,
            retry_after,
        )


async def push(
    next_consumer: TracesConsumer, traces: Traces, metrics: ReceiverMetrics, refused: Refused = NONE_REFUSED
) -> Outcome | None:
    """Hand a batch to the pipeline and count it (with the spans validation `refused`); None when
    accepted. A batch whose every span was refused is not pushed."""
    metrics.refused_spans.add(refused.spans)
    count = traces.span_count()
    if refused.spans and not count:
        return None
    try:
        await next_consumer.consume_traces(traces)
    except RefusedError as exc:
        metrics.refused_spans.add(count)
        return Outcome(grpc.StatusCode.UNAVAILABLE, 503, str(exc), exc.retry_after)
    except PermanentError as exc:
        metrics.refused_spans.add(count)
        return Outcome(grpc.StatusCode.INVALID_ARGUMENT, 400, str(exc))
    except Exception as exc:
        log.exception("pipeline failed")
        metrics.refused_spans.add(count)
        return Outcome(grpc.StatusCode.UNAVAILABLE, 503, f"pipeline error: {exc}")
    metrics.accepted_spans.add(count)
    return None


class OtlpReceiver:
    def __init__(self, id: ComponentID, config: OtlpReceiverConfig, next_consumer: TracesConsumer) -> None:
        self.id = id
        self.config = config
        self.next = next_consumer
        self._grpc: grpc.aio.Server | None = None
        self._http: web.AppRunner | None = None

    # --- gRPC ---

    async def _export(self, request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        metrics = self._grpc_metrics
        try:
            traces, refused = decode_protobuf(request)
        except PermanentError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        outcome = await push(self.next, traces, metrics, refused)
        if outcome is not None:
            await context.abort(outcome.grpc_code, outcome.message, _retry_info(outcome))
        return success_body(refused)

    async def _start_grpc(self, config: GrpcConfig) -> None:
        self._grpc_metrics = TELEMETRY.receiver(self.id, "grpc")
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", config.max_recv_msg_size_mib * MIB),
            ("grpc.so_reuseport", 0),
        ]
        if config.max_concurrent_streams:
            options.append(("grpc.max_concurrent_streams", config.max_concurrent_streams))
        server = grpc.aio.server(options=options)
        # Raw bytes in and out (no (de)serializers): the receiver parses once itself.
        handler = grpc.method_handlers_generic_handler(
            SERVICE, {"Export": grpc.unary_unary_rpc_method_handler(self._export)}
        )
        server.add_generic_rpc_handlers((handler,))
        host, _ = host_port(config.endpoint)
        port = server.add_insecure_port(config.endpoint)
        await server.start()
        self._grpc = server
        ready.announce(f"{self.id}-grpc", host, port)

    # --- HTTP ---

    async def _http_traces(self, request: web.Request) -> web.StreamResponse:
        config = self.config.protocols.http
        assert config is not None
        if request.method != "POST":
            return web.Response(
                status=405, headers={"Allow": "POST"}, text="405 method not allowed, supported: [POST]"
            )
        content_type = request.content_type
        if content_type not in (PROTOBUF, "application/protobuf", JSON):
            return web.Response(
                status=415,
                text=f"415 unsupported media type, supported: [{JSON}, {PROTOBUF}]",
            )
        encoding = JSON if content_type == JSON else PROTOBUF
        limit = config.max_request_body_size
        if request.content_length is not None and request.content_length > limit:
            return _status(encoding, 413, 8, f"request body over {limit} bytes")
        try:
            body = await _read_limited(request, limit)
        except _TooLarge:
            return _status(encoding, 413, 8, f"request body over {limit} bytes")
        except Exception as exc:  # aiohttp: broken gzip, unknown Content-Encoding, reset connection
            return _status(encoding, 400, 3, f"cannot read the request body: {exc}")
        try:
            traces, refused = decode_json(body) if encoding == JSON else decode_protobuf(body)
        except PermanentError as exc:
            return _status(encoding, 400, 3, str(exc))
        outcome = await push(self.next, traces, self._http_metrics, refused)
        if outcome is not None:
            response = _status(encoding, outcome.http_status, outcome.grpc_code.value[0], outcome.message)
            if outcome.retry_after is not None:
                response.headers["Retry-After"] = str(max(1, round(outcome.retry_after)))
            return response
        if encoding == JSON:
            return web.Response(body=_partial_success_json(refused), content_type=JSON)
        return web.Response(body=success_body(refused), content_type=PROTOBUF)

    async def _start_http(self, config: HttpConfig) -> None:
        self._http_metrics = TELEMETRY.receiver(self.id, "http")
        app = web.Application()
        app.router.add_route("*", config.traces_url_path, self._http_traces)
        host, port = host_port(config.endpoint)
        self._http = await serve(app, host, port, f"{self.id}-http")

    # --- Component ---

    async def start(self, host: Host) -> None:
        if self.config.protocols.grpc is not None:
            await self._start_grpc(self.config.protocols.grpc)
        if self.config.protocols.http is not None:
            await self._start_http(self.config.protocols.http)

    async def shutdown(self) -> None:
        if self._grpc is not None:
            await self._grpc.stop(grace=2.0)
        if self._http is not None:
            await self._http.cleanup()


def _retry_info(outcome: Outcome) -> tuple[tuple[str, bytes], ...]:
    """gRPC's way to say how long to wait: RetryInfo in grpc-status-details-bin."""
    if outcome.retry_after is None:
        return ()
    status = status_pb2.Status(code=outcome.grpc_code.value[0], message=outcome.message)
    info = error_details_pb2.RetryInfo()
    info.retry_delay.FromNanoseconds(int(outcome.retry_after * 1e9))
    status.details.add().Pack(info)
    return (("grpc-status-details-bin", status.SerializeToString()),)


class _TooLarge(Exception):
    pass


async def _read_limited(request: web.Request, limit: int) -> bytes:
    """The (already gunzipped by aiohttp) body, refusing more than `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.readany()
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)


def _partial_success_json(refused: Refused) -> bytes:
    """OTLP/JSON of the success answer (64-bit integers as decimal strings)."""
    if not refused.spans:
        return b"{}"
    partial = {"rejectedSpans": str(refused.spans), "errorMessage": refused.message}
    return json.dumps({"partialSuccess": partial}).encode()


def _status(encoding: str, http_status: int, code: int, message: str) -> web.Response:
    """An error answer with a google.rpc.Status body in the request's encoding (OTLP/HTTP spec)."""
    if encoding == JSON:
        return web.json_response({"code": code, "message": message}, status=http_status)
    body = status_pb2.Status(code=code, message=message).SerializeToString()
    return web.Response(status=http_status, body=body, content_type=PROTOBUF)
