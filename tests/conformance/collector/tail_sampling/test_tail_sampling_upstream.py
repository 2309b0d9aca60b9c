"""tail_sampling against collector-contrib's own test tables (the YAML files here, each naming its
upstream file, test and commit): the policies one by one on the traces upstream builds, the
decision flow on the answers upstream's mock policies give, and the whole sampler (real policies,
decision after decision_wait, late spans) where real policies can give those answers."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span, Status

from meshtrace.collector.processors.tail_sampling.config import TailSamplingConfig
from meshtrace.collector.processors.tail_sampling.policies import Decision, TraceData, build_policy, combine
from meshtrace.collector.processors.tail_sampling.processor import TailSampler

HERE = Path(__file__).parent
TRACE_ID = bytes(range(1, 17))
# Upstream's inverted answers as today's Collector gives them (see policies.yaml).
CURRENT = {"invert_sampled": "sampled", "invert_not_sampled": "not_sampled"}
STATUS = {"UNSET": Status.STATUS_CODE_UNSET, "OK": Status.STATUS_CODE_OK, "ERROR": Status.STATUS_CODE_ERROR}


def load(name: str) -> dict[str, Any]:
    return yaml.safe_load((HERE / name).read_text())


def any_value(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    return AnyValue(string_value=value)


def attributes(values: dict[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=k, value=any_value(v)) for k, v in values.items()]


def resource_spans(spec: dict[str, Any]) -> list[ResourceSpans]:
    """The trace of a table row, as the ResourceSpans upstream's helpers build."""
    batches = [[{}] * n for n in spec["span_batches"]] if "span_batches" in spec else [spec["spans"]]
    out = []
    for spans in batches:
        rs = ResourceSpans()
        rs.resource.attributes.extend(attributes(spec.get("resource", {})))
        ss = rs.scope_spans.add()
        for i, s in enumerate(spans):
            start = 1_700_000_000_000_000_000 + s.get("start_ms", 0) * 1_000_000
            ss.spans.append(
                Span(
                    trace_id=TRACE_ID,
                    span_id=bytes([1, 2, 3, 4, 5, 6, 7, i + 8]),
                    name="span",
                    start_time_unix_nano=start,
                    end_time_unix_nano=start + s.get("duration_ms", 0) * 1_000_000,
                    attributes=attributes(s.get("attributes", {})),
                    status=Status(code=STATUS[s.get("status", "UNSET")]),
                )
            )
        out.append(rs)
    return out


def trace_data(spec: dict[str, Any]) -> TraceData:
    fragments = resource_spans(spec)
    return TraceData(
        TRACE_ID, 0.0, fragments, sum(len(ss.spans) for rs in fragments for ss in rs.scope_spans)
    )


def policy_cases() -> list[Any]:
    out = []
    for table in load("policies.yaml")["tables"]:
        for case in table["cases"]:
            out.append(pytest.param(table["type"], case, id=f"{table['type']}/{case['desc']}"))
    return out


@pytest.mark.parametrize(("type_", "case"), policy_cases())
def test_policy_tables(type_: str, case: dict[str, Any]) -> None:
    policy = build_policy({"name": "p", "type": type_, type_: case["policy"]}, "p", lambda: 0.0)
    want = CURRENT.get(case["decision"], case["decision"])
    assert policy.evaluate(trace_data(case["trace"])) is Decision(want)


def flow_cases() -> list[Any]:
    return [
        pytest.param(case, id=f"{Path(source['file'].split()[0]).name}/{case['test']}")
        for source in load("decision_flow.yaml")["sources"]
        for case in source["cases"]
    ]


def first_match(decisions: list[Decision]) -> list[Decision]:
    """What the evaluation sees with sample_on_first_match: drop answers first, stop at SAMPLED."""
    seen: list[Decision] = []
    for decision in sorted(decisions, key=lambda d: d is not Decision.DROPPED):
        seen.append(decision)
        if decision in (Decision.DROPPED, Decision.SAMPLED):
            break
    return seen


@pytest.mark.parametrize("case", flow_cases())
def test_decision_flow(case: dict[str, Any]) -> None:
    decisions = [Decision(d) for d in case["decisions"]]
    if case.get("sample_on_first_match"):
        decisions = first_match(decisions)
    assert combine(decisions) is case["sampled"]


# Real policies giving each plain answer on a trace with one span and no error.
REAL_POLICY = {
    "sampled": {"type": "always_sample"},
    "not_sampled": {"type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
    "dropped": {"type": "drop", "drop": {"drop_sub_policy": [{"name": "all", "type": "always_sample"}]}},
}


def run_sampler(policies: list[dict[str, Any]], spec: dict[str, Any], **config: Any) -> tuple[bool, bool]:
    """(the trace was sent on at the decision, a late span of it was sent on)."""
    sampler = TailSampler(TailSamplingConfig(decision_wait=1.0, policies=policies, **config), lambda: 0.0)
    assert sampler.add(ExportTraceServiceRequest(resource_spans=resource_spans(spec)), now=0.0) == []
    kept = bool(sampler.tick(now=1.0))
    late = sampler.add(ExportTraceServiceRequest(resource_spans=resource_spans(spec)), now=2.0)
    return kept, bool(late)


@pytest.mark.parametrize(
    "case",
    [
        c
        for c in flow_cases()
        if c.values[0]["decisions"] and set(c.values[0]["decisions"]) <= set(REAL_POLICY)
    ],
)
def test_decision_flow_in_the_sampler(case: dict[str, Any]) -> None:
    policies = [{"name": f"p{i}", **REAL_POLICY[d]} for i, d in enumerate(case["decisions"])]
    kept, late = run_sampler(
        policies, {"spans": [{}]}, sample_on_first_match=case.get("sample_on_first_match", False)
    )
    assert kept is case["sampled"]
    assert late is case["sampled"]  # late spans follow the original decision


SCENARIOS = load("decision_flow.yaml")["scenarios"]


@pytest.mark.parametrize("case", SCENARIOS["cases"], ids=lambda c: c["desc"])
def test_drop_health_checks_keep_errors(case: dict[str, Any]) -> None:
    assert run_sampler(SCENARIOS["policies"], case["trace"])[0] is case["sampled"]


PROBABILISTIC = load("policies.yaml")["probabilistic"]


@pytest.mark.parametrize("case", PROBABILISTIC["cases"], ids=lambda c: c["name"])
def test_probabilistic_policy_share(case: dict[str, Any]) -> None:
    config = {k: case[k] for k in ("sampling_percentage", "hash_salt") if k in case}
    raw = {"name": "p", "type": "probabilistic", "probabilistic": config}
    if "divergence" in case:
        with pytest.raises(ValueError, match="sampling_percentage"):
            build_policy(raw, "p", lambda: 0.0)
        return
    policy = build_policy(raw, "p", lambda: 0.0)
    rng = random.Random(1)
    n = PROBABILISTIC["traces"]
    kept = 0
    for _ in range(n):
        trace = TraceData(rng.randbytes(16), 0.0)
        kept += policy.evaluate(trace) is Decision.SAMPLED
    assert abs(kept / n * 100 - case["expected"]) <= PROBABILISTIC["tolerance_points"]
