"""The probabilistic sampler's decisions as pure functions (sans-IO), as the Collector's
probabilisticsamplerprocessor and its `pkg/sampling` make them.

Every mode is a consistent-probability decision (W3C trace context level 2): a span is kept when
its 56-bit randomness R >= the rejection threshold T (T = 0 keeps all, T = 2^56 keeps none).
- randomness: `rv` in the `ot` tracestate member, else the trace id's last 7 bytes; `hash_seed`
  derives it from FNV-1a 32 over the seed (4 bytes, little-endian) and the 16 trace-id bytes, so
  its decisions are the legacy ones (`hash & 0x3FFF < uint32(float32(pct) * 163.84)`).
- threshold: `proportional` multiplies the probability already applied upstream (an arriving
  `th`) by its own; `equalizing` raises a lower arriving threshold to its own; `hash_seed` uses
  its 14-bit threshold.
- a kept span carries `ot=rv:...;th:...` (rv as it came, th lowercase; `hash_seed` writes its rv).
A span whose sampling data cannot be used (bad tracestate, no randomness, an arriving `th` its
randomness does not pass) is decided by `fail_closed`: dropped, or kept at threshold 0.
"""

from __future__ import annotations

import enum
import math
import re
import struct
from dataclasses import dataclass, field

MAX_ADJUSTED_COUNT = 1 << 56  # 2^56: thresholds and randomness are 56-bit numbers
NUM_HEX_DIGITS = 14
MIN_PROBABILITY = 2.0**-56
ALWAYS_SAMPLE = 0
NEVER_SAMPLE = MAX_ADJUSTED_COUNT
# The randomness used when there is none: every threshold but NEVER_SAMPLE passes it.
ALL_PROBABILITIES = MAX_ADJUSTED_COUNT - 1
NUM_HASH_BUCKETS = 0x4000
_FNV32_OFFSET = 0x811C9DC5
_FNV32_PRIME = 0x01000193
_HEX = re.compile(r"[0-9a-fA-F]+")
_OT_KEY = re.compile(r"[a-z][a-z0-9]*")
_OT_VALUE = re.compile(r"[a-zA-Z0-9._\-]*")
_OT_MAX_LENGTH = 256


class Priority(enum.Enum):
    """OpenTracing's `sampling.priority`: 0 drops, > 0 keeps, anything else defers."""

    DEFER = "defer"
    MUST_SAMPLE = "must_sample"
    DO_NOT_SAMPLE = "do_not_sample"


def fnv1a_32(data: bytes, h: int = _FNV32_OFFSET) -> int:
    for byte in data:
        h = ((h ^ byte) * _FNV32_PRIME) & 0xFFFFFFFF
    return h


def float32(x: float) -> float:
    """x rounded to float32, as the Collector's `sampling_percentage` field is declared."""
    return float(struct.unpack("f", struct.pack("f", x))[0])


def hash_seed_scaled_rate(percentage: float) -> int:
    """uint32(float32(pct) * float32(16384/100)) with float32 arithmetic, as the Collector."""
    # The product of two float32 values is exact in float64, so rounding it once to float32 gives
    # the float32 product.
    product = float32(float32(percentage) * float32(NUM_HASH_BUCKETS / 100))
    return max(0, min(int(product), 0xFFFFFFFF))


def hash_randomness(trace_id: bytes, seed: int) -> int:
    """56 bits whose top 14 are 0x3FFF - the legacy hash bucket, so R >= T decides as the legacy
    `bucket < rate` did; the middle 28 mix the hash's 18 unused bits, the low 14 are the bucket."""
    hashed32 = fnv1a_32(trace_id, fnv1a_32(struct.pack("<I", seed & 0xFFFFFFFF)))
    bucket = hashed32 & (NUM_HASH_BUCKETS - 1)
    unused18 = hashed32 >> 14
    mixed28 = unused18 ^ (unused18 << 10)
    return ((NUM_HASH_BUCKETS - 1 - bucket) << 42) | (mixed28 << 14) | bucket


def _round_half_away(x: float) -> int:
    """Go's math.Round for x >= 0 (Python's round() rounds half to even)."""
    whole = math.floor(x)
    return int(whole) + (1 if x - whole >= 0.5 else 0)


