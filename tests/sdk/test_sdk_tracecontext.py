"""The SDK's W3C propagator reads tracestate by meshtrace's rules (as the sidecar does) and keeps
it when a sidecar writes B3 beside W3C; the W3C validation suite runs it end to end in
tests/sidecar/test_sidecar_w3c_suite.py."""

from __future__ import annotations

import pytest
from fuzzing import examples
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from meshtrace.propagation.context import inject
from meshtrace.sdk import init_tracer, propagator
from meshtrace.sdk.tracecontext import W3CTraceContextPropagator, W3CTraceState

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


def _state(ctx: Context) -> list[tuple[str, str]]:
    return list(trace.get_current_span(ctx).get_span_context().trace_state.items())


def test_tracestate_survives_a_sidecar_that_writes_w3c_and_b3() -> None:
    # what a meshtrace sidecar sends its app: both formats, the same ids
    headers = inject(bytes.fromhex(TRACE_ID), bytes.fromhex(PARENT_ID), None, True, [("rojo", "1")])
    assert {"traceparent", "tracestate", "x-b3-traceid"} <= headers.keys()
    ctx = propagator().extract(headers)
    assert _state(ctx) == [("rojo", "1")]
    out: dict[str, str] = {}
    propagator().inject(out, context=ctx)
    assert out["tracestate"] == "rojo=1"


def test_b3_alone_still_continues_the_trace() -> None:
    ctx = propagator().extract({"x-b3-traceid": TRACE_ID, "x-b3-spanid": PARENT_ID, "x-b3-sampled": "1"})
    assert format(trace.get_current_span(ctx).get_span_context().trace_id, "032x") == TRACE_ID


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (["foo@=1,bar=2"], [("foo@", "1"), ("bar", "2")]),  # Level 2 keys opentelemetry-python drops
        (["t" * 242 + "@v=1"], [("t" * 242 + "@v", "1")]),
        (["foo=1,foo=2"], [("foo", "1")]),  # a repeat keeps the first entry
        (["foo=1", "foo=2", "bar=3"], [("foo", "1"), ("bar", "3")]),  # fields joined in order
        (["@foo=1,bar=2"], []),  # invalid: the header is dropped, the traceparent kept
        ([",".join(f"k{i}=v" for i in range(33))], []),
    ],
)
def test_extract_reads_tracestate_by_meshtrace_rules(
    fields: list[str], expected: list[tuple[str, str]]
) -> None:
    carrier = {"traceparent": [TRACEPARENT], "tracestate": fields}
    ctx = W3CTraceContextPropagator().extract(carrier, getter=_ListGetter())
    assert trace.get_current_span(ctx).get_span_context().is_valid
    assert _state(ctx) == expected


class _ListGetter:
    """A carrier with several fields per header name, as HTTP servers hand them over."""

    def get(self, carrier: dict[str, list[str]], key: str) -> list[str] | None:
        return carrier.get(key)

    def keys(self, carrier: dict[str, list[str]]) -> list[str]:
        return list(carrier)


@pytest.mark.parametrize(
    "traceparent", [f"00-{'0' * 32}-{PARENT_ID}-01", f"ff-{TRACE_ID}-{PARENT_ID}-01", "junk"]
)
def test_invalid_traceparent_is_ignored_with_its_tracestate(traceparent: str) -> None:
    ctx = W3CTraceContextPropagator().extract({"traceparent": traceparent, "tracestate": "rojo=1"})
    assert not trace.get_current_span(ctx).get_span_context().is_valid


def test_child_spans_keep_the_tracestate() -> None:
    shutdown = init_tracer("svc", exporter=InMemorySpanExporter(), env={}, set_global=False)
    ctx = W3CTraceContextPropagator().extract({"traceparent": TRACEPARENT, "tracestate": "foo@=1"})
    with shutdown.provider.get_tracer("t").start_as_current_span("op", context=ctx) as span:
        out: dict[str, str] = {}
        W3CTraceContextPropagator().inject(out)
        assert out["tracestate"] == "foo@=1"
        assert out["traceparent"].split("-")[2] == format(span.get_span_context().span_id, "016x")
    shutdown()


def test_trace_state_changes_keep_the_grammar_and_the_type() -> None:
    state = W3CTraceState([("foo@", "1"), ("bar", "2")])
    added = state.add("new@", "3")
    assert isinstance(added, W3CTraceState) and list(added.items()) == [
        ("new@", "3"),
        ("foo@", "1"),
        ("bar", "2"),
    ]
    assert list(state.update("bar", "9").items()) == [("bar", "9"), ("foo@", "1")]
    assert list(state.delete("foo@").items()) == [("bar", "2")]
    assert state.add("BAD", "1") is state and state.add("foo@", "x") is state
    assert state.update("missing", "1") is state and state.update("bar", "a=b") is state
    assert len(W3CTraceState([("@bad", "1")])) == 0


@settings(max_examples=examples(200), deadline=None)
@given(st.text(max_size=80), st.text(max_size=200))
def test_extract_never_raises(traceparent: str, tracestate: str) -> None:
    W3CTraceContextPropagator().extract({"traceparent": traceparent, "tracestate": tracestate})
