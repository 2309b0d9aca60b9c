"""probabilistic_sampler against collector-contrib's own test tables (the YAML files here, each
naming its upstream file, test and commit), run through the real processor as upstream runs its
processor: one span in, kept or not, and the tracestate it leaves with."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from meshtrace.collector.component import ComponentID
from meshtrace.collector.processors.probabilistic_sampler import factory
from meshtrace.collector.processors.probabilistic_sampler import sampling as s
from meshtrace.collector.processors.probabilistic_sampler.config import ProbabilisticSamplerConfig
from meshtrace.collector.processors.probabilistic_sampler.processor import sampling_priority
from meshtrace.collector.schema import decode
from meshtrace.model import Traces

HERE = Path(__file__).parent
PROCESSOR_LOG = "meshtrace.collector.processors.probabilistic_sampler.processor"


def load(name: str) -> dict[str, Any]:
    return yaml.safe_load((HERE / name).read_text())


def attribute(spec: dict[str, Any] | None) -> list[KeyValue]:
    if spec is None:
        return []
    kind = next(k for k in ("int", "double", "string", "bool") if k in spec)
    field = {"int": "int_value", "double": "double_value", "string": "string_value", "bool": "bool_value"}
    return [KeyValue(key=spec["key"], value=AnyValue(**{field[kind]: spec[kind]}))]


class Sink:
    def __init__(self) -> None:
        self.got: list[Traces] = []

    async def consume_traces(self, traces: Traces) -> None:
        self.got.append(Traces.from_bytes(traces.encoded()))


def run(config: dict[str, Any], trace_id: str, tracestate: str = "", attr: Any = None) -> tuple[bool, str]:
    """One span through a real processor: (kept, its tracestate when kept)."""
    message = ExportTraceServiceRequest()
    span = (
        message.resource_spans.add()
        .scope_spans.add()
        .spans.add(
            trace_id=bytes.fromhex(trace_id), span_id=bytes.fromhex("00000000fefefefe"), name="testing"
        )
    )
    span.trace_state = tracestate
    span.attributes.extend(attribute(attr))
    sink = Sink()
    processor = factory.create(
        ComponentID("probabilistic_sampler"), ProbabilisticSamplerConfig(**config), sink
    )
    asyncio.run(processor.consume_traces(Traces.from_message(message)))  # type: ignore[attr-defined]
    if not sink.got:
        return False, ""
    (kept,) = [sp for rs in sink.got[0].message().resource_spans for ss in rs.scope_spans for sp in ss.spans]
    return True, kept.trace_state


def trace_state_cases() -> list[Any]:
    data = load("trace_state.yaml")
    out = []
    for table in data["tables"]:
        for case in table["cases"]:
            for mode in table["modes"]:
                row = {**data["defaults"], **table.get("defaults", {}), **case}
                out.append(pytest.param(mode, row, id=f"{table['test']}/{mode or 'unset'}/{case['name']}"))
    return out


@pytest.mark.parametrize(("mode", "row"), trace_state_cases())
def test_trace_state_tables(mode: str, row: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    config = {
        "hash_seed": row["hash_seed"],
        "fail_closed": row["fail_closed"],
        "sampling_precision": row["sampling_precision"],
        "mode": mode,
        **row["config"],
    }
    # Upstream's Go literals skip validation; its precision 0 means all 14 digits.
    config["sampling_precision"] = config["sampling_precision"] or s.NUM_HEX_DIGITS
    expect = row["expect_by_mode"][mode] if "expect_by_mode" in row else row["expect"]
    with caplog.at_level(logging.DEBUG, logger=PROCESSOR_LOG):
        kept, tracestate = run(config, row["trace_id"], row.get("tracestate", ""), row.get("attribute"))
    assert kept == expect["sampled"]
    if kept and "tracestate" in expect:
        assert tracestate == expect["tracestate"]
    problems = [r.getMessage() for r in caplog.records if r.name == PROCESSOR_LOG]
    if "log" in row:
        assert len(problems) == 1 and row["log"] in problems[0], problems
    else:
        assert problems == []


HASHING = load("hashing_function.yaml")


@pytest.mark.parametrize(("seed", "trace_id", "sampled"), HASHING["rows"])
def test_hashing_function_table(seed: int, trace_id: str, sampled: bool) -> None:
    kept, _ = run({**HASHING["config"], "hash_seed": seed}, trace_id)
    assert kept == sampled


HASH_STATE = load("hash_seed_trace_state.yaml")


@pytest.mark.parametrize("case", HASH_STATE["cases"], ids=lambda c: f"{c['sampling_percentage']}pct")
def test_hash_seed_writes_th_and_rv(case: dict[str, Any]) -> None:
    # Upstream draws random trace ids until 10 are kept; these are fixed, so the test is repeatable.
    found = 0
    for i in range(1, 200):
        kept, tracestate = run(
            {**HASH_STATE["config"], "sampling_percentage": case["sampling_percentage"]}, f"{i:032x}"
        )
        if not kept:
            continue
        state = s.TraceState.parse(tracestate)
        assert state.th == case["th"]
        assert state.rv is not None and s.parse_threshold(state.th) <= s.parse_randomness(state.rv)
        found += 1
        if found == 10:
            break
    assert found == 10


@pytest.mark.parametrize("case", HASH_STATE["empty_hash"], ids=lambda c: c["bytes"] or "empty")
def test_empty_hash_function(case: dict[str, Any]) -> None:
    assert s.fnv1a_32(bytes.fromhex(case["bytes"]), s.fnv1a_32(bytes(4))) & 0x3FFF == case["bucket"]


PRIORITY = load("sampling_priority.yaml")


@pytest.mark.parametrize("case", PRIORITY["cases"], ids=lambda c: c["name"])
def test_sampling_priority_table(case: dict[str, Any]) -> None:
    assert sampling_priority(attribute(case["attribute"])) is s.Priority(case["want"])


VALIDATION = load("config_validation.yaml")


@pytest.mark.parametrize("case", VALIDATION["invalid"], ids=lambda c: c["file"])
def test_invalid_config_files(case: dict[str, Any]) -> None:
    raw = case["config"] if "config" in case else yaml.safe_load(case["config_yaml"])
    _, problems = decode(ProbabilisticSamplerConfig, raw, "processors.probabilistic_sampler/traces")
    errors = [str(p) for p in problems if p.severity == "error"]
    assert errors and case["field"] in errors[0], errors


@pytest.mark.parametrize("case", VALIDATION["valid"])
def test_valid_config_files(case: dict[str, Any]) -> None:
    config, problems = decode(ProbabilisticSamplerConfig, case["config"], "processors.probabilistic_sampler")
    assert [p for p in problems if p.severity == "error"] == []
    assert config.effective_mode == case["mode"]
