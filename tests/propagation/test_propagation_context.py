"""extract / inject across formats, Envoy's sampling decision order, and agreement with the
OpenTelemetry SDK's own propagators (what they inject we parse identically, and vice versa)."""

from __future__ import annotations

import pytest
from fuzzing import examples
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.b3 import B3MultiFormat, B3SingleFormat
from opentelemetry.trace import NonRecordingSpan, TraceFlags, TraceState
from opentelemetry.trace import SpanContext as OtelSpanContext
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from meshtrace.propagation.context import SpanContext, decide, extract, inject
from meshtrace.propagation.request_id import TraceReason, trace_reason

TID = "4bf92f3577b34da6a3ce929d0e0e4736"
SID = "00f067aa0ba902b7"
B3TID = "0af7651916cd43dd8448eb211c80319c"
B3SID = "b7ad6b7169203331"
T, S = bytes.fromhex(TID), bytes.fromhex(SID)
TP_SAMPLED = {"traceparent": f"00-{TID}-{SID}-01"}
TP_UNSAMPLED = {"traceparent": f"00-{TID}-{SID}-00"}
B3_SAMPLED = {"x-b3-traceid": B3TID, "x-b3-spanid": B3SID, "x-b3-sampled": "1"}
B3_UNSAMPLED = {"x-b3-traceid": B3TID, "x-b3-spanid": B3SID, "x-b3-sampled": "0"}
# request ids whose head is 0 (sampled at any percentage > 0) and 9999 (only at 100 %)
RID_LOW = "00000000-1111-4222-8333-444444444444"
RID_HIGH = "0000270f-1111-4222-8333-444444444444"


def test_extract_w3c_keeps_tracestate_and_drops_invalid_one() -> None:
    ctx = extract({**TP_SAMPLED, "tracestate": "rojo=1,congo=2"})
    assert ctx == SpanContext(T, S, True, [("rojo", "1"), ("congo", "2")], "w3c")
    ctx = extract({**TP_SAMPLED, "tracestate": "BAD KEY=1"})
    assert ctx == SpanContext(T, S, True, [], "w3c")


def test_extract_order_follows_read() -> None:
    both = {**TP_SAMPLED, **B3_UNSAMPLED}
    ctx = extract(both)
    assert ctx is not None and ctx.source == "w3c"
    ctx = extract(both, read=("b3", "w3c"))  # USE_B3_WITH_W3C_PROPAGATION reads B3 first
    assert ctx is not None and ctx.source == "b3" and ctx.sampled is False
    assert extract(B3_SAMPLED, read=("w3c",)) is None  # the OpenTelemetry provider reads only W3C
    assert extract(TP_SAMPLED, read=("b3",)) is None  # Zipkin reads only B3
    # an invalid traceparent is ignored as if absent: B3 is next
    ctx = extract({"traceparent": "00-bad", **B3_SAMPLED})
    assert ctx is not None and ctx.source == "b3"


def test_inject_formats() -> None:
    p = bytes.fromhex(B3SID)
    out = inject(T, S, p, True, [("rojo", "1")])
    assert out == {
        "traceparent": f"00-{TID}-{SID}-01",
        "tracestate": "rojo=1",
        "x-b3-traceid": TID,
        "x-b3-spanid": SID,
        "x-b3-parentspanid": B3SID,
        "x-b3-sampled": "1",
    }
    assert set(inject(T, S, None, False, write=("w3c",))) == {"traceparent"}
    assert inject(T, S, None, False, write=("b3",)) == {
        "x-b3-traceid": TID,
        "x-b3-spanid": SID,
        "x-b3-sampled": "0",
    }
    assert extract(inject(T, S, None, True)) == SpanContext(T, S, True, [], "w3c")


