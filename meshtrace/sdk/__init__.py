"""meshtrace's application SDK: the seed's `pkg/telemetry` on opentelemetry-python.

    from meshtrace.sdk import init_tracer
    shutdown = init_tracer("frontend")
    ...
    shutdown()  # flushes the spans still queued

See docs/sdk.md.
"""

from meshtrace.sdk.context import current_trace_id, extract, forwarded_headers, inject, record_error
from meshtrace.sdk.instrumentation import instrument_aiohttp
from meshtrace.sdk.sampling import ErrorBasedSampler
from meshtrace.sdk.semconv import (
    current_attributes,
    db_attributes,
    error_attributes,
    http_client_attributes,
    http_server_attributes,
    http_span_name,
    operation_span_name,
    span_name_problems,
)
from meshtrace.sdk.settings import SettingsError
from meshtrace.sdk.tracer import Shutdown, init_tracer, propagator

__all__ = [
    "ErrorBasedSampler",
    "SettingsError",
    "Shutdown",
    "current_attributes",
    "current_trace_id",
    "db_attributes",
    "error_attributes",
    "extract",
    "forwarded_headers",
    "http_client_attributes",
    "http_server_attributes",
    "http_span_name",
    "init_tracer",
    "inject",
    "instrument_aiohttp",
    "operation_span_name",
    "propagator",
    "record_error",
    "span_name_problems",
]
