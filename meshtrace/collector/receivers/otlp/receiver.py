"""The otlp receiver: OTLP/gRPC (grpcio aio) and OTLP/HTTP (aiohttp) into the pipeline.

Requests stay encoded: the protobuf body is parsed once (upb, in C) to validate it and count
spans, then only the bytes and the count travel on in `Traces`, so exporters forward the original
bytes and batches hold no parsed messages.

Status mapping (docs/upstream-behaviour.md §4, docs/collector.md "Receiving"): undecodable -> gRPC
INVALID_ARGUMENT / HTTP 400; the pipeline refusing (RefusedError, any unexpected error) ->
UNAVAILABLE / 503 (+ Retry-After / RetryInfo when the refusal says how long); too many request
bytes in flight (admission control, before the body is read or decoded) -> RESOURCE_EXHAUSTED /
429 with RetryInfo / Retry-After; a permanent rejection -> INVALID_ARGUMENT / 400.

Spans that decode but cannot be stored (empty or all-zero ids, times after 2262:
meshtrace/model/validate.py) are taken out of the request and the rest goes on: the answer is
success with `partial_success` (`rejected_spans` + `error_message`, gRPC and HTTP, protobuf and
JSON), and they count in `otelcol_receiver_refused_spans`, as does every span of a decoded
request the pipeline refuses. An undecodable body counts nothing (its spans cannot be counted).

OTLP/JSON is decoded in one worker process (`decode_off_loop`), never on the event loop: a large
JSON body takes seconds of Python work, which would stall every other receiver meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import os
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
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
from meshtrace.collector.admission import (
    DECODE_COST,
    RETRY_AFTER_S,
    Admission,
    ResourceExhaustedError,
)
from meshtrace.collector.component import ComponentID, Host, PermanentError, RefusedError, TracesConsumer
from meshtrace.collector.httpserve import serve
from meshtrace.collector.receivers.otlp.config import MIB, GrpcConfig, HttpConfig, OtlpReceiverConfig
from meshtrace.collector.schema import host_port
from meshtrace.collector.telemetry import TELEMETRY, ReceiverMetrics
from meshtrace.httpbody import BodyError, BodyRefused, read_body
from meshtrace.model import Traces, otlp_json
from meshtrace.model.otlp_wire import count_spans
from meshtrace.model.traces import spans_in
from meshtrace.model.validate import Refused, refuse_invalid
from meshtrace.parentdeath import die_with_parent

log = logging.getLogger(__name__)

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
EMPTY_RESPONSE = ExportTraceServiceResponse().SerializeToString()
NONE_REFUSED = Refused()

# One worker process, started at the first JSON body: JSON decoding of every receiver queues
# there, one body at a time (bounded). Not a thread: json.loads and protobuf serialization hold
# the GIL for 100 ms and more on a large body, which stalled other clients' exports.
_decoder: ProcessPoolExecutor | None = None


def _decoding_process() -> ProcessPoolExecutor:
    global _decoder
    if _decoder is None:
        _decoder = ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=die_with_parent,
            initargs=(os.getpid(),),
        )
    return _decoder


Decode = Callable[[bytes], tuple[Traces, Refused]]


def _encoded(decode: Decode, body: bytes) -> tuple[bytes, int, Refused]:
    traces, refused = decode(body)
    return traces.encoded(), traces.span_count(), refused


async def decode_off_loop(decode: Decode, body: bytes) -> tuple[Traces, Refused]:
    """`decode(body)` in the decoding process (`decode` must be picklable: a module-level function
    or a partial of one), encoded and counted there, so only bytes come back. RefusedError if that
    process died meanwhile (killed, out of memory): the next body gets a new one."""
    global _decoder
    pool = _decoding_process()
    try:
        encoded, count, refused = await asyncio.get_running_loop().run_in_executor(
            pool, _encoded, decode, body
        )
    except BrokenProcessPool:
        if _decoder is pool:
            _decoder = None
        raise RefusedError("the decoding process died: retry later", retry_after=RETRY_AFTER_S) from None
    return Traces.from_bytes(encoded, span_count=count), refused


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
    return Traces.from_bytes(body, span_count=spans_in(request.resource_spans)), refused


def decode_json(body: bytes) -> tuple[Traces, Refused]:
    try:
        request = otlp_json.loads(body)
        refused = refuse_invalid(request)
    except ValueError as exc:
        raise PermanentError(f"cannot decode OTLP/JSON: {exc}") from None
    return Traces.from_message(request), refused


def json_traces(body: bytes) -> tuple[Traces, Refused]:
    """decode_json, with its PermanentError as a ValueError (which crosses a process boundary)."""
    try:
        return decode_json(body)
    except PermanentError as exc:
        raise ValueError(str(exc)) from None


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

    def http_headers(self) -> dict[str, str]:
        """Retry-After in whole seconds (at least 1) when the refusal says how long to wait."""
        return {} if self.retry_after is None else {"Retry-After": str(max(1, round(self.retry_after)))}


def refusal_outcome(exc: RefusedError) -> Outcome:
    """Retryable refusals: RESOURCE_EXHAUSTED / 429 for admission control, else UNAVAILABLE / 503."""
    if isinstance(exc, ResourceExhaustedError):
        return Outcome(grpc.StatusCode.RESOURCE_EXHAUSTED, 429, str(exc), exc.retry_after)
    return Outcome(grpc.StatusCode.UNAVAILABLE, 503, str(exc), exc.retry_after)


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
        return refusal_outcome(exc)
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
        self._admission = Admission()
        self._calls: asyncio.Semaphore | None = None  # open export calls, under a memory limit
        self._calls_limit = 0

    # --- gRPC ---

    async def _export_call(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
    ) -> bytes:
        """Export, taken as a stream of one message so that, under a memory limit, a call beyond
        `concurrent_requests` open calls is refused before its message is read: gRPC buffers the
        whole message of every open call, so the number of open calls is what bounds that memory.
        The refused call's spans are unknown (never read) and not counted.

        Aborting raises, and the exception's traceback keeps the raising frame's locals alive
        until a cyclic GC: so the message lives only in `_export`, which returns an Outcome,
        never in a frame that aborts (refused 1.3 MB requests piled up 60 MiB a second)."""
        calls = self._calls
        refused = NONE_REFUSED
        if calls is None:
            outcome, refused = await self._export(await _only_message(requests, context))
        elif calls.locked():
            outcome = refusal_outcome(
                ResourceExhaustedError(
                    f"more than {self._calls_limit} export calls at once: retry later",
                    retry_after=RETRY_AFTER_S,
                )
            )
        else:
            async with calls:
                outcome, refused = await self._export(await _only_message(requests, context))
        if outcome is not None:
            await context.abort(outcome.grpc_code, outcome.message, _retry_info(outcome))
        return success_body(refused)

    async def _export(self, request: bytes) -> tuple[Outcome | None, Refused]:
        """The outcome of one export, and the spans validation refused (for `partial_success`)."""
        metrics = self._grpc_metrics
        with self._admission.ticket() as ticket:
            if not ticket.reserve(len(request) * (1 + DECODE_COST)):
                # Refused before decoding: the spans are counted from the wire, not parsed.
                metrics.refused_spans.add(count_spans(request) or 0)
                return refusal_outcome(ticket.refusal()), NONE_REFUSED
            try:
                traces, refused = decode_protobuf(request)
            except PermanentError as exc:
                return Outcome(grpc.StatusCode.INVALID_ARGUMENT, 400, str(exc)), NONE_REFUSED
            return await push(self.next, traces, metrics, refused), refused

    async def _start_grpc(self, config: GrpcConfig) -> None:
        self._grpc_metrics = TELEMETRY.receiver(self.id, "grpc")
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", config.max_recv_msg_size_mib * MIB),
            ("grpc.so_reuseport", 0),
        ]
        if config.max_concurrent_streams:
            options.append(("grpc.max_concurrent_streams", config.max_concurrent_streams))
        concurrent = self._admission.concurrent_requests(config.max_recv_msg_size_mib * MIB)
        if concurrent is not None:
            # With BDP probing, grpc grows HTTP/2 windows until whole messages of calls it has
            # not handed over yet are buffered; without it, they wait for their turn unsent.
            options.append(("grpc.http2.bdp_probe", 0))
            self._calls, self._calls_limit = asyncio.Semaphore(concurrent), concurrent
        server = grpc.aio.server(options=options)
        # Raw bytes in and out (no (de)serializers): the receiver parses once itself.
        handler = grpc.method_handlers_generic_handler(
            SERVICE, {"Export": grpc.stream_unary_rpc_method_handler(self._export_call)}
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
        with self._admission.ticket() as ticket:
            try:
                body = await read_body(request, config.max_request_body_size, ticket.reserve)
            except BodyRefused:
                return _outcome_response(encoding, refusal_outcome(ticket.refusal()))
            except BodyError as exc:
                return _status(encoding, exc.status, 8 if exc.status == 413 else 3, str(exc))
            except Exception as exc:  # the client reset the connection mid-body
                return _status(encoding, 400, 3, f"cannot read the request body: {exc}")
            # Protobuf is decoded here (DECODE_COST); JSON in the decoding process, whose answer
            # (the encoded request) is about the body's size again.
            if not ticket.reserve(len(body) * (DECODE_COST if encoding == PROTOBUF else 1)):
                if encoding == PROTOBUF:  # JSON spans are not known without decoding
                    self._http_metrics.refused_spans.add(count_spans(body) or 0)
                return _outcome_response(encoding, refusal_outcome(ticket.refusal()))
            try:
                if encoding == JSON:
                    traces, refused = await decode_off_loop(json_traces, body)
                else:
                    traces, refused = decode_protobuf(body)
            except (PermanentError, ValueError) as exc:
                return _status(encoding, 400, 3, str(exc))
            except RefusedError as exc:
                return _outcome_response(encoding, refusal_outcome(exc))
            del body
            outcome = await push(self.next, traces, self._http_metrics, refused)
        if outcome is not None:
            return _outcome_response(encoding, outcome)
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
        self._admission = host.admission()
        if self.config.protocols.grpc is not None:
            await self._start_grpc(self.config.protocols.grpc)
        if self.config.protocols.http is not None:
            await self._start_http(self.config.protocols.http)

    async def shutdown(self) -> None:
        if self._grpc is not None:
            await self._grpc.stop(grace=2.0)
        if self._http is not None:
            await self._http.cleanup()


async def _only_message(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    async for request in requests:
        return request
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no ExportTraceServiceRequest in the call")
    raise AssertionError("context.abort raises")


def _retry_info(outcome: Outcome) -> tuple[tuple[str, bytes], ...]:
    """gRPC's way to say how long to wait: RetryInfo in grpc-status-details-bin."""
    if outcome.retry_after is None:
        return ()
    status = status_pb2.Status(code=outcome.grpc_code.value[0], message=outcome.message)
    info = error_details_pb2.RetryInfo()
    info.retry_delay.FromNanoseconds(int(outcome.retry_after * 1e9))
    status.details.add().Pack(info)
    return (("grpc-status-details-bin", status.SerializeToString()),)


def _outcome_response(encoding: str, outcome: Outcome) -> web.Response:
    response = _status(encoding, outcome.http_status, outcome.grpc_code.value[0], outcome.message)
    response.headers.update(outcome.http_headers())
    return response


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
