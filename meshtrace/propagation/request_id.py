"""x-request-id with Envoy's trace-reason encoding (source/extensions/request_id/uuid), sans-IO.

Envoy packs its tracing decision into the UUID's version nibble (index 14), so every later hop
sees the first proxy's decision without a tracing header.
"""

from __future__ import annotations

import enum
import uuid

UUID_LENGTH = 36
REASON_INDEX = 14
_HEX = frozenset("0123456789abcdefABCDEF")


class TraceReason(enum.Enum):
    NOT_TRACEABLE = "4"  # the plain UUIDv4 version nibble: no decision to trace
    SAMPLED = "9"  # random sampling said yes
    FORCED = "a"  # x-envoy-force-trace
    CLIENT_FORCED = "b"  # x-client-trace-id


_BY_CHAR = {reason.value: reason for reason in TraceReason}


def new_request_id() -> str:
    """A fresh UUIDv4, as Envoy generates when the request has none."""
    return str(uuid.uuid4())


def trace_reason(rid: str) -> TraceReason | None:
    """The reason packed in `rid`; None when it is not a 36-character UUID (it cannot carry one).
    Envoy checks only the length, and any other character at index 14 means not traceable."""
    if len(rid) != UUID_LENGTH:
        return None
    return _BY_CHAR.get(rid[REASON_INDEX], TraceReason.NOT_TRACEABLE)


def with_trace_reason(rid: str, reason: TraceReason) -> str:
    """`rid` carrying `reason`; unchanged when it is not a UUID (Envoy leaves foreign ids alone)."""
    if len(rid) != UUID_LENGTH:
        return rid
    return rid[:REASON_INDEX] + reason.value + rid[REASON_INDEX + 1 :]


def request_id_integer(rid: str) -> int | None:
    """The request id's integer for sampling: its first 8 characters read as base 16.
    None when they are not hex (e.g. ids minted by nginx or an API gateway)."""
    head = rid[:8]
    if len(head) != 8 or not all(c in _HEX for c in head):
        return None
    return int(head, 16)


def percentage_threshold(percentage: float) -> int:
    """Envoy keeps the percentage as a fraction of 10000, rounded half up (0.01 % steps)."""
    clamped = min(max(percentage, 0.0), 100.0)
    return int(clamped * 100 + 0.5)


def sampled_by_value(value: int, percentage: float) -> bool:
    return value % 10000 < percentage_threshold(percentage)


def random_sample(rid: str, percentage: float) -> bool:
    """Envoy's random sampling: request id integer mod 10000 below percentage * 100.
    A request id with a non-hex head is never sampled."""
    value = request_id_integer(rid)
    return value is not None and sampled_by_value(value, percentage)
