"""Trace-context propagation, sans-IO: W3C traceparent/tracestate/baggage, B3 single and multi
header, and x-request-id with Envoy's trace-reason encoding. Pure functions over header mappings
(lowercase names); imports no component.

Start with `context`: `extract`, `inject` and `decide` (Envoy's sampling decision order)."""

from meshtrace.propagation.context import Decision, SpanContext, decide, extract, inject

__all__ = ["Decision", "SpanContext", "decide", "extract", "inject"]
