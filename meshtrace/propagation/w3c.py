"""W3C Trace Context (traceparent, tracestate) and W3C Baggage limits, sans-IO.

Rules follow the W3C Trace Context spec (docs/upstream-behaviour.md §2b), with the tracestate key grammar and
duplicate handling of its Level 2 draft, which the W3C validation suite checks. Parsers never
raise: anything invalid is None, which callers treat as "header absent" (the spec's instruction).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_HEX = frozenset("0123456789abcdef")
# Optional whitespace around a header value or list member is legal HTTP (RFC 9110 OWS).
_OWS = " \t"

TRACEPARENT_V00_LENGTH = 55  # "00-" + 32 + "-" + 16 + "-" + 2
MAX_TRACESTATE_MEMBERS = 32
MAX_BAGGAGE_MEMBERS = 180
MAX_BAGGAGE_BYTES = 8192

# tracestate keys (W3C Trace Context Level 2, "Key"): a lowercase letter or digit, then up to 255
# of lowercase letters, digits, `_ - * / @`. Level 2 (and the W3C validation suite) dropped Level
# 1's `tenant@system` split with per-part limits (241 and 14); every Level 1 key still matches.
_TRACESTATE_KEY = re.compile(r"[a-z0-9][a-z0-9_\-*/@]{0,255}")
# values: printable ASCII except ',' and '=', may contain spaces but not end with one.
_TRACESTATE_VALUE = re.compile(r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]")
# baggage keys are RFC 7230 tokens.
_BAGGAGE_KEY = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


@dataclass(frozen=True, slots=True)
class TraceParent:
    trace_id: bytes  # 16 bytes
    parent_id: bytes  # 8 bytes
    flags: int
    version: int = 0

    @property
    def sampled(self) -> bool:
        """Flag bit 0 is the caller's sampling decision."""
        return bool(self.flags & 0x01)


def _is_hex(text: str) -> bool:
    # Lowercase only: the spec forbids uppercase hex, and real proxies reject it.
    return bool(text) and all(c in _HEX for c in text)


def parse_traceparent(value: str) -> TraceParent | None:
    """The parsed header, or None when it is invalid (then it is ignored as if absent)."""
    text = value.strip(_OWS)
    if len(text) < TRACEPARENT_V00_LENGTH:
        return None
    version_text = text[:2]
    if not _is_hex(version_text) or version_text == "ff":  # ff is reserved as forever invalid
        return None
    version = int(version_text, 16)
    if version == 0 and len(text) != TRACEPARENT_V00_LENGTH:
        return None  # version 00 has exactly four fields
    # A higher version is read by its first four fields; anything after must start with "-".
    if len(text) > TRACEPARENT_V00_LENGTH and text[TRACEPARENT_V00_LENGTH] != "-":
        return None
    if text[2] != "-" or text[35] != "-" or text[52] != "-":
        return None
    trace_hex, parent_hex, flags_hex = text[3:35], text[36:52], text[53:55]
    if not (_is_hex(trace_hex) and _is_hex(parent_hex) and _is_hex(flags_hex)):
        return None
    trace_id, parent_id = bytes.fromhex(trace_hex), bytes.fromhex(parent_hex)
    if not any(trace_id) or not any(parent_id):  # all-zero ids mean "no trace"
        return None
    return TraceParent(trace_id, parent_id, int(flags_hex, 16), version)


def format_traceparent(trace_id: bytes, span_id: bytes, sampled: bool) -> str:
    """Version 00 header; we only ever write the version we fully understand."""
    if len(trace_id) != 16 or len(span_id) != 8:
        raise ValueError("trace_id must be 16 bytes and span_id 8 bytes")
    return f"00-{trace_id.hex()}-{span_id.hex()}-{'01' if sampled else '00'}"


def tracestate_member_ok(key: str, value: str) -> bool:
    """True when `key=value` is a valid tracestate list member."""
    return bool(_TRACESTATE_KEY.fullmatch(key) and _TRACESTATE_VALUE.fullmatch(value))


def parse_tracestate(value: str) -> list[tuple[str, str]] | None:
    """Members in header order, or None when the header is invalid (drop it, keep traceparent).

    Invalid: a member that is not `key=value` by the grammar, or more than 32 members. A repeated
    key keeps its first (leftmost, most recent) entry: the spec lets a proxy that rewrites
    traceparent discard duplicates it did not write, and forbids only adding one."""
    members: dict[str, str] = {}
    count = 0
    for raw in value.split(","):
        member = raw.strip(_OWS)
        if not member:
            continue  # empty list members are allowed and ignored
        key, sep, val = member.partition("=")
        if not sep or not tracestate_member_ok(key, val):
            return None
        count += 1
        if count > MAX_TRACESTATE_MEMBERS:
            return None
        members.setdefault(key, val)
    return list(members.items())


def format_tracestate(members: list[tuple[str, str]]) -> str:
    """The header value for `members` (already valid: they came from parse_tracestate)."""
    return ",".join(f"{key}={val}" for key, val in members[:MAX_TRACESTATE_MEMBERS])


def baggage_ok(value: str) -> bool:
    """True when a baggage header is within the W3C limits and well formed, so it may be forwarded
    unchanged; proxies forward baggage as is and never rewrite it."""
    if len(value.encode("utf-8", "surrogatepass")) > MAX_BAGGAGE_BYTES:
        return False
    members = [m for m in (raw.strip(_OWS) for raw in value.split(",")) if m]
    if len(members) > MAX_BAGGAGE_MEMBERS:
        return False
    for member in members:
        key, sep, _ = member.split(";", 1)[0].partition("=")
        if not sep or not _BAGGAGE_KEY.fullmatch(key.strip(_OWS)):
            return False
    return True
