"""tail_sampling policies: each a pure evaluator of one whole trace, built from the Collector's
policy config (`{name, type, <type>: {...}}`). Rate-based policies read an injected clock.

A policy answers SAMPLED, NOT_SAMPLED or DROPPED (a `drop` policy whose sub-policies all
matched). `invert_match` negates the match and answers plainly, as the Collector has since
v0.144 (its `disableinvertdecisions` gate, stable in v0.152, removed by v0.156): it no longer
vetoes the other policies; a `drop` policy does that. INVERT_SAMPLED / INVERT_NOT_SAMPLED remain
only because `combine` ranks them as the Collector's decision flow still does.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span, Status

from meshtrace.collector.schema import decode
from meshtrace.model.attributes import as_python

Clock = Callable[[], float]


class Decision(enum.Enum):
    SAMPLED = "sampled"
    NOT_SAMPLED = "not_sampled"
    INVERT_SAMPLED = "invert_sampled"
    INVERT_NOT_SAMPLED = "invert_not_sampled"
    DROPPED = "dropped"

    @property
    def keeps(self) -> bool:
        """Whether a sub-policy of `and`/`composite` counts as matched."""
        return self in (Decision.SAMPLED, Decision.INVERT_SAMPLED)


@dataclass
class TraceData:
    """One trace held by the processor: its spans as ResourceSpans fragments, as they came."""

    trace_id: bytes
    arrived: float
    fragments: list[ResourceSpans] = field(default_factory=list)
    span_count: int = 0

    def spans(self) -> Iterator[tuple[ResourceSpans, Span]]:
        for rs in self.fragments:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    yield rs, span


class Policy:
    name: str = ""

    def __init__(self, config: Any, clock: Clock) -> None:
        self.config = config

    def evaluate(self, trace: TraceData) -> Decision:
        raise NotImplementedError


def combine(decisions: list[Decision]) -> bool:
    """The Collector's flow, in order: any DROPPED or INVERT_NOT_SAMPLED drops the trace; any
    SAMPLED keeps it; an INVERT_SAMPLED keeps it only when no policy answered NOT_SAMPLED."""
    if Decision.DROPPED in decisions or Decision.INVERT_NOT_SAMPLED in decisions:
        return False
    if Decision.SAMPLED in decisions:
        return True
    return Decision.INVERT_SAMPLED in decisions and Decision.NOT_SAMPLED not in decisions


def decide(policies: list[Policy], trace: TraceData, sample_on_first_match: bool = False) -> bool:
    """Evaluate `policies` (drop policies first, see `ordered`) and combine their answers. A
    DROPPED answer ends the evaluation; so does SAMPLED with `sample_on_first_match`."""
    decisions: list[Decision] = []
    for policy in policies:
        decision = policy.evaluate(trace)
        decisions.append(decision)
        if decision is Decision.DROPPED or (sample_on_first_match and decision is Decision.SAMPLED):
            break
    return combine(decisions)


def ordered(policies: list[Policy]) -> list[Policy]:
    """The Collector evaluates `drop` policies before the others (a drop wins over any keep)."""
    return [p for p in policies if isinstance(p, Drop)] + [p for p in policies if not isinstance(p, Drop)]


def _sampled(flag: bool) -> Decision:
    return Decision.SAMPLED if flag else Decision.NOT_SAMPLED


def _inverted(matched: bool, invert: bool) -> Decision:
    return _sampled(matched != invert)


def _attribute_values(trace: TraceData, key: str) -> Iterator[tuple[bool, Any]]:
    """Every value of `key` on the trace's resources and spans: (from a span, value)."""
    seen_resources: set[int] = set()
    for rs, span in trace.spans():
        if id(rs) not in seen_resources:
            seen_resources.add(id(rs))
            yield from ((False, v) for v in _values(rs.resource.attributes, key))
        yield from ((True, v) for v in _values(span.attributes, key))


def _values(attributes: Any, key: str) -> Iterator[Any]:
    kv: KeyValue
    for kv in attributes:
        if kv.key == key:
            value = as_python(kv.value)
            if value is not None:
                yield value


# --- the policies and their configs ---


@dataclass
class AlwaysSampleConfig:
    pass


class AlwaysSample(Policy):
    def evaluate(self, trace: TraceData) -> Decision:
        return Decision.SAMPLED


