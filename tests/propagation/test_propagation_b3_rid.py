"""B3 single/multi and x-request-id trace-reason rules (docs/upstream-behaviour.md §2, §2b)."""

from __future__ import annotations

import pytest
from fuzzing import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from meshtrace.propagation.b3 import B3Context, b3_multi_headers, format_b3_single, parse_b3
from meshtrace.propagation.request_id import (
    TraceReason,
    new_request_id,
    random_sample,
    trace_reason,
    with_trace_reason,
)

TID = "4bf92f3577b34da6a3ce929d0e0e4736"
TID64 = "a3ce929d0e0e4736"
SID = "00f067aa0ba902b7"
PSID = "b7ad6b7169203331"
T, S, P = bytes.fromhex(TID), bytes.fromhex(SID), bytes.fromhex(PSID)
T64 = bytes(8) + bytes.fromhex(TID64)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"x-b3-traceid": TID, "x-b3-spanid": SID, "x-b3-sampled": "1"}, B3Context(T, S, None, True)),
        (
            {"x-b3-traceid": TID, "x-b3-spanid": SID, "x-b3-parentspanid": PSID, "x-b3-sampled": "0"},
            B3Context(T, S, P, False),
        ),
        ({"x-b3-traceid": TID64, "x-b3-spanid": SID}, B3Context(T64, S, None, None)),  # 64-bit left-padded
        ({"x-b3-traceid": TID, "x-b3-spanid": SID, "x-b3-sampled": "true"}, B3Context(T, S, None, True)),
        ({"x-b3-traceid": TID, "x-b3-spanid": SID, "x-b3-sampled": "false"}, B3Context(T, S, None, False)),
        ({"x-b3-traceid": TID, "x-b3-spanid": SID, "x-b3-sampled": "maybe"}, B3Context(T, S, None, None)),
        # X-B3-Flags: 1 is debug, which implies sampled
        ({"x-b3-traceid": TID, "x-b3-spanid": SID, "x-b3-flags": "1"}, B3Context(T, S, None, True, True)),
        (
            {"x-b3-traceid": TID, "x-b3-spanid": SID, "x-b3-flags": "1", "x-b3-sampled": "0"},
            B3Context(T, S, None, True, True),
        ),
        ({"x-b3-sampled": "0"}, B3Context(None, None, None, False)),  # sampling state only
        ({"x-b3-traceid": TID.upper(), "x-b3-spanid": SID}, None),  # lowercase hex only
        ({"x-b3-traceid": TID, "x-b3-spanid": "0" * 16}, None),  # all-zero span id
        ({"x-b3-traceid": TID}, None),  # a trace id alone is no context
        ({"x-b3-traceid": TID[:20], "x-b3-spanid": SID}, None),  # 16 or 32 hex only
        (
            {"x-b3-traceid": TID, "x-b3-spanid": SID, "x-b3-parentspanid": "xx"},
            B3Context(T, S, None, None),
        ),  # a bad parent only loses the parent
        ({}, None),
        # single header
        ({"b3": f"{TID}-{SID}"}, B3Context(T, S, None, None)),
        ({"b3": f"{TID}-{SID}-1"}, B3Context(T, S, None, True)),
        ({"b3": f"{TID}-{SID}-d"}, B3Context(T, S, None, True, True)),
        ({"b3": f"{TID}-{SID}-0-{PSID}"}, B3Context(T, S, P, False)),
        ({"b3": f"{TID64}-{SID}-1"}, B3Context(T64, S, None, True)),
        ({"b3": "0"}, B3Context(None, None, None, False)),  # b3: 0 alone = do not sample
        ({"b3": "1"}, B3Context(None, None, None, True)),
        ({"b3": "d"}, B3Context(None, None, None, True, True)),
        ({"b3": f"{TID}-{SID}-x"}, None),
        ({"b3": f"{TID}-{SID}-1-{PSID}-extra"}, None),
        ({"b3": "2"}, None),
        # the single header wins over the multi headers, even when it only says "do not sample"
        (
            {"b3": "0", "x-b3-traceid": TID, "x-b3-spanid": SID, "x-b3-sampled": "1"},
            B3Context(None, None, None, False),
        ),
    ],
)
def test_parse_b3(headers: dict[str, str], expected: B3Context | None) -> None:
    assert parse_b3(headers) == expected


