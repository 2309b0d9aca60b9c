"""Trace-context propagation, sans-IO: W3C traceparent/tracestate/baggage, B3 single and multi
header, and x-request-id with Envoy's trace-reason encoding. Pure functions over header mappings;
imports no component."""