@dataclass
class LatencyConfig:
    threshold_ms: int = 0
    upper_threshold_ms: int = 0

    def __post_init__(self) -> None:
        if self.upper_threshold_ms and self.upper_threshold_ms < self.threshold_ms:
            raise ValueError("upper_threshold_ms must be greater than threshold_ms")


class Latency(Policy):
    """The trace's duration, first span start to last span end, grown span by span in arrival
    order as the Collector does: the first span that brings it into range decides, so with an
    upper bound a later, longer span does not undo a match."""

    def evaluate(self, trace: TraceData) -> Decision:
        low, high = self.config.threshold_ms, self.config.upper_threshold_ms
        first = last = 0
        for _, span in trace.spans():
            if not first or span.start_time_unix_nano < first:
                first = span.start_time_unix_nano
            if not last or span.end_time_unix_nano > last:
                last = span.end_time_unix_nano
            nanos = last - first
            ms = nanos // 1_000_000 if nanos >= 0 else -(-nanos // 1_000_000)  # Go truncates
            if (low < ms <= high) if high else ms >= low:
                return Decision.SAMPLED
        return Decision.NOT_SAMPLED


_STATUS = {"UNSET": Status.STATUS_CODE_UNSET, "OK": Status.STATUS_CODE_OK, "ERROR": Status.STATUS_CODE_ERROR}


@dataclass
class StatusCodeConfig:
    status_codes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.status_codes:
            raise ValueError("status_codes must not be empty")
        bad = [c for c in self.status_codes if c not in _STATUS]
        if bad:
            raise ValueError(f"unknown status codes {bad}: expected {sorted(_STATUS)}")


class StatusCode(Policy):
    def __init__(self, config: StatusCodeConfig, clock: Clock) -> None:
        self.codes = {_STATUS[c] for c in config.status_codes}

    def evaluate(self, trace: TraceData) -> Decision:
        return _sampled(any(s.status.code in self.codes for _, s in trace.spans()))


DEFAULT_HASH_SALT = "default-hash-seed"
_FNV64_OFFSET, _FNV64_PRIME = 0xCBF29CE484222325, 0x100000001B3


def fnv1a_64(data: bytes, h: int = _FNV64_OFFSET) -> int:
    for byte in data:
        h = ((h ^ byte) * _FNV64_PRIME) & 0xFFFFFFFFFFFFFFFF
    return h


@dataclass
class ProbabilisticConfig:
    sampling_percentage: float = 0.0
    hash_salt: str = ""

    def __post_init__(self) -> None:
        if not 0 <= self.sampling_percentage <= 100:
            raise ValueError("sampling_percentage must be between 0 and 100")


class Probabilistic(Policy):
    """FNV-1a 64 over the salt and the trace id, kept when at most ratio * 2^64-1."""

    def __init__(self, config: ProbabilisticConfig, clock: Clock) -> None:
        self.salt = (config.hash_salt or DEFAULT_HASH_SALT).encode()
        self.threshold = int((2**64 - 1) * Fraction(config.sampling_percentage / 100))

    def evaluate(self, trace: TraceData) -> Decision:
        return _sampled(fnv1a_64(trace.trace_id, fnv1a_64(self.salt)) <= self.threshold)


@dataclass
class StringAttributeConfig:
    key: str = ""
    values: list[str] = field(default_factory=list)
    enabled_regex_matching: bool = False
    cache_max_size: int = 0
    invert_match: bool = False

    def __post_init__(self) -> None:
        if not self.key:
            raise ValueError("key must be set")
        if self.enabled_regex_matching:
            for value in self.values:
                try:
                    re.compile(value)
                except re.error as exc:
                    raise ValueError(f"invalid regular expression {value!r}: {exc}") from None


class StringAttribute(Policy):
    def __init__(self, config: StringAttributeConfig, clock: Clock) -> None:
        super().__init__(config, clock)
        self.patterns = [re.compile(v) for v in config.values] if config.enabled_regex_matching else []
        self.values = {v for v in config.values if v}  # the Collector ignores an empty value

    def _matches(self, from_span: bool, value: Any) -> bool:
        # As the Collector reads it: a non-string value is "", and an empty span value never matches.
        text = value if isinstance(value, str) else ""
        if from_span and not text:
            return False
        if self.patterns:
            return any(p.search(text) for p in self.patterns)  # Go's MatchString: unanchored
        return text in self.values

    def evaluate(self, trace: TraceData) -> Decision:
        matched = any(self._matches(*found) for found in _attribute_values(trace, self.config.key))
        return _inverted(matched, self.config.invert_match)