@pytest.mark.parametrize(
    "ctx",
    [
        B3Context(T, S, None, True),
        B3Context(T, S, P, False),
        B3Context(T, S, None, None),
        B3Context(T, S, P, True, True),
        B3Context(None, None, None, False),
        B3Context(None, None, None, True, True),
    ],
)
def test_b3_round_trips(ctx: B3Context) -> None:
    assert parse_b3(b3_multi_headers(ctx)) == ctx
    single = B3Context(
        ctx.trace_id,
        ctx.span_id,
        ctx.parent_span_id if ctx.sampled is not None else None,
        ctx.sampled,
        ctx.debug,
    )
    assert parse_b3({"b3": format_b3_single(single)}) == single


def test_b3_debug_does_not_also_send_sampled() -> None:
    assert b3_multi_headers(B3Context(T, S, None, True, True)) == {
        "x-b3-traceid": TID,
        "x-b3-spanid": SID,
        "x-b3-flags": "1",
    }
    with pytest.raises(ValueError):
        format_b3_single(B3Context(None, None))


@settings(max_examples=examples(200), deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            ["b3", "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags"]
        ),
        st.text(max_size=80),
    )
)
def test_b3_parser_never_raises(headers: dict[str, str]) -> None:
    ctx = parse_b3(headers)
    if ctx is not None and (ctx.trace_id is not None or ctx.sampled is not None):
        b3_multi_headers(ctx)
        format_b3_single(ctx)


RID = "a1b2c3d4-e5f6-4789-8abc-def012345678"


@pytest.mark.parametrize(
    ("rid", "reason"),
    [
        (RID, TraceReason.NOT_TRACEABLE),
        (RID[:14] + "9" + RID[15:], TraceReason.SAMPLED),
        (RID[:14] + "a" + RID[15:], TraceReason.FORCED),
        (RID[:14] + "b" + RID[15:], TraceReason.CLIENT_FORCED),
        (RID[:14] + "c" + RID[15:], TraceReason.NOT_TRACEABLE),  # anything else: no reason
        ("req-123", None),  # not a UUID: cannot carry a reason
        (RID + "0", None),
        ("", None),
    ],
)
def test_trace_reason(rid: str, reason: TraceReason | None) -> None:
    assert trace_reason(rid) is reason


def test_with_trace_reason() -> None:
    for reason in TraceReason:
        out = with_trace_reason(RID, reason)
        assert trace_reason(out) is reason and len(out) == 36 and out[:14] == RID[:14]
    assert with_trace_reason("nginx-0001", TraceReason.SAMPLED) == "nginx-0001"


def test_new_request_id_is_uuid4() -> None:
    rid = new_request_id()
    assert len(rid) == 36 and trace_reason(rid) is TraceReason.NOT_TRACEABLE


@pytest.mark.parametrize(
    ("rid", "percentage", "sampled"),
    [
        # 0x00000000 % 10000 = 0
        ("00000000-0000-4000-8000-000000000000", 0.01, True),
        ("00000000-0000-4000-8000-000000000000", 0.0, False),
        # 0x0000270f = 9999: sampled only at 100%
        ("0000270f-0000-4000-8000-000000000000", 99.99, False),
        ("0000270f-0000-4000-8000-000000000000", 100.0, True),
        # 0x00001388 = 5000
        ("00001388-0000-4000-8000-000000000000", 50.0, False),
        ("00001388-0000-4000-8000-000000000000", 50.01, True),
        ("00001388", 60.0, True),  # only the first 8 characters count
        ("ABCDEF00-x", 100.0, True),  # base 16 accepts upper case
        ("nginx-abcdef", 100.0, False),  # a non-hex head is never sampled
        ("1234", 100.0, False),
    ],
)
def test_random_sample(rid: str, percentage: float, sampled: bool) -> None:
    assert random_sample(rid, percentage) is sampled


def test_random_sample_rate_matches_percentage() -> None:
    hits = sum(random_sample(f"{i * 7919:08x}", 30.0) for i in range(10000))
    assert 2700 < hits < 3300


@settings(max_examples=examples(200), deadline=None)
@given(st.text(max_size=60), st.floats(min_value=-10, max_value=200))
def test_request_id_functions_never_raise(rid: str, percentage: float) -> None:
    random_sample(rid, percentage)
    reason = trace_reason(rid)
    assert (reason is None) == (len(rid) != 36)
    with_trace_reason(rid, TraceReason.SAMPLED)
