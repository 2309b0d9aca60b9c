"""Context passing (the seed's Context 传递): what an app must carry from the request it serves to
the requests it makes, so the sidecars' spans and the app's spans form one trace.

The trace context (W3C traceparent/tracestate, baggage, B3) is carried by the global propagator
that `init_tracer` installs: the instrumentation extracts it from inbound requests and injects it
into outbound ones, as long as the outbound call runs inside the inbound request's context
(asyncio tasks and `asyncio.to_thread` copy it; `loop.run_in_executor` does not). Istio also
requires apps to forward `x-request-id` (docs/upstream-behaviour.md §2): no propagator does that, so it is
copied by `forwarded_headers`.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, Status, StatusCode

from meshtrace.sdk.semconv import error_attributes

# Headers with no propagator that Istio's docs ask applications to forward.
FORWARDED_HEADERS = ("x-request-id",)


def forwarded_headers(incoming: Mapping[str, str]) -> dict[str, str]:
    """The x-request-id of the request being served, to put on every request it causes."""
    lowered = {k.lower(): v for k, v in incoming.items()}
    return {name: lowered[name] for name in FORWARDED_HEADERS if name in lowered}


def extract(headers: Mapping[str, str]) -> Context:
    """The caller's trace context from inbound headers (for servers that are not instrumented)."""
    return propagate.extract({k.lower(): v for k, v in headers.items()})


def inject(headers: MutableMapping[str, str], context: Context | None = None) -> MutableMapping[str, str]:
    """Write the current (or given) trace context into outbound headers (for clients that are not
    instrumented); returns `headers`."""
    propagate.inject(headers, context=context)
    return headers


def record_error(span: Span, error: BaseException, description: str | None = None) -> None:
    """The seed's `span.RecordError(err); span.SetStatus(codes.Error, err.Error())`, plus `error.type`,
    for errors that are handled (not raised through the span's `with` block)."""
    span.record_exception(error)
    span.set_attributes(error_attributes(error))
    span.set_status(Status(StatusCode.ERROR, description if description is not None else str(error)))


def current_trace_id() -> str | None:
    """The current trace id as 32 lowercase hex digits (for logs), or None outside a trace."""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None