@dataclass
class BooleanAttributeConfig:
    key: str = ""
    value: bool = False
    invert_match: bool = False

    def __post_init__(self) -> None:
        if not self.key:
            raise ValueError("key must be set")


class BooleanAttribute(Policy):
    def evaluate(self, trace: TraceData) -> Decision:
        # As the Collector reads it: a non-bool value is false.
        values = (v if isinstance(v, bool) else False for _, v in _attribute_values(trace, self.config.key))
        matched = any(v == self.config.value for v in values)
        return _inverted(matched, self.config.invert_match)


@dataclass
class NumericAttributeConfig:
    key: str = ""
    min_value: float | None = None
    max_value: float | None = None
    invert_match: bool = False

    def __post_init__(self) -> None:
        if not self.key:
            raise ValueError("key must be set")
        if self.min_value is None and self.max_value is None:
            raise ValueError("min_value or max_value must be set")
        if self.min_value is not None and self.max_value is not None and self.max_value < self.min_value:
            raise ValueError("max_value must be greater than or equal to min_value")


class NumericAttribute(Policy):
    def _in_range(self, value: Any) -> bool:
        # The Collector reads the value as an int64: any other type (double, string, bool) is 0.
        if isinstance(value, bool) or not isinstance(value, int):
            value = 0
        low, high = self.config.min_value, self.config.max_value
        return (low is None or value >= low) and (high is None or value <= high)

    def evaluate(self, trace: TraceData) -> Decision:
        matched = any(self._in_range(v) for _, v in _attribute_values(trace, self.config.key))
        return _inverted(matched, self.config.invert_match)


@dataclass
class RateLimitingConfig:
    spans_per_second: int = 0

    def __post_init__(self) -> None:
        if self.spans_per_second <= 0:
            raise ValueError("spans_per_second must be greater than zero")


