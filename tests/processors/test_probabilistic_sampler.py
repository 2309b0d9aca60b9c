"""probabilistic_sampler: the decision functions against hand-computed vectors, the kept fraction
over 100k random trace ids, and the processor over real OTLP batches."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from fuzzing import examples
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from meshtrace.collector.component import ComponentID
from meshtrace.collector.processors.probabilistic_sampler import factory
from meshtrace.collector.processors.probabilistic_sampler import sampling as s
from meshtrace.collector.processors.probabilistic_sampler.config import ProbabilisticSamplerConfig
from meshtrace.model import Traces


def test_fnv1a_32_standard_vectors() -> None:
    assert s.fnv1a_32(b"") == 0x811C9DC5
    assert s.fnv1a_32(b"a") == 0xE40C292C
    assert s.fnv1a_32(b"foobar") == 0xBF9CF968


def test_hash_seed_scaled_rate_uses_float32() -> None:
    assert s.hash_seed_scaled_rate(50) == 8192
    assert s.hash_seed_scaled_rate(100) == 16384
    assert s.hash_seed_scaled_rate(15.3) == 2506  # 15.3 * 163.84 = 2506.75
    assert s.hash_seed_scaled_rate(0) == 0


def test_hash_randomness_decides_as_the_legacy_bucket() -> None:
    trace_id = bytes(range(16))
    # FNV-1a over 4 seed bytes (22 little-endian) then the trace id, masked to 14 bits.
    h = 0x811C9DC5
    for byte in bytes([22, 0, 0, 0, *range(16)]):
        h = ((h ^ byte) * 0x01000193) % 2**32
    bucket = h & 0x3FFF
    randomness = s.hash_randomness(trace_id, 22)
    # kept at rate r (bucket < r) exactly when the threshold (16384 - r) << 42 is <= randomness
    assert (0x4000 - (bucket + 1)) << 42 <= randomness
    assert not (0x4000 - bucket) << 42 <= randomness


@pytest.mark.parametrize(
    ("probability", "precision", "th"),
    [
        (1.0, 4, "0"),
        (0.5, 4, "8"),
        (0.25, 4, "c"),
        (0.1, 4, "e666"),  # 0.9 * 2^56 = 0xe6666666666666
        (1 / 3, 4, "aaab"),  # 0xaaaaaaaaaaaaaa rounds up at the 4th digit
        (0.01, 4, "fd70a"),  # 0.01 < 1/16: one more digit; 0xfd70a3d70a3d70
        (0.1, 2, "e6"),
        (0.9, 4, "199a"),  # 0.1 * 2^56 = 0x1999999999999a; 0.1 >= 1/16: no extra digit
    ],
)
def test_threshold_vectors(probability: float, precision: int, th: str) -> None:
    assert s.threshold_hex(s.probability_to_threshold(probability, precision)) == th


def decide(sampler: s.Sampler, trace_id: bytes, tracestate: str = "") -> tuple[bool, str]:
    keep, state, _ = sampler.decide(trace_id, tracestate, s.Priority.DEFER, fail_closed=True)
    return keep, state


def test_consistent_decision_randomness_and_tracestate() -> None:
    half = s.Sampler.build("proportional", 50, 4, 0)
    low = bytes(9) + bytes.fromhex("7fffffffffffff")
    high = bytes(9) + bytes.fromhex("80000000000000")
    assert decide(half, low) == (False, "")
    assert decide(half, high, "vendor=x") == (True, "ot=th:8,vendor=x")
    # rv in the ot member wins over the trace id; the ot member goes first, rv before th.
    assert decide(half, low, "a=1,ot=rv:ffffffffffffff") == (True, "ot=rv:ffffffffffffff;th:8,a=1")
    # Upstream already sampled at 50%: proportional halves again (25% -> th c), equalizing keeps 8.
    very_high = bytes(9) + bytes.fromhex("f0000000000000")
    assert decide(half, very_high, "ot=th:8") == (True, "ot=th:c")
    assert decide(s.Sampler.build("equalizing", 50, 4, 0), high, "ot=th:8") == (True, "ot=th:8")
    keep, _, problem = half.decide(high, "ot=rv:xyz", s.Priority.DEFER, fail_closed=True)
    assert not keep and problem is not None and "rv" in problem


@pytest.mark.parametrize("mode", ["hash_seed", "proportional"])
def test_kept_fraction_over_100k_trace_ids(mode: str) -> None:
    rng = random.Random(7)
    n, pct = 100_000, 15.3
    sampler = s.Sampler.build(mode, pct, 4, 22)
    kept = 0
    for _ in range(n):
        kept += decide(sampler, rng.randbytes(16))[0]
    p = pct / 100
    sigma = (n * p * (1 - p)) ** 0.5
    assert abs(kept - n * p) < 5 * sigma, (kept, n * p, sigma)


def request(trace_ids: list[bytes], spans_per_trace: int = 3, priority: int | None = None) -> Traces:
    req = ExportTraceServiceRequest()
    ss = req.resource_spans.add().scope_spans.add()
    for t in trace_ids:
        for i in range(spans_per_trace):
            span = ss.spans.add(trace_id=t, span_id=bytes([1 + i]) * 8, name=f"s{i}")
            if priority is not None:
                span.attributes.append(KeyValue(key="sampling.priority", value=AnyValue(int_value=priority)))
    return Traces.from_message(req)


class Sink:
    def __init__(self) -> None:
        self.got: list[Traces] = []

    async def consume_traces(self, traces: Traces) -> None:
        self.got.append(Traces.from_bytes(traces.encoded()))


@pytest.mark.parametrize("config", [{"sampling_percentage": 30}, {"sampling_percentage": 30, "hash_seed": 9}])
def test_processor_keeps_whole_traces(config: dict[str, Any]) -> None:
    rng = random.Random(1)
    trace_ids = [rng.randbytes(16) for _ in range(400)]
    sink = Sink()
    proc = factory.create(ComponentID("probabilistic_sampler"), ProbabilisticSamplerConfig(**config), sink)
    asyncio.run(proc.consume_traces(request(trace_ids)))  # type: ignore[attr-defined]
    (out,) = sink.got
    spans = [sp for rs in out.message().resource_spans for ss in rs.scope_spans for sp in ss.spans]
    by_trace: dict[bytes, list[str]] = {}
    for sp in spans:
        by_trace.setdefault(sp.trace_id, []).append(sp.name)
    assert all(names == ["s0", "s1", "s2"] for names in by_trace.values())
    assert 60 < len(by_trace) < 180
    if "hash_seed" not in config:
        assert {sp.trace_state for sp in spans} == {"ot=th:b333"}  # 0.7 * 2^56 = 0xb3333...


def test_sampling_priority_overrides() -> None:
    rng = random.Random(2)
    ids = [rng.randbytes(16) for _ in range(50)]
    sink = Sink()
    proc = factory.create(ComponentID("probabilistic_sampler"), ProbabilisticSamplerConfig(), sink)
    asyncio.run(proc.consume_traces(request(ids, priority=1)))  # type: ignore[attr-defined]
    assert sink.got[0].span_count() == 150
    sink.got.clear()
    keep_all = factory.create(
        ComponentID("probabilistic_sampler"), ProbabilisticSamplerConfig(sampling_percentage=100), sink
    )
    asyncio.run(keep_all.consume_traces(request(ids, priority=0)))  # type: ignore[attr-defined]
    assert sink.got == []


def test_fail_closed_drops_unusable_tracestate() -> None:
    def bad_tracestate() -> Traces:
        req = request([bytes(range(16))], spans_per_trace=1)
        req.message().resource_spans[0].scope_spans[0].spans[0].trace_state = "ot=rv:nothex"
        req.changed()
        return req

    sink = Sink()
    closed = factory.create(ComponentID("p"), ProbabilisticSamplerConfig(sampling_percentage=100), sink)
    asyncio.run(closed.consume_traces(bad_tracestate()))  # type: ignore[attr-defined]
    assert sink.got == []
    opened = factory.create(
        ComponentID("p"), ProbabilisticSamplerConfig(sampling_percentage=100, fail_closed=False), sink
    )
    asyncio.run(opened.consume_traces(bad_tracestate()))  # type: ignore[attr-defined]
    assert sink.got[0].span_count() == 1


def test_config_mode_and_validation() -> None:
    assert ProbabilisticSamplerConfig().effective_mode == "proportional"
    assert ProbabilisticSamplerConfig(hash_seed=1).effective_mode == "hash_seed"
    assert ProbabilisticSamplerConfig(hash_seed=1, mode="equalizing").effective_mode == "equalizing"
    with pytest.raises(ValueError, match="sampling_percentage"):
        ProbabilisticSamplerConfig(sampling_percentage=-1)
    with pytest.raises(ValueError, match="sampling_precision"):
        ProbabilisticSamplerConfig(sampling_precision=15)


tracestates = st.one_of(
    st.text(max_size=80),
    st.lists(
        st.tuples(
            st.sampled_from(["rv", "th", "x", "RV", ""]),
            st.text(alphabet="0123456789abcdefABCDEF-_.:; ", max_size=18),
        ),
        max_size=4,
    ).map(lambda fields: "ot=" + ";".join(f"{k}:{v}" for k, v in fields)),
)


@settings(max_examples=examples(300), deadline=None)
@given(
    st.sampled_from(["proportional", "equalizing", "hash_seed"]),
    st.floats(min_value=0, max_value=150),
    st.binary(min_size=16, max_size=16),
    tracestates,
    st.sampled_from(list(s.Priority)),
    st.booleans(),
)
def test_decide_never_raises_on_any_tracestate(
    mode: str, pct: float, trace_id: bytes, tracestate: str, priority: s.Priority, fail_closed: bool
) -> None:
    keep, out, problem = s.Sampler.build(mode, pct, 4, 7).decide(trace_id, tracestate, priority, fail_closed)
    if keep and problem is None and out != tracestate:
        state = s.TraceState.parse(out)  # what it writes, it can read back
        assert state.th is not None and s.parse_threshold(state.th) >= 0
    if priority is s.Priority.DO_NOT_SAMPLE:
        assert not keep