@pytest.mark.parametrize(
    ("headers", "percentage", "sampled", "reason", "rid_reason"),
    [
        # 1. an incoming decision is honoured, whatever the request id and percentage say
        ({**TP_UNSAMPLED, "x-request-id": RID_LOW}, 100.0, False, "traceparent", TraceReason.SAMPLED),
        ({**TP_SAMPLED, "x-request-id": RID_HIGH}, 0.0, True, "traceparent", TraceReason.NOT_TRACEABLE),
        ({**B3_SAMPLED, "x-request-id": RID_HIGH}, 0.0, True, "b3", TraceReason.NOT_TRACEABLE),
        ({"b3": "0", "x-request-id": RID_LOW}, 100.0, False, "b3", TraceReason.SAMPLED),
        # B3 ids without a sampling flag defer the decision to us
        (
            {"x-b3-traceid": B3TID, "x-b3-spanid": B3SID, "x-request-id": RID_LOW},
            1.0,
            True,
            "random",
            TraceReason.SAMPLED,
        ),
        # 2. a reason already in x-request-id wins (the first proxy decided)
        ({"x-request-id": RID_HIGH[:14] + "9" + RID_HIGH[15:]}, 0.0, True, "request_id", TraceReason.SAMPLED),
        (
            {"x-request-id": RID_LOW[:14] + "a" + RID_LOW[15:], "x-client-trace-id": "c"},
            0.0,
            True,
            "request_id",
            TraceReason.FORCED,
        ),
        # 3. x-client-trace-id -> client-forced, before x-envoy-force-trace
        (
            {"x-request-id": RID_HIGH, "x-client-trace-id": "c", "x-envoy-force-trace": "1"},
            0.0,
            True,
            "client_forced",
            TraceReason.CLIENT_FORCED,
        ),
        # 4. x-envoy-force-trace -> forced
        ({"x-request-id": RID_HIGH, "x-envoy-force-trace": "1"}, 0.0, True, "forced", TraceReason.FORCED),
        # 5. random at the percentage, using the request id's integer
        ({"x-request-id": RID_LOW}, 0.01, True, "random", TraceReason.SAMPLED),
        ({"x-request-id": RID_HIGH}, 99.99, False, "not_sampled", TraceReason.NOT_TRACEABLE),
        ({"x-request-id": RID_HIGH}, 100.0, True, "random", TraceReason.SAMPLED),
        # the incoming B3 flag is not read when the provider reads only W3C
    ],
)
def test_decide_order(
    headers: dict[str, str], percentage: float, sampled: bool, reason: str, rid_reason: TraceReason
) -> None:
    decision = decide(headers, percentage)
    assert (decision.sampled, decision.reason) == (sampled, reason)
    assert trace_reason(decision.request_id) is rid_reason
    assert decision.request_id[:14] == headers["x-request-id"][:14]


def test_decide_read_formats() -> None:
    d = decide({**B3_SAMPLED, "x-request-id": RID_HIGH}, 0.0, read=("w3c",))
    assert (d.sampled, d.reason, d.context) == (False, "not_sampled", None)
    d = decide({**TP_UNSAMPLED, **B3_SAMPLED, "x-request-id": RID_HIGH}, 0.0, read=("b3", "w3c"))
    assert (d.sampled, d.reason) == (True, "b3")


def test_decide_generates_missing_request_id() -> None:
    d = decide({}, 100.0)
    assert len(d.request_id) == 36 and d.sampled and trace_reason(d.request_id) is TraceReason.SAMPLED
    d = decide({}, 0.0)
    assert not d.sampled and trace_reason(d.request_id) is TraceReason.NOT_TRACEABLE


def test_decide_keeps_invalid_request_id_and_never_traces_it() -> None:
    # nginx-style ids: kept as they are; a non-hex head is never traced, even when forced
    for headers in (
        {"x-request-id": "nginx-req-1"},
        {"x-request-id": "nginx-req-1", "x-envoy-force-trace": "1"},
    ):
        d = decide(headers, 100.0)
        assert (d.sampled, d.reason, d.request_id) == (False, "invalid_request_id", "nginx-req-1")
    # a hex head that is no UUID: cannot carry the decision, never traced either
    d = decide({"x-request-id": "00000000-short"}, 100.0)
    assert (d.sampled, d.reason, d.request_id) == (False, "invalid_request_id", "00000000-short")
    # an incoming decision still counts
    assert decide({**TP_SAMPLED, "x-request-id": "nginx-req-1"}, 0.0).sampled


def test_decide_edge_regenerates_request_id_and_ignores_force_trace() -> None:
    forced = RID_HIGH[:14] + "a" + RID_HIGH[15:]
    d = decide({"x-request-id": forced, "x-envoy-force-trace": "1"}, 0.0, edge=True)
    assert d.request_id != forced and not d.sampled


def test_decide_without_request_id_sampling_leaves_it_to_the_tracer() -> None:
    # useRequestIdForTraceSampling: false: Envoy returns "sampled" at once; the id is untouched
    forced = RID_HIGH[:14] + "a" + RID_HIGH[15:]
    for rid in (RID_HIGH, forced, "nginx-req-1"):
        d = decide({"x-request-id": rid}, 0.0, use_request_id=False)
        assert (d.sampled, d.reason, d.request_id) == (True, "request_id_not_used", rid)
    d = decide({**TP_UNSAMPLED, "x-request-id": RID_HIGH}, 100.0, use_request_id=False)
    assert (d.sampled, d.reason) == (False, "traceparent")