class _SecondBudget:
    """Spans sampled in the current wall-clock second, against a budget."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.second = -1
        self.used = 0

    def take(self, spans: int, budget: float) -> bool:
        second = int(self.clock())
        if second != self.second:
            self.second, self.used = second, 0
        if self.used + spans > budget:
            return False
        self.used += spans
        return True


class RateLimiting(Policy):
    def __init__(self, config: RateLimitingConfig, clock: Clock) -> None:
        self.limit = config.spans_per_second
        self.budget = _SecondBudget(clock)

    def evaluate(self, trace: TraceData) -> Decision:
        return _sampled(self.budget.take(trace.span_count, self.limit))


@dataclass
class SpanCountConfig:
    min_spans: int = 0
    max_spans: int = 0  # 0: no upper bound

    def __post_init__(self) -> None:
        if self.min_spans < 0 or self.max_spans < 0:
            raise ValueError("min_spans and max_spans must not be negative")
        if self.max_spans and self.max_spans < self.min_spans:
            raise ValueError("max_spans must be greater than or equal to min_spans")


class SpanCount(Policy):
    def evaluate(self, trace: TraceData) -> Decision:
        n = trace.span_count
        return _sampled(
            n >= self.config.min_spans and (not self.config.max_spans or n <= self.config.max_spans)
        )


@dataclass
class AndConfig:
    and_sub_policy: list[Any] = field(default_factory=list)


class And(Policy):
    def __init__(self, config: AndConfig, clock: Clock) -> None:
        super().__init__(config, clock)
        self.policies: list[Policy] = []

    def evaluate(self, trace: TraceData) -> Decision:
        for policy in self.policies:
            if not policy.evaluate(trace).keeps:
                return Decision.NOT_SAMPLED
        return Decision.SAMPLED


@dataclass
class DropConfig:
    drop_sub_policy: list[Any] = field(default_factory=list)


class Drop(And):
    """DROPPED when every sub-policy matches (as `and`); the trace is then dropped whatever the
    other policies say."""

    def evaluate(self, trace: TraceData) -> Decision:
        return Decision.DROPPED if super().evaluate(trace) is Decision.SAMPLED else Decision.NOT_SAMPLED


@dataclass
class RateAllocation:
    policy: str = ""
    percent: float = 0.0


@dataclass
class CompositeConfig:
    max_total_spans_per_second: int = 0
    policy_order: list[str] = field(default_factory=list)
    composite_sub_policy: list[Any] = field(default_factory=list)
    rate_allocation: list[RateAllocation] = field(default_factory=list)


class Composite(Policy):
    """Sub-policies in `policy_order`; the first that samples keeps the trace if its share of
    `max_total_spans_per_second` (its `rate_allocation` percent; the rest is split evenly among
    sub-policies without one) has room this second."""

    def __init__(self, config: CompositeConfig, clock: Clock) -> None:
        super().__init__(config, clock)
        self.clock = clock
        self.ordered: list[tuple[Policy, float, _SecondBudget]] = []

    def arrange(self, policies: list[Policy]) -> None:
        by_name = {p.name: p for p in policies}
        order = self.config.policy_order or list(by_name)
        missing = [n for n in order if n not in by_name]
        if missing:
            raise ValueError(f"policy_order names undefined sub-policies {missing}")
        total = self.config.max_total_spans_per_second
        shares = {a.policy: total * a.percent / 100 for a in self.config.rate_allocation}
        unknown = [n for n in shares if n not in by_name]
        if unknown:
            raise ValueError(f"rate_allocation names undefined sub-policies {unknown}")
        rest = [n for n in order if n not in shares]
        left = max(0.0, total - sum(shares.values()))
        for name in rest:
            shares[name] = left / len(rest)
        self.ordered = [(by_name[n], shares[n], _SecondBudget(self.clock)) for n in order]

    def evaluate(self, trace: TraceData) -> Decision:
        for policy, share, budget in self.ordered:
            if policy.evaluate(trace).keeps and budget.take(trace.span_count, share):
                return Decision.SAMPLED
        return Decision.NOT_SAMPLED


POLICY_TYPES: dict[str, tuple[type[Any], type[Policy]]] = {
    "always_sample": (AlwaysSampleConfig, AlwaysSample),
    "latency": (LatencyConfig, Latency),
    "status_code": (StatusCodeConfig, StatusCode),
    "probabilistic": (ProbabilisticConfig, Probabilistic),
    "string_attribute": (StringAttributeConfig, StringAttribute),
    "boolean_attribute": (BooleanAttributeConfig, BooleanAttribute),
    "numeric_attribute": (NumericAttributeConfig, NumericAttribute),
    "rate_limiting": (RateLimitingConfig, RateLimiting),
    "span_count": (SpanCountConfig, SpanCount),
    "and": (AndConfig, And),
    "drop": (DropConfig, Drop),
    "composite": (CompositeConfig, Composite),
}


def build_policy(raw: Any, path: str, clock: Clock, nested: bool = False) -> Policy:
    """A policy from its config mapping; ValueError naming the key path of every problem."""
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping with name and type, got {raw!r}")
    type_ = raw.get("type")
    if type_ not in POLICY_TYPES or (nested and type_ in ("composite", "drop")):
        raise ValueError(f"{path}.type: unknown policy type {type_!r} (known: {', '.join(POLICY_TYPES)})")
    unknown = [k for k in raw if k not in ("name", "type") and k not in POLICY_TYPES]
    if unknown:
        raise ValueError(f"{path}: unknown keys {unknown}")
    config_type, policy_type = POLICY_TYPES[type_]
    config, problems = decode(config_type, raw.get(type_) or {}, f"{path}.{type_}")
    errors = [f"{p.path}: {p.message}" for p in problems if p.severity == "error"]
    if errors:
        raise ValueError("; ".join(errors))
    policy = policy_type(config, clock)
    policy.name = str(raw.get("name") or "")
    if isinstance(policy, And):
        key = "drop" if isinstance(policy, Drop) else "and"
        subs = config.drop_sub_policy if isinstance(policy, Drop) else config.and_sub_policy
        policy.policies = [
            build_policy(sub, f"{path}.{key}.{key}_sub_policy[{i}]", clock, nested=True)
            for i, sub in enumerate(subs)
        ]
    elif isinstance(policy, Composite):
        subs = [
            build_policy(sub, f"{path}.composite.composite_sub_policy[{i}]", clock, nested=True)
            for i, sub in enumerate(config.composite_sub_policy)
        ]
        try:
            policy.arrange(subs)
        except ValueError as exc:
            raise ValueError(f"{path}.composite: {exc}") from None
    return policy
