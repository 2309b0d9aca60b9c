"""The zipkin receiver's HTTP shell: pick the decoder by path and content type, convert to OTLP
(meshtrace/model/zipkin.py) and push into the pipeline. 202 on success; 400 naming what is wrong;
a body that parses but holds a span that cannot be converted (a bad id, kind or address) or
stored (all-zero ids, times after 2262: meshtrace/model/validate.py) is refused whole with 400,
since Zipkin has no partial success and a 202 would hide the loss from the reporter: all its spans
count in `otelcol_receiver_refused_spans` (a body that does not parse counts nothing);
413 over `max_request_body_size` (on the wire and after decompression: meshtrace.httpbody inflates
gzip/deflate/zlib bodies with that cap); 415 for other content types (and for Thrift, not
supported) and unsupported Content-Encodings; 503 (+ Retry-After) when the pipeline refuses,
429 (+ Retry-After) when too many request bytes are in flight (admission control). Bodies are
decoded in the OTLP receiver's decoding process, off the event loop."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from meshtrace import csrf
from meshtrace.collector.admission import Admission
from meshtrace.collector.component import ComponentID, Host, RefusedError, TracesConsumer
from meshtrace.collector.httpserve import serve
from meshtrace.collector.receivers.otlp.receiver import Outcome, decode_off_loop, push, refusal_outcome
from meshtrace.collector.receivers.zipkin.config import ZipkinReceiverConfig
from meshtrace.collector.telemetry import TELEMETRY
from meshtrace.httpbody import BodyError, BodyRefused, read_body
from meshtrace.model import Traces
from meshtrace.model import zipkin as model
from meshtrace.model.validate import Refused, refuse_invalid

JSON = "application/json"
PROTOBUF_TYPES = ("application/x-protobuf", "application/protobuf")
THRIFT = "application/x-thrift"

Decoder = Callable[[bytes], list[dict[str, Any]]]


def choose_decoder(path: str, content_type: str) -> Decoder | web.Response:
    """The body decoder for a request, or the 415 answer."""
    # Zipkin clients commonly send JSON without a content type (curl's default form type too).
    is_json = content_type in (JSON, "", "application/octet-stream", "application/x-www-form-urlencoded")
    if path.endswith("/v1/spans"):
        if is_json:
            return model.decode_v1_json
        if content_type == THRIFT:
            return web.Response(status=415, text="415 zipkin v1 Thrift is not supported: send v1 JSON or v2")
        return web.Response(
            status=415, text=f"415 unsupported media type {content_type!r}, supported: [{JSON}]"
        )
    if is_json:
        return model.decode_v2_json
    if content_type in PROTOBUF_TYPES:
        return model.decode_list_of_spans
    supported = ", ".join((JSON, *PROTOBUF_TYPES))
    return web.Response(
        status=415, text=f"415 unsupported media type {content_type!r}, supported: [{supported}]"
    )


def zipkin_traces(decoder: Decoder, parse_string_tags: bool, body: bytes) -> tuple[Traces, Refused]:
    """A Zipkin body as OTLP, and what validation refused (run in the decoding process: picklable,
    module-level). ValueError when the body does not decode. One span that cannot be stored
    refuses the body whole: every span of it is refused and nothing is passed on."""
    spans = decoder(body)
    try:
        request = model.zipkin_v2_to_otlp(spans, parse_string_tags)
        refused = refuse_invalid(request)
    except ValueError as exc:
        refused = Refused(len(spans), str(exc))
    if refused.spans:
        return Traces.from_message(ExportTraceServiceRequest()), Refused(len(spans), refused.message)
    return Traces.from_message(request), refused


def _refused(request: web.Request, status: int, message: str) -> web.Response:
    return web.Response(status=status, text=f"{status} {message}")


class ZipkinReceiver:
    def __init__(self, id: ComponentID, config: ZipkinReceiverConfig, next_consumer: TracesConsumer) -> None:
        self.id = id
        self.config = config
        self.next = next_consumer
        self.metrics = TELEMETRY.receiver(id, "http")
        self._runner: web.AppRunner | None = None
        self._admission = Admission()

    async def _spans(self, request: web.Request) -> web.Response:
        decoder = choose_decoder(request.path, request.content_type)
        if isinstance(decoder, web.Response):
            return decoder
        with self._admission.ticket() as ticket:
            try:
                body = await read_body(request, self.config.max_request_body_size, ticket.reserve)
            except BodyRefused:
                return _answer(refusal_outcome(ticket.refusal()))
            except BodyError as exc:
                return web.Response(status=exc.status, text=f"{exc.status} {exc}")
            except Exception as exc:  # the client reset the connection mid-body
                return web.Response(status=400, text=f"400 cannot read the request body: {exc}")
            # Decoded in the decoding process: what comes back is about the body's size again.
            if not ticket.reserve(len(body)):
                return _answer(refusal_outcome(ticket.refusal()))
            try:
                traces, refused = await decode_off_loop(
                    partial(zipkin_traces, decoder, self.config.parse_string_tags), body
                )
            except ValueError as exc:
                return web.Response(status=400, text=f"400 {exc}")
            except RefusedError as exc:
                return _answer(refusal_outcome(exc))
            del body
            if refused.spans:
                # Zipkin has no partial success: the body is refused whole, so the reporter sees why.
                self.metrics.refused_spans.add(refused.spans)
                return web.Response(status=400, text=f"400 {refused.message}")
            outcome = await push(self.next, traces, self.metrics)
        return web.Response(status=202) if outcome is None else _answer(outcome)

    async def start(self, host: Host) -> None:
        self._admission = host.admission()
        # Reporters send JSON under any type, and a browser can POST a form-typed body to loopback
        # from any web page without asking: a foreign Origin is refused (meshtrace.csrf).
        app = web.Application(middlewares=[csrf.middleware(_refused, require_json=False)])
        app.router.add_post("/api/v2/spans", self._spans)
        app.router.add_post("/api/v1/spans", self._spans)
        bind_host, port = self.config.bind_address()
        self._runner = await serve(app, bind_host, port, str(self.id))

    async def shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def _answer(outcome: Outcome) -> web.Response:
    text = f"{outcome.http_status} {outcome.message}"
    return web.Response(status=outcome.http_status, text=text, headers=outcome.http_headers())
