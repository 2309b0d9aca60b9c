"""B3 propagation (Zipkin), single `b3` header and `x-b3-*` multi headers, sans-IO.

Header names are lowercase (HTTP/2 and our header mappings). Parsers never raise.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True, slots=True)
class B3Context:
    """Ids are None for a sampling-only context (`b3: 0`, or `x-b3-sampled` without ids)."""

    trace_id: bytes | None  # 16 bytes; a 64-bit id is left-padded with zeros
    span_id: bytes | None  # 8 bytes
    parent_span_id: bytes | None = None
    sampled: bool | None = None  # None = defer the decision to the receiver
    debug: bool = False  # debug implies sampled


def _hex_id(text: str | None, lengths: tuple[int, ...]) -> bytes | None:
    if text is None or len(text) not in lengths or not all(c in _HEX for c in text):
        return None
    raw = bytes.fromhex(text)
    if not any(raw):  # an all-zero id is "no id"
        return None
    return raw


def _trace_id(text: str | None) -> bytes | None:
    raw = _hex_id(text, (16, 32))
    # Left-pad 64-bit trace ids to 128 bits, as W3C conversion requires.
    return None if raw is None else raw.rjust(16, b"\x00")


def _multi_sampled(value: str | None) -> bool | None:
    # B3 says 1/0; older tracers send true/false, which Zipkin and Envoy also accept.
    if value is None:
        return None
    return {"1": True, "0": False, "true": True, "false": False}.get(value.strip().lower())


def _parse_single(value: str) -> B3Context | None:
    fields = value.strip().split("-")
    if len(fields) == 1:  # sampling state only: `b3: 0`, `b3: 1`, `b3: d`
        return {
            "0": B3Context(None, None, sampled=False),
            "1": B3Context(None, None, sampled=True),
            "d": B3Context(None, None, sampled=True, debug=True),
        }.get(fields[0])
    if len(fields) > 4:
        return None
    trace_id, span_id = _trace_id(fields[0]), _hex_id(fields[1], (16,))
    if trace_id is None or span_id is None:
        return None
    sampled: bool | None = None
    debug = False
    if len(fields) >= 3:
        if fields[2] not in ("0", "1", "d"):
            return None
        sampled, debug = fields[2] != "0", fields[2] == "d"
    parent = None
    if len(fields) == 4:
        parent = _hex_id(fields[3], (16,))
        if parent is None:
            return None
    return B3Context(trace_id, span_id, parent, sampled, debug)


def _parse_multi(headers: Mapping[str, str]) -> B3Context | None:
    trace_id = _trace_id(headers.get("x-b3-traceid"))
    span_id = _hex_id(headers.get("x-b3-spanid"), (16,))
    debug = headers.get("x-b3-flags", "").strip() == "1"
    sampled = True if debug else _multi_sampled(headers.get("x-b3-sampled"))
    if trace_id is None or span_id is None:
        # Without a valid id pair the sampling decision still travels (B3 "sampling state only").
        return None if sampled is None else B3Context(None, None, sampled=sampled, debug=debug)
    # An invalid parent id only loses the parent link, not the trace.
    parent = _hex_id(headers.get("x-b3-parentspanid"), (16,))
    return B3Context(trace_id, span_id, parent, sampled, debug)


def parse_b3(headers: Mapping[str, str]) -> B3Context | None:
    """The B3 context in `headers`; the single `b3` header wins over the multi headers."""
    single = headers.get("b3")
    if single is not None:
        return _parse_single(single)
    return _parse_multi(headers)


def b3_multi_headers(ctx: B3Context) -> dict[str, str]:
    """The `x-b3-*` headers for `ctx` (what Envoy's Zipkin tracer writes)."""
    out: dict[str, str] = {}
    if ctx.trace_id is not None and ctx.span_id is not None:
        out["x-b3-traceid"] = ctx.trace_id.hex()
        out["x-b3-spanid"] = ctx.span_id.hex()
        if ctx.parent_span_id is not None:
            out["x-b3-parentspanid"] = ctx.parent_span_id.hex()
    if ctx.debug:
        out["x-b3-flags"] = "1"  # debug implies sampled: B3 says not to send x-b3-sampled too
    elif ctx.sampled is not None:
        out["x-b3-sampled"] = "1" if ctx.sampled else "0"
    return out


def format_b3_single(ctx: B3Context) -> str:
    """The `b3` single-header value for `ctx`."""
    sampling = "d" if ctx.debug else {True: "1", False: "0", None: ""}[ctx.sampled]
    if ctx.trace_id is None or ctx.span_id is None:
        if not sampling:
            raise ValueError("a B3 context without ids must carry a sampling decision")
        return sampling
    parts = [ctx.trace_id.hex(), ctx.span_id.hex()]
    if sampling:
        parts.append(sampling)
        if ctx.parent_span_id is not None:
            parts.append(ctx.parent_span_id.hex())
    return "-".join(parts)
