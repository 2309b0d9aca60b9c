"""The probabilistic sampler's decisions as pure functions (sans-IO).

Two families, as the Collector's probabilisticsamplerprocessor:
- `hash_seed`: FNV-1a 32-bit over the seed (4 bytes, little-endian) and the 16 trace-id bytes;
  the low 14 bits are compared with the percentage scaled to 16384 buckets in float32.
- `proportional` / `equalizing` (OpenTelemetry consistent probability sampling, W3C level 2):
  the randomness R is 56 bits (an `rv` in the `ot` tracestate member, else the trace id's last 7
  bytes); the rejection threshold T = (1 - p) * 2^56, rounded to `precision` hex digits; a span
  is kept when R >= T and then carries `ot=th:<T>` in its tracestate.
"""

from __future__ import annotations

import math
import struct

MAX_ADJUSTED_COUNT = 1 << 56  # 2^56: thresholds and randomness are 56-bit numbers
NUM_HEX_DIGITS = 14
NUM_HASH_BUCKETS = 0x4000
_FNV32_OFFSET = 0x811C9DC5
_FNV32_PRIME = 0x01000193


def fnv1a_32(data: bytes, h: int = _FNV32_OFFSET) -> int:
    for byte in data:
        h = ((h ^ byte) * _FNV32_PRIME) & 0xFFFFFFFF
    return h


def _float32(x: float) -> float:
    return float(struct.unpack("f", struct.pack("f", x))[0])


def hash_seed_scaled_rate(percentage: float) -> int:
    """uint32(float32(pct) * float32(16384/100)) with float32 arithmetic, as the Collector."""
    # The product of two float32 values is exact in float64, so rounding it once to float32 gives
    # the float32 product.
    product = _float32(_float32(percentage) * _float32(NUM_HASH_BUCKETS / 100))
    return max(0, min(int(product), 0xFFFFFFFF))


def hash_seed_keep(trace_id: bytes, seed: int, scaled_rate: int) -> bool:
    hashed = fnv1a_32(trace_id, fnv1a_32(struct.pack("<I", seed & 0xFFFFFFFF))) & (NUM_HASH_BUCKETS - 1)
    return hashed < scaled_rate


def probability_to_threshold(probability: float, precision: int = 4) -> int:
    """The 56-bit rejection threshold for a sampling probability, rounded to `precision` hex digits.

    More digits are kept when p or 1 - p is close to 0 (each leading 0/f hex digit adds one), so
    the relative error stays small at the extremes.
    """
    if not 0 <= probability <= 1:
        raise ValueError(f"sampling probability {probability} is outside [0, 1]")
    if probability == 0:
        return MAX_ADJUSTED_COUNT
    if probability == 1:
        return 0
    _, exp_f = math.frexp(probability)
    _, exp_r = math.frexp(1 - probability)
    precision = min(NUM_HEX_DIGITS, max(precision + (-exp_f) // 4, precision + (-exp_r) // 4))
    threshold = MAX_ADJUSTED_COUNT - round(probability * MAX_ADJUSTED_COUNT)
    shift = 4 * (NUM_HEX_DIGITS - precision)
    if shift:
        threshold = ((threshold + (1 << (shift - 1))) >> shift) << shift
    return threshold


def threshold_probability(threshold: int) -> float:
    return (MAX_ADJUSTED_COUNT - threshold) / MAX_ADJUSTED_COUNT


def threshold_hex(threshold: int) -> str:
    """The `th` tracestate value: 14 hex digits, trailing zeros trimmed (`0` = always sample)."""
    return f"{threshold:014x}".rstrip("0") or "0"


def parse_threshold(text: str) -> int:
    if not 1 <= len(text) <= NUM_HEX_DIGITS or any(c not in "0123456789abcdef" for c in text):
        raise ValueError(f"invalid th value {text!r}")
    return int(text.ljust(NUM_HEX_DIGITS, "0"), 16)


def trace_id_randomness(trace_id: bytes) -> int:
    """The trace id's last 56 bits (the W3C level-2 random part)."""
    return int.from_bytes(trace_id[9:16], "big")


# --- tracestate: the `ot` member, `ot=th:...;rv:...` ---


def split_tracestate(tracestate: str) -> tuple[dict[str, str], list[str]]:
    """(the `ot` member's fields, the other members in order). ValueError if `ot` is malformed."""
    fields: dict[str, str] = {}
    others: list[str] = []
    for member in (m.strip() for m in tracestate.split(",")):
        if not member:
            continue
        key, sep, value = member.partition("=")
        if key != "ot":
            others.append(member)
            continue
        for part in value.split(";"):
            name, sep, field_value = part.partition(":")
            if not sep or not name:
                raise ValueError(f"invalid ot tracestate field {part!r}")
            fields[name] = field_value
    return fields, others


def join_tracestate(ot: dict[str, str], others: list[str]) -> str:
    """The modified `ot` member goes first, as W3C asks of a member a vendor updates."""
    member = "ot=" + ";".join(f"{k}:{v}" for k, v in ot.items()) if ot else ""
    return ",".join([member, *others] if member else others)


def randomness_of(trace_id: bytes, ot: dict[str, str]) -> int:
    rv = ot.get("rv")
    if rv is None:
        return trace_id_randomness(trace_id)
    if len(rv) != NUM_HEX_DIGITS or any(c not in "0123456789abcdef" for c in rv):
        raise ValueError(f"invalid rv value {rv!r}")
    return int(rv, 16)


def consistent_decision(
    trace_id: bytes, tracestate: str, threshold: int, mode: str, precision: int
) -> tuple[bool, str]:
    """(keep, the new tracestate) for the proportional and equalizing modes.

    proportional multiplies the probability already applied upstream (an incoming `th`) by the
    configured one; equalizing raises the threshold to the configured one if it is lower.
    ValueError when the tracestate's `ot` member cannot be used (the caller applies fail_closed).
    """
    ot, others = split_tracestate(tracestate)
    randomness = randomness_of(trace_id, ot)
    incoming = parse_threshold(ot["th"]) if "th" in ot else None
    if incoming is not None and randomness < incoming:
        raise ValueError("span arrived with a th its randomness does not pass (inconsistent)")
    if incoming is not None:
        if mode == "proportional":
            combined = threshold_probability(incoming) * threshold_probability(threshold)
            threshold = probability_to_threshold(combined, precision)
        else:
            threshold = max(threshold, incoming)
    if randomness < threshold:
        return False, tracestate
    ot.pop("th", None)
    return True, join_tracestate({"th": threshold_hex(threshold), **ot}, others)
