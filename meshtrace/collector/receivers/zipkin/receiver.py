"""The zipkin receiver's HTTP shell: pick the decoder by path and content type, convert to OTLP
(meshtrace/model/zipkin.py) and push into the pipeline. 202 on success; 400 naming what is wrong;
a body that decodes but holds a span that cannot be stored (all-zero ids, times after 2262:
meshtrace/model/validate.py) is refused whole with 400, since Zipkin has no partial success and a
202 would hide the loss from the reporter: all its spans count in `otelcol_receiver_refused_spans`
(a body that does not decode counts nothing);
413 over `max_request_body_size`; 415 for other content types (and for Thrift, not supported);
503 (+ Retry-After) when the pipeline refuses. aiohttp inflates gzip/deflate bodies."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from meshtrace.collector.component import ComponentID, Host, TracesConsumer
from meshtrace.collector.httpserve import serve
from meshtrace.collector.receivers.otlp.receiver import push
from meshtrace.collector.receivers.zipkin.config import ZipkinReceiverConfig
from meshtrace.collector.telemetry import TELEMETRY
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


class ZipkinReceiver:
    def __init__(self, id: ComponentID, config: ZipkinReceiverConfig, next_consumer: TracesConsumer) -> None:
        self.id = id
        self.config = config
        self.next = next_consumer
        self.metrics = TELEMETRY.receiver(id, "http")
        self._runner: web.AppRunner | None = None

    async def _spans(self, request: web.Request) -> web.Response:
        decoder = choose_decoder(request.path, request.content_type)
        if isinstance(decoder, web.Response):
            return decoder
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return web.Response(
                status=413, text=f"413 request body over {self.config.max_request_body_size} bytes"
            )
        except Exception as exc:  # broken gzip, unknown Content-Encoding, connection reset
            return web.Response(status=400, text=f"400 cannot read the request body: {exc}")
        try:
            spans = decoder(body)
        except ValueError as exc:
            return web.Response(status=400, text=f"400 {exc}")
        try:
            request_message = model.zipkin_v2_to_otlp(spans, self.config.parse_string_tags)
            refused = refuse_invalid(request_message)
        except ValueError as exc:
            refused = Refused(len(spans), str(exc))
        if refused.spans:
            # Zipkin has no partial success: the body is refused whole, so the reporter sees why.
            self.metrics.refused_spans.add(len(spans))
            return web.Response(status=400, text=f"400 {refused.message}")
        outcome = await push(self.next, Traces.from_message(request_message), self.metrics)
        if outcome is None:
            return web.Response(status=202)
        response = web.Response(status=outcome.http_status, text=f"{outcome.http_status} {outcome.message}")
        if outcome.retry_after is not None:
            response.headers["Retry-After"] = str(max(1, round(outcome.retry_after)))
        return response

    async def start(self, host: Host) -> None:
        app = web.Application(client_max_size=self.config.max_request_body_size)
        app.router.add_post("/api/v2/spans", self._spans)
        app.router.add_post("/api/v1/spans", self._spans)
        bind_host, port = self.config.bind_address()
        self._runner = await serve(app, bind_host, port, str(self.id))

    async def shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
