"""tail_sampling: every policy, the decision after decision_wait, late spans, eviction, config
errors with key paths; time is an injected clock, never a sleep."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from meshtrace.collector.component import ComponentID
from meshtrace.collector.processors.tail_sampling import factory
from meshtrace.collector.processors.tail_sampling.config import TailSamplingConfig
from meshtrace.collector.processors.tail_sampling.policies import Decision, TraceData, build_policy
from meshtrace.collector.processors.tail_sampling.processor import (
    TailSampler,
    TailSamplingProcessor,
    fragments_by_trace,
)
from meshtrace.collector.schema import decode
from meshtrace.model import Traces
from meshtrace.model.zipkin import python_to_any_value

MS = 1_000_000


def attr(key: str, value: Any) -> KeyValue:
    return KeyValue(key=key, value=python_to_any_value(value))


def span(
    trace: int, sid: int, start_ms: int = 0, end_ms: int = 10, error: bool = False, **attrs: Any
) -> Span:
    s = Span(
        trace_id=trace.to_bytes(16, "big"),
        span_id=sid.to_bytes(8, "big"),
        name=f"t{trace}s{sid}",
        start_time_unix_nano=start_ms * MS,
        end_time_unix_nano=end_ms * MS,
        attributes=[attr(k, v) for k, v in attrs.items()],
    )
    if error:
        s.status.code = Status.STATUS_CODE_ERROR
    return s


def batch(*spans: Span, service: str = "svc") -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.append(attr("service.name", service))
    rs.scope_spans.add().spans.extend(spans)
    return req


def trace_of(*spans: Span) -> TraceData:
    (fragments,) = fragments_by_trace(batch(*spans)).values()
    return TraceData(spans[0].trace_id, 0.0, fragments, len(spans))


def policy(raw: dict[str, Any], clock: list[float] | None = None) -> Any:
    now = clock if clock is not None else [0.0]
    return build_policy(raw, "policies[0]", lambda: now[0])


def test_always_latency_status_span_count() -> None:
    assert policy({"type": "always_sample"}).evaluate(trace_of(span(1, 1))) is Decision.SAMPLED
    # 600 ms first start to last end (not from time 0: like the Collector, a 0 start counts as unset)
    slow = trace_of(span(1, 1, 1000, 1050), span(1, 2, 1400, 1600))
    fast = trace_of(span(1, 1, 1000, 1050))
    latency = policy({"type": "latency", "latency": {"threshold_ms": 500}})
    assert latency.evaluate(slow).keeps and not latency.evaluate(fast).keeps
    banded = policy({"type": "latency", "latency": {"threshold_ms": 100, "upper_threshold_ms": 500}})
    assert not banded.evaluate(slow).keeps
    errors = policy({"type": "status_code", "status_code": {"status_codes": ["ERROR"]}})
    assert errors.evaluate(trace_of(span(1, 1), span(1, 2, error=True))).keeps
    assert not errors.evaluate(trace_of(span(1, 1))).keeps
    count = policy({"type": "span_count", "span_count": {"min_spans": 2, "max_spans": 3}})
    assert count.evaluate(slow).keeps and not count.evaluate(fast).keeps


def test_attribute_policies_and_inversion() -> None:
    t = trace_of(span(1, 1, route="/checkout", retry=True, http_code=503, ratio=0.5))
    s = policy({"type": "string_attribute", "string_attribute": {"key": "route", "values": ["/checkout"]}})
    assert s.evaluate(t) is Decision.SAMPLED
    rx = policy(
        {
            "type": "string_attribute",
            "string_attribute": {"key": "route", "values": ["^/check"], "enabled_regex_matching": True},
        }
    )
    assert rx.evaluate(t) is Decision.SAMPLED
    inv = policy(
        {
            "type": "string_attribute",
            "string_attribute": {"key": "route", "values": ["/checkout"], "invert_match": True},
        }
    )
    # invert_match answers plainly (the Collector since v0.144): no veto over other policies.
    assert inv.evaluate(t) is Decision.NOT_SAMPLED
    assert inv.evaluate(trace_of(span(2, 1, route="/home"))) is Decision.SAMPLED
    b = policy({"type": "boolean_attribute", "boolean_attribute": {"key": "retry", "value": True}})
    assert b.evaluate(t).keeps
    n = policy(
        {
            "type": "numeric_attribute",
            "numeric_attribute": {"key": "http_code", "min_value": 500, "max_value": 599},
        }
    )
    assert n.evaluate(t).keeps
    assert not n.evaluate(trace_of(span(2, 1, http_code=200))).keeps
    # Resource attributes count too.
    svc = policy({"type": "string_attribute", "string_attribute": {"key": "service.name", "values": ["svc"]}})
    assert svc.evaluate(t).keeps


def test_probabilistic_policy_fraction() -> None:
    p = policy({"type": "probabilistic", "probabilistic": {"sampling_percentage": 20}})
    kept = sum(p.evaluate(trace_of(span(i * 7919 + 1, 1))).keeps for i in range(5000))
    assert 800 < kept < 1200
    salted = policy({"type": "probabilistic", "probabilistic": {"sampling_percentage": 20, "hash_salt": "x"}})
    decisions = [salted.evaluate(trace_of(span(i + 1, 1))).keeps for i in range(200)]
    assert decisions == [salted.evaluate(trace_of(span(i + 1, 1))).keeps for i in range(200)]


def test_rate_limiting_per_second() -> None:
    now = [100.0]
    r = policy({"type": "rate_limiting", "rate_limiting": {"spans_per_second": 3}}, now)
    two = trace_of(span(1, 1), span(1, 2))
    assert r.evaluate(two).keeps and not r.evaluate(two).keeps
    now[0] = 101.0
    assert r.evaluate(two).keeps


def test_and_and_composite() -> None:
    both = policy(
        {
            "type": "and",
            "and": {
                "and_sub_policy": [
                    {"name": "err", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
                    {"name": "slow", "type": "latency", "latency": {"threshold_ms": 100}},
                ]
            },
        }
    )
    assert both.evaluate(trace_of(span(1, 1, 0, 200, error=True))).keeps
    assert not both.evaluate(trace_of(span(1, 1, 0, 200))).keeps
    now = [10.0]
    composite = policy(
        {
            "type": "composite",
            "composite": {
                "max_total_spans_per_second": 10,
                "policy_order": ["errors", "everything"],
                "composite_sub_policy": [
                    {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
                    {"name": "everything", "type": "always_sample"},
                ],
                "rate_allocation": [
                    {"policy": "errors", "percent": 50},
                    {"policy": "everything", "percent": 20},
                ],
            },
        },
        now,
    )
    ok = trace_of(span(1, 1), span(1, 2))
    err = trace_of(span(2, 1, error=True), span(2, 2), span(2, 3))
    assert composite.evaluate(ok).keeps and not composite.evaluate(ok).keeps  # 2 of "everything"'s 2
    assert composite.evaluate(err).keeps and not composite.evaluate(err).keeps  # 3 of 5, then 6 > 5
    now[0] = 11.0
    assert composite.evaluate(ok).keeps


@pytest.mark.parametrize(
    ("policies", "message"),
    [
        ([], "at least one policy"),
        ([{"type": "nope"}], r"policies\[0\].type: unknown policy type 'nope'"),
        ([{"type": "latency", "latency": {"threshold": 5}}], r"policies\[0\].latency.threshold: unknown key"),
        ([{"type": "status_code", "status_code": {"status_codes": ["BAD"]}}], "unknown status codes"),
        ([{"type": "latency", "colour": 1}], r"policies\[0\]: unknown keys \['colour'\]"),
        (
            [
                {
                    "type": "and",
                    "and": {"and_sub_policy": [{"type": "span_count", "span_count": {"min_spans": -1}}]},
                }
            ],
            r"policies\[0\].and.and_sub_policy\[0\].span_count",
        ),
        (
            [{"type": "composite", "composite": {"policy_order": ["x"], "composite_sub_policy": []}}],
            "policy_order names undefined",
        ),
    ],
)
def test_config_errors_name_the_key(policies: list[Any], message: str) -> None:
    _, problems = decode(TailSamplingConfig, {"policies": policies}, "processors.tail_sampling")
    assert problems and any(re.search(message, str(p)) for p in problems), problems


def test_config_defaults() -> None:
    config, problems = decode(TailSamplingConfig, {"policies": [{"name": "all", "type": "always_sample"}]})
    assert not problems
    assert config.decision_wait == 30 and config.num_traces == 50000


def errors_config(**over: Any) -> TailSamplingConfig:
    raw = {
        "policies": [{"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}]
    }
    config, problems = decode(TailSamplingConfig, {**raw, **over})
    assert not problems
    return config


def test_decision_after_wait_whole_trace_and_late_spans() -> None:
    sampler = TailSampler(errors_config(), clock=lambda: 0.0)
    assert sampler.add(batch(span(1, 1), span(2, 1)), now=0.0) == []
    assert sampler.add(batch(span(1, 2, error=True), span(2, 2), service="other"), now=10.0) == []
    assert sampler.tick(29.9) == []  # decision_wait (30 s) counts from the trace's first span
    kept = sampler.tick(30.0)
    names = sorted(s.name for rs in kept for ss in rs.scope_spans for s in ss.spans)
    assert names == ["t1s1", "t1s2"]
    services = [rs.resource.attributes[0].value.string_value for rs in kept]
    assert services == ["svc", "other"]
    late = sampler.add(batch(span(1, 3), span(2, 3)), now=31.0)  # trace 1 kept, trace 2 dropped
    assert [s.name for rs in late for ss in rs.scope_spans for s in ss.spans] == ["t1s3"]


def test_num_traces_evicts_the_oldest() -> None:
    sampler = TailSampler(errors_config(num_traces=2), clock=lambda: 0.0)
    for t in (1, 2, 3):
        sampler.add(batch(span(t, 1, error=True)), now=float(t))
    assert list(sampler.pending) == [(2).to_bytes(16, "big"), (3).to_bytes(16, "big")]
    assert sampler.evicted == 1
    kept = sampler.tick(100.0)
    assert sorted(s.name for rs in kept for ss in rs.scope_spans for s in ss.spans) == ["t2s1", "t3s1"]


class Sink:
    def __init__(self) -> None:
        self.got: list[Traces] = []

    async def consume_traces(self, traces: Traces) -> None:
        self.got.append(traces)


def test_processor_with_injected_clock() -> None:
    async def main() -> None:
        now = [1000.0]
        sink = Sink()
        proc = TailSamplingProcessor(
            ComponentID("tail_sampling"), errors_config(), sink, clock=lambda: now[0]
        )
        await proc.consume_traces(Traces.from_message(batch(span(1, 1, error=True), span(2, 1))))
        await proc.decide()
        assert sink.got == []
        now[0] += 30
        await proc.decide()
        (out,) = sink.got
        assert [s.name for rs in out.message().resource_spans for ss in rs.scope_spans for s in ss.spans] == [
            "t1s1"
        ]
        assert factory.type == "tail_sampling"

    asyncio.run(main())