def probability_to_threshold(probability: float, precision: int = 4) -> int:
    """The 56-bit rejection threshold for a sampling probability, rounded to `precision` hex digits
    (0: all 14). NEVER_SAMPLE below 2^-56, the smallest expressible probability.

    More digits are kept when p or 1 - p is close to 0 (each leading 0/f hex digit adds one), so
    the relative error stays small at the extremes.
    """
    if not MIN_PROBABILITY <= probability <= 1:
        return NEVER_SAMPLE
    if probability == 1:
        return ALWAYS_SAMPLE
    precision = precision or NUM_HEX_DIGITS
    _, exp_f = math.frexp(probability)
    _, exp_r = math.frexp(1 - probability)
    precision = min(NUM_HEX_DIGITS, max(precision + (-exp_f) // 4, precision + (-exp_r) // 4))
    threshold = MAX_ADJUSTED_COUNT - _round_half_away(probability * MAX_ADJUSTED_COUNT)
    shift = 4 * (NUM_HEX_DIGITS - precision)
    if shift:
        threshold = ((threshold + (1 << (shift - 1))) >> shift) << shift
    return threshold


def threshold_probability(threshold: int) -> float:
    return (MAX_ADJUSTED_COUNT - threshold) / MAX_ADJUSTED_COUNT


def threshold_hex(threshold: int) -> str:
    """The `th` value: 14 lowercase hex digits, trailing zeros trimmed; `0` keeps all, "" none."""
    if threshold == ALWAYS_SAMPLE:
        return "0"
    if threshold >= NEVER_SAMPLE:
        return ""
    return f"{threshold:014x}".rstrip("0")


def parse_threshold(text: str) -> int:
    """A `th` value: 1-14 hex digits of either case, trailing zeros implied."""
    if not 1 <= len(text) <= NUM_HEX_DIGITS or not _HEX.fullmatch(text):
        raise ValueError(
            f"invalid th value {text!r}: "
            + ("t-value exceeds 14 hex digits" if len(text) > NUM_HEX_DIGITS else "invalid syntax")
        )
    return int(text, 16) << (4 * (NUM_HEX_DIGITS - len(text)))


def parse_randomness(text: str) -> int:
    """An `rv` value: exactly 14 hex digits of either case."""
    if len(text) != NUM_HEX_DIGITS or not _HEX.fullmatch(text):
        raise ValueError(
            f"invalid rv value {text!r}: "
            + ("invalid syntax" if len(text) == NUM_HEX_DIGITS else "r-value must have 14 hex digits")
        )
    return int(text, 16)


def trace_id_randomness(trace_id: bytes) -> int:
    """The trace id's last 56 bits (the W3C level-2 random part)."""
    return int.from_bytes(trace_id[9:16], "big")


@dataclass
class TraceState:
    """A W3C tracestate with its OpenTelemetry `ot` member parsed (`ot=rv:...;th:...;k:v`)."""

    rv: str | None = None  # kept as it came (either case)
    th: str | None = None
    extra: list[str] = field(default_factory=list)  # other `k:v` fields of `ot`, in order
    others: list[str] = field(default_factory=list)  # the other members, in order

    @classmethod
    def parse(cls, text: str) -> TraceState:
        """ValueError when the `ot` member breaks its grammar or carries a bad rv/th."""
        state = cls()
        for member in (m.strip() for m in text.split(",")):
            if not member:
                continue
            key, _, value = member.partition("=")
            if key != "ot":
                state.others.append(member)
                continue
            if len(value) > _OT_MAX_LENGTH:
                raise ValueError("ot tracestate member is longer than 256 characters")
            for part in value.split(";"):
                name, sep, field_value = part.partition(":")
                if not sep or not _OT_KEY.fullmatch(name) or not _OT_VALUE.fullmatch(field_value):
                    raise ValueError(f"invalid ot tracestate field {part!r}")
                if name == "rv":
                    parse_randomness(field_value)
                    state.rv = field_value
                elif name == "th":
                    parse_threshold(field_value)
                    state.th = field_value
                else:
                    state.extra.append(part)
        return state

    @property
    def threshold(self) -> int | None:
        return None if self.th is None else parse_threshold(self.th)

    def serialize(self) -> str:
        """`ot` first (rv, th, then its other fields), as the Collector writes it."""
        fields = [f"rv:{self.rv}"] if self.rv is not None else []
        fields += [f"th:{self.th}"] if self.th else []
        fields += self.extra
        members = ["ot=" + ";".join(fields)] if fields else []
        return ",".join(members + self.others)


@dataclass(frozen=True)
class Sampler:
    """One configuration's decision. `mode` is "never" (0 %, or a hash rate rounding to 0),
    "hash_seed", "proportional" or "equalizing"; `threshold` is the fixed one of hash_seed and
    equalizing, `ratio` the probability proportional multiplies by."""

    mode: str
    ratio: float = 0.0
    precision: int = 4
    threshold: int = NEVER_SAMPLE
    hash_seed: int = 0

    @classmethod
    def build(cls, mode: str, percentage: float, precision: int, hash_seed: int) -> Sampler:
        pct = min(float32(percentage), 100.0)
        if pct <= 0:
            return cls("never")
        ratio = max(pct / 100, MIN_PROBABILITY)
        if mode == "hash_seed":
            rate = hash_seed_scaled_rate(pct)
            if rate == 0:
                return cls("never")
            return cls(mode, threshold=(NUM_HASH_BUCKETS - rate) << 42, hash_seed=hash_seed)
        if mode == "equalizing":
            return cls(mode, threshold=probability_to_threshold(ratio, precision))
        return cls(mode, ratio=ratio, precision=precision)

    def _randomness(self, trace_id: bytes, state: TraceState | None) -> int | None:
        if self.mode == "never":
            return ALL_PROBABILITIES  # never used to keep, so never missing
        if not any(trace_id):
            trace_randomness = None  # an all-zero trace id is invalid: no randomness
        elif self.mode == "hash_seed":
            trace_randomness = hash_randomness(trace_id, self.hash_seed)
        else:
            trace_randomness = trace_id_randomness(trace_id)
        if self.mode != "hash_seed" and state is not None and state.rv is not None:
            return parse_randomness(state.rv)
        return trace_randomness

    def _threshold(self, state: TraceState) -> int:
        arriving = state.threshold
        if self.mode == "proportional":
            incoming = 1.0 if arriving is None else threshold_probability(arriving)
            return probability_to_threshold(incoming * self.ratio, self.precision)
        if self.mode == "equalizing" and arriving is not None and self.threshold < arriving:
            return arriving
        return self.threshold

    def decide(
        self, trace_id: bytes, tracestate: str, priority: Priority, fail_closed: bool
    ) -> tuple[bool, str, str | None]:
        """(keep, the tracestate to send, why the sampling data was unusable or None)."""
        problem: str | None = None
        state: TraceState | None
        try:
            state = TraceState.parse(tracestate)
        except ValueError as exc:
            state, problem = None, str(exc)
        randomness = self._randomness(trace_id, state)
        if self.mode == "hash_seed" and state is not None:
            if state.rv is not None or state.th is not None:
                # The legacy hash must not mix with consistent sampling data already present.
                problem = "tracestate has sampling data, equalizing or proportional mode recommended"
                state = None
            elif randomness is not None:
                state.rv = f"{randomness:014x}"
        if problem is None and randomness is None:
            problem = "missing randomness"
        if problem is None and state is not None:
            arriving = state.threshold
            if arriving is not None and arriving > randomness:  # type: ignore[operator]
                state.th = None  # cleared, as the spec asks, in case we fail open
                problem = "inconsistent arriving threshold: span should not have been sampled"
        if problem is not None:
            threshold = NEVER_SAMPLE if fail_closed else ALWAYS_SAMPLE
        else:
            threshold = self._threshold(state) if state is not None else self.threshold
        if priority is Priority.DO_NOT_SAMPLE:
            threshold = NEVER_SAMPLE
        elif priority is Priority.MUST_SAMPLE:
            threshold = ALWAYS_SAMPLE
        keep = threshold <= (ALL_PROBABILITIES if randomness is None else randomness)
        if not keep or state is None:
            return keep, tracestate, problem
        arriving = state.threshold
        if arriving is None or arriving <= threshold:  # a threshold may rise, never fall
            state.th = threshold_hex(threshold)
        return True, state.serialize(), problem
