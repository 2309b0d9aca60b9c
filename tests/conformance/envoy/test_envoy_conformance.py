"""Envoy's request-id and W3C trace-context tables run against meshtrace.propagation. The tables
are data beside this file; how each was read from upstream: tests/conformance/envoy/README.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conformance_rows import Row, load

from meshtrace.propagation.context import decide, extract, inject
from meshtrace.propagation.request_id import (
    TraceReason,
    new_request_id,
    request_id_integer,
    trace_reason,
    with_trace_reason,
)
from meshtrace.propagation.w3c import format_tracestate, parse_tracestate

HERE = Path(__file__).resolve().parent
_, REQUEST_ID_ROWS = load(HERE / "request_id.yaml")
_, TRACEPARENT_ROWS = load(HERE / "traceparent.yaml")

# Envoy's Tracing::Reason names -> the reason packed in the request id
REASONS = {
    "NotTraceable": TraceReason.NOT_TRACEABLE,
    "Sampling": TraceReason.SAMPLED,
    "ServiceForced": TraceReason.FORCED,
    "ClientForced": TraceReason.CLIENT_FORCED,
}
# meshtrace's Decision.reason -> Envoy's name
DECISION_REASONS = {
    "random": "Sampling",
    "request_id_not_used": "Sampling",
    "forced": "ServiceForced",
    "client_forced": "ClientForced",
    "not_sampled": "NotTraceable",
    "invalid_request_id": "NotTraceable",
}


def _params(rows: list[Row]) -> list[Any]:
    return [pytest.param(row, id=row.id) for row in rows]


def _is_uuid4(rid: str) -> bool:
    return len(rid) == 36 and rid[14] == "4" and rid[19] in "89ab" and request_id_integer(rid) is not None


def _decide(spec: dict[str, Any]) -> dict[str, Any]:
    """Upstream's outcome vocabulary for one `decide` call: Envoy's reason and the request id."""
    headers = {k.lower(): v for k, v in spec["headers"].items()}
    d = decide(
        headers,
        100.0 if spec["random_sampling"] else 0.0,
        use_request_id=spec.get("use_request_id", True),
        edge=spec["edge"],
    )
    if d.reason == "request_id":  # the reason the id already carried
        reason = next(k for k, v in REASONS.items() if v is trace_reason(d.request_id))
    else:
        reason = DECISION_REASONS[d.reason]
    given = headers.get("x-request-id")
    if d.request_id == given:
        rid = "same"
    elif given is None or d.request_id[:14] + d.request_id[15:] != given[:14] + given[15:]:
        # a fresh UUIDv4 (its version nibble may carry the decision)
        assert _is_uuid4(with_trace_reason(d.request_id, TraceReason.NOT_TRACEABLE)), d.request_id
        rid = "regenerated"
    else:
        rid = d.request_id
    return {"reason": reason, "request_id": rid}


def _check_decide(spec: dict[str, Any], want: dict[str, Any]) -> None:
    got = _decide(spec)
    assert {k: got[k] for k in want} == want


@pytest.mark.parametrize("row", _params(REQUEST_ID_ROWS))
def test_request_id(row: Row) -> None:
    case = row.case
    if row.status == "out_of_scope":
        pytest.skip(f"out of scope: {case['reason']}")
    if row.status == "divergence":
        got = _decide(case["decide"])
        assert {k: got[k] for k in case["meshtrace"]} == case["meshtrace"]  # documented behaviour
        assert {k: got[k] for k in case["expect"]} != case["expect"]  # still differs from upstream
        return
    if "decide" in case:
        _check_decide(case["decide"], case["expect"])
    for step in case.get("steps", []):
        _check_decide(step["decide"], step["expect"])
    for item in case.get("integers", []):
        value = request_id_integer(item["id"]) if item["id"] is not None else None
        if "integer" in item:
            assert value == item["integer"], item
        else:
            assert value is not None and value % item["mod"] == item["remainder"], item
    for item in case.get("reasons", []):
        rid = new_request_id()
        if item["set"] is not None:
            rid = with_trace_reason(rid, REASONS[item["set"]])
        assert trace_reason(rid) is REASONS[item["get"]], item
    if "invalid" in case:
        inv = case["invalid"]
        assert with_trace_reason(inv["id"], REASONS[inv["set"]]) == inv["id_after"]
    if "distribution" in case:
        dist = case["distribution"]
        below = 0
        for _ in range(dist["samples"]):
            rid = new_request_id()
            assert rid[14] == "4" and rid[19] in "89ab", rid  # version 4, RFC 4122 variant
            below += (request_id_integer(rid) or 0) % dist["mod"] < dist["below"]
        assert below / dist["samples"] == pytest.approx(dist["below"] / dist["mod"], abs=dist["tolerance"])


def _context(headers: dict[str, str]) -> dict[str, Any] | None:
    ctx = extract(headers, ("w3c",))
    if ctx is None:
        return None
    assert ctx.trace_id is not None and ctx.span_id is not None
    return {
        "trace_id": ctx.trace_id.hex(),
        "parent_id": ctx.span_id.hex(),
        "sampled": ctx.sampled,
        "tracestate": format_tracestate(ctx.tracestate),
    }


def _check_context(headers: dict[str, str], want: Any) -> bool:
    got = _context(headers)
    if want is None or got is None:
        return got == want
    return {k: got[k] for k in want} == want


@pytest.mark.parametrize("row", _params(TRACEPARENT_ROWS))
def test_traceparent(row: Row) -> None:
    case = row.case
    if row.status == "out_of_scope":
        pytest.skip(f"out of scope: {case['reason']}")
    if row.status == "divergence":
        assert _check_context(case["headers"], case["meshtrace"]["context"])  # documented behaviour
        assert not _check_context(case["headers"], case["expect"]["context"])  # still differs
        return
    if "headers" in case:
        assert _check_context(case["headers"], case["expect"]["context"])
    if "inject" in case:
        spec = case["inject"]
        state = parse_tracestate(spec["tracestate"]) if spec["tracestate"] else None
        out = inject(
            bytes.fromhex(spec["trace_id"]),
            bytes.fromhex(spec["span_id"]),
            None,
            spec["sampled"],
            state,
            ("w3c",),
        )
        assert out == case["expect"]["headers"]
    if "fields" in case:
        ctx = bytes.fromhex("01" * 16), bytes.fromhex("02" * 8)
        written = inject(*ctx, None, True, [("k", "v")], ("w3c",))
        assert sorted(written) == sorted(case["fields"])
