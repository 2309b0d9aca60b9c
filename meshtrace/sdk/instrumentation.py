"""Turn on the OpenTelemetry instrumentation for aiohttp (server and client), emitting the current
HTTP semantic conventions (`http.request.method`, `url.full`, ...) instead of the old names the
instrumentation still writes by default."""

from __future__ import annotations

import os

SEMCONV_OPT_IN = "OTEL_SEMCONV_STABILITY_OPT_IN"


def instrument_aiohttp() -> None:
    """Instrument `aiohttp.web.Application` (create the app AFTER this call) and every
    `aiohttp.ClientSession`. Call after `init_tracer`."""
    # Read once by the instrumentation when it is first set up; a user's own choice is kept.
    os.environ.setdefault(SEMCONV_OPT_IN, "http")
    from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
    from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor

    server = AioHttpServerInstrumentor()
    if not server.is_instrumented_by_opentelemetry:
        server.instrument()
    client = AioHttpClientInstrumentor()
    if not client.is_instrumented_by_opentelemetry:
        client.instrument()