def test_decide_writes_a_reason_only_when_it_picks_one() -> None:
    odd = RID_HIGH[:14] + "c" + RID_HIGH[15:]  # an unknown reason char: not traceable, kept as is
    d = decide({"x-request-id": odd}, 1.0)
    assert (d.sampled, d.request_id) == (False, odd)
    assert decide({"x-request-id": odd}, 100.0).request_id == RID_HIGH[:14] + "9" + RID_HIGH[15:]
    assert decide({"x-request-id": ""}, 0.0).request_id != ""  # an empty id is replaced


@settings(max_examples=examples(200), deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "traceparent",
                "tracestate",
                "b3",
                "x-b3-traceid",
                "x-b3-spanid",
                "x-b3-sampled",
                "x-b3-flags",
                "x-request-id",
                "x-client-trace-id",
                "x-envoy-force-trace",
                "baggage",
            ]
        ),
        st.text(max_size=80),
    ),
    st.floats(min_value=0, max_value=100),
)
def test_decide_never_raises(headers: dict[str, str], percentage: float) -> None:
    d = decide(headers, percentage)
    if headers.get("x-request-id") and len(headers["x-request-id"]) != 36:
        assert d.request_id == headers["x-request-id"]


# --- the OpenTelemetry SDK's propagators as the other side ----------------------------------------


def _otel_context(tid: bytes, sid: bytes, sampled: bool, state: list[tuple[str, str]]) -> Context:
    sc = OtelSpanContext(
        int.from_bytes(tid), int.from_bytes(sid), True, TraceFlags(int(sampled)), TraceState(state)
    )
    return trace.set_span_in_context(NonRecordingSpan(sc))


ids = st.binary(min_size=16, max_size=16).filter(any)
span_ids = st.binary(min_size=8, max_size=8).filter(any)
states = st.lists(
    st.tuples(
        st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True),
        st.from_regex(r"[a-zA-Z0-9]{1,12}", fullmatch=True),
    ),
    max_size=5,
    unique_by=lambda kv: kv[0],
)


@settings(max_examples=examples(100), deadline=None)
@given(ids, span_ids, st.booleans(), states)
def test_we_parse_what_otel_injects(
    tid: bytes, sid: bytes, sampled: bool, state: list[tuple[str, str]]
) -> None:
    ctx = _otel_context(tid, sid, sampled, state)
    w3c: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(w3c, context=ctx)
    assert extract(w3c, read=("w3c",)) == SpanContext(tid, sid, sampled, state, "w3c")
    for propagator in (B3MultiFormat(), B3SingleFormat()):
        b3: dict[str, str] = {}
        propagator.inject(b3, context=ctx)
        assert extract(b3, read=("b3",)) == SpanContext(tid, sid, sampled, [], "b3")


@settings(max_examples=examples(100), deadline=None)
@given(ids, span_ids, st.booleans(), states)
def test_otel_parses_what_we_inject(
    tid: bytes, sid: bytes, sampled: bool, state: list[tuple[str, str]]
) -> None:
    headers = inject(tid, sid, None, sampled, state)
    for propagator, keys in (
        (TraceContextTextMapPropagator(), ("traceparent", "tracestate")),
        (B3MultiFormat(), ("x-b3-traceid", "x-b3-spanid", "x-b3-sampled")),
    ):
        only = {k: v for k, v in headers.items() if k in keys}
        sc = trace.get_current_span(propagator.extract(only)).get_span_context()
        assert (sc.trace_id, sc.span_id, sc.trace_flags.sampled) == (
            int.from_bytes(tid),
            int.from_bytes(sid),
            sampled,
        )
        if "tracestate" in keys:
            assert list(sc.trace_state.items()) == state


def test_otel_and_we_agree_on_64_bit_b3_and_debug() -> None:
    headers = {"x-b3-traceid": "a3ce929d0e0e4736", "x-b3-spanid": SID, "x-b3-flags": "1"}
    ours = extract(headers, read=("b3",))
    theirs = trace.get_current_span(B3MultiFormat().extract(headers)).get_span_context()
    assert ours is not None and ours.trace_id is not None
    assert (int.from_bytes(ours.trace_id), ours.sampled) == (theirs.trace_id, theirs.trace_flags.sampled)


@pytest.mark.parametrize(
    "header",
    [
        f"ff-{TID}-{SID}-01",
        f"00-{'0' * 32}-{SID}-01",
        f"00-{TID.upper()}-{SID}-01",
        f"00-{TID}-{SID}-01-x",
        f"01-{TID}-{SID}-01-future",
        f"00-{TID}-{SID}-09",
    ],
)
def test_otel_and_we_agree_on_traceparent_validity(header: str) -> None:
    theirs = trace.get_current_span(TraceContextTextMapPropagator().extract({"traceparent": header}))
    ours = extract({"traceparent": header}, read=("w3c",))
    assert (ours is not None) == theirs.get_span_context().is_valid
