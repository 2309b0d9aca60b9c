"""W3C traceparent / tracestate / baggage rules (docs/upstream-behaviour.md §2b), one table row per rule."""

from __future__ import annotations

import pytest
from fuzzing import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from meshtrace.propagation.w3c import (
    TraceParent,
    baggage_ok,
    format_traceparent,
    format_tracestate,
    parse_traceparent,
    parse_tracestate,
)

TID = "4bf92f3577b34da6a3ce929d0e0e4736"
PID = "00f067aa0ba902b7"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (f"00-{TID}-{PID}-01", TraceParent(bytes.fromhex(TID), bytes.fromhex(PID), 1)),
        (f"00-{TID}-{PID}-00", TraceParent(bytes.fromhex(TID), bytes.fromhex(PID), 0)),
        (f"  00-{TID}-{PID}-01\t", TraceParent(bytes.fromhex(TID), bytes.fromhex(PID), 1)),  # OWS
        # a higher version is parsed by its first four fields, extra fields allowed
        (f"01-{TID}-{PID}-03-what-the-future", TraceParent(bytes.fromhex(TID), bytes.fromhex(PID), 3, 1)),
        (f"cc-{TID}-{PID}-01", TraceParent(bytes.fromhex(TID), bytes.fromhex(PID), 1, 0xCC)),
        (f"ff-{TID}-{PID}-01", None),  # version ff is forever invalid
        (f"00-{'0' * 32}-{PID}-01", None),  # all-zero trace id
        (f"00-{TID}-{'0' * 16}-01", None),  # all-zero parent id
        (f"00-{TID.upper()}-{PID}-01", None),  # uppercase hex
        (f"00-{TID}-{PID.upper()}-01", None),
        (f"0A-{TID}-{PID}-01", None),  # uppercase version
        (f"00-{TID}-{PID}-0A", None),  # uppercase flags
        (f"00-{TID}-{PID}-01-extra", None),  # extra fields for version 00
        (f"00-{TID}-{PID}-01-", None),
        (f"01-{TID}-{PID}-01x", None),  # higher version: after the flags must come "-"
        (f"00-{TID[:-1]}-{PID}-01", None),  # short trace id
        (f"00-{TID}0-{PID}-01", None),  # long trace id
        (f"00-{TID}-{PID[:-1]}-01", None),
        (f"00-{TID}-{PID}-1", None),
        (f"00_{TID}_{PID}_01", None),
        (f"00-{TID[:-1]}g-{PID}-01", None),  # not hex
        ("", None),
        ("garbage", None),
    ],
)
def test_parse_traceparent(header: str, expected: TraceParent | None) -> None:
    assert parse_traceparent(header) == expected


def test_sampled_is_flag_bit_zero() -> None:
    for flags, sampled in [("01", True), ("00", False), ("03", True), ("02", False), ("ff", True)]:
        parsed = parse_traceparent(f"00-{TID}-{PID}-{flags}")
        assert parsed is not None and parsed.sampled is sampled


def test_format_traceparent_round_trip() -> None:
    tid, sid = bytes.fromhex(TID), bytes.fromhex(PID)
    for sampled in (True, False):
        text = format_traceparent(tid, sid, sampled)
        assert parse_traceparent(text) == TraceParent(tid, sid, int(sampled))
    with pytest.raises(ValueError):
        format_traceparent(tid[:8], sid, True)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("congo=t61rcWkgMzE", [("congo", "t61rcWkgMzE")]),
        ("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE", [("rojo", "00f067aa0ba902b7"), ("congo", "t61rcWkgMzE")]),
        (" rojo=1 , ,congo=2 ", [("rojo", "1"), ("congo", "2")]),  # OWS and empty members
        ("tenant1@vendor=x", [("tenant1@vendor", "x")]),  # multi-tenant key
        ("1tenant@vendor=x", [("1tenant@vendor", "x")]),  # tenant may start with a digit
        ("a_-*/=v a", [("a_-*/", "v a")]),  # key characters; value may contain spaces
        ("", []),
        ("Rojo=1", None),  # keys are lowercase
        ("foo.bar=1", None),  # '.' is no key character
        ("@foo=1,bar=2", None),  # a key starts with a letter or digit
        # Level 2 key grammar (the W3C suite's cases): '@' anywhere after the first character,
        # 256 characters in all, no per-part limits
        ("1rojo=1", [("1rojo", "1")]),
        ("foo@=1,bar=2", [("foo@", "1"), ("bar", "2")]),
        ("foo@bar@baz=1", [("foo@bar@baz", "1")]),
        ("t@1vendor=x", [("t@1vendor", "x")]),
        ("t@" + "v" * 15 + "=x", [("t@" + "v" * 15, "x")]),
        ("t" * 242 + "@v=x", [("t" * 242 + "@v", "x")]),
        ("z" * 256 + "=x", [("z" * 256, "x")]),
        ("z" * 257 + "=x", None),
        ("rojo", None),  # no '='
        ("rojo=", None),  # empty value
        ("rojo=a=b", None),  # '=' not allowed in values
        ("rojo=trailing ", [("rojo", "trailing")]),  # OWS around a member is trimmed
        # a repeated key keeps its first (most recent) entry; the rest of the header is kept
        ("rojo=1,rojo=2,congo=3", [("rojo", "1"), ("congo", "3")]),
        ("rojo=1,rojo=1", [("rojo", "1")]),
        ("rojo=\x7f", None),
        (",".join(f"k{i}=v" for i in range(32)), [(f"k{i}", "v") for i in range(32)]),
        (",".join(f"k{i}=v" for i in range(33)), None),  # at most 32 members
        (",".join(["k=v"] * 33), None),  # repeats count as members
    ],
)
def test_parse_tracestate(header: str, expected: list[tuple[str, str]] | None) -> None:
    assert parse_tracestate(header) == expected


def test_tracestate_round_trip() -> None:
    members = [("rojo", "00f067aa0ba902b7"), ("t@congo", "a b")]
    assert parse_tracestate(format_tracestate(members)) == members


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        ("userId=alice,serverNode=DF%2028,isProduction=false", True),
        ("key1=value1;property1;property2, key2 = value2", True),
        ("", True),
        ("noequals", False),
        ("bad key=v", False),
        (",".join(f"k{i}=v" for i in range(180)), True),
        (",".join(f"k{i}=v" for i in range(181)), False),  # at most 180 members
        ("k=" + "v" * 8190, True),  # 8192 bytes exactly
        ("k=" + "v" * 8191, False),
    ],
)
def test_baggage_limits(header: str, ok: bool) -> None:
    assert baggage_ok(header) is ok


@settings(max_examples=examples(200), deadline=None)
@given(st.text(max_size=120))
def test_w3c_parsers_never_raise(value: str) -> None:
    parse_traceparent(value)
    parse_tracestate(value)
    baggage_ok(value)


@settings(max_examples=examples(200), deadline=None)
@given(st.binary(min_size=16, max_size=16), st.binary(min_size=8, max_size=8), st.booleans())
def test_traceparent_round_trip_fuzz(tid: bytes, sid: bytes, sampled: bool) -> None:
    parsed = parse_traceparent(format_traceparent(tid, sid, sampled))
    if any(tid) and any(sid):
        assert parsed == TraceParent(tid, sid, int(sampled))
    else:
        assert parsed is None
