"""The samplers inside a running `meshtrace collector` (zipkin receiver -> processor -> file
exporter): every span of a trace gets the same decision, even when a trace's spans arrive in
different requests; tail_sampling keeps the traces with an error and lets late spans follow."""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import requests

N_TRACES = 400
SPANS_PER_TRACE = 3


def zspan(trace_id: str, index: int, **tags: str) -> dict[str, Any]:
    return {
        "traceId": trace_id,
        "id": f"{index + 1:016x}",
        "name": f"op{index}",
        "timestamp": 1_700_000_000_000_000 + index,
        "duration": 10,
        "localEndpoint": {"serviceName": "svc"},
        "tags": tags,
    }


def post(url: str, spans: list[dict[str, Any]]) -> None:
    response = requests.post(url, json=spans, timeout=10)
    assert response.status_code == 202, response.text


@pytest.mark.parametrize(
    ("config", "tracestate"),
    # hash_seed writes the randomness its hash gave (the same for every span of a trace) as rv.
    [
        ({"sampling_percentage": 25}, r"ot=th:c"),
        ({"sampling_percentage": 25, "hash_seed": 22}, r"ot=rv:[0-9a-f]{14};th:c"),
    ],
    ids=["proportional", "hash_seed"],
)
def test_probabilistic_sampler_same_decision_for_every_span_of_a_trace(
    zipkin_collector: Callable[..., Any], config: dict[str, Any], tracestate: str
) -> None:
    collector = zipkin_collector(processors={"probabilistic_sampler": config})
    rng = random.Random(5)
    trace_ids = [f"{rng.getrandbits(128):032x}" for _ in range(N_TRACES)]
    for index in range(SPANS_PER_TRACE):  # each trace's spans arrive in different requests
        post(collector.url(), [zspan(t, index) for t in trace_ids])
    # A trace forced through by sampling.priority marks the end of what was sent.
    marker = bytes.fromhex("f" * 32)
    post(collector.url(), [zspan(marker.hex(), 0, **{"sampling.priority": "1"})])
    written = collector.wait_until(lambda found: any(w.span.trace_id == marker for w in found))
    assert any(w.span.trace_id == marker for w in written)
    written = [w for w in written if w.span.trace_id != marker]
    per_trace = Counter(w.span.trace_id for w in written)
    assert set(per_trace.values()) == {SPANS_PER_TRACE}  # all of a trace, or none of it
    kept = len(per_trace)
    sigma = (N_TRACES * 0.25 * 0.75) ** 0.5
    assert abs(kept - N_TRACES * 0.25) < 5 * sigma, kept
    assert all(re.fullmatch(tracestate, w.span.trace_state) for w in written)
    assert len({(w.span.trace_id, w.span.trace_state) for w in written}) == kept


def test_tail_sampling_keeps_error_traces_and_late_spans_follow(zipkin_collector: Callable[..., Any]) -> None:
    collector = zipkin_collector(
        processors={
            "tail_sampling": {
                "decision_wait": "1s",
                "policies": [
                    {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}
                ],
            }
        }
    )
    trace_ids = [f"{i + 1:032x}" for i in range(10)]
    post(collector.url(), [zspan(t, 0) for t in trace_ids])
    # The error is only known when the second span (e.g. the failing call) ends.
    post(
        collector.url(),
        [zspan(t, 1, **({"error": "timeout"} if i % 2 == 0 else {})) for i, t in enumerate(trace_ids)],
    )
    written = collector.wait_for(10)
    assert collector.proc.proc.poll() is None
    kept = Counter(w.span.trace_id.hex() for w in written)
    assert kept == {t: 2 for i, t in enumerate(trace_ids) if i % 2 == 0}
    post(collector.url(), [zspan(trace_ids[0], 2), zspan(trace_ids[1], 2)])  # late spans
    written = collector.wait_for(11)
    late = [w.span for w in written if w.span.name == "op2"]
    assert [s.trace_id.hex() for s in late] == [trace_ids[0]]


def test_batch_max_size_and_processor_metrics(zipkin_collector: Callable[..., Any]) -> None:
    collector = zipkin_collector(
        processors={"batch": {"send_batch_size": 4, "send_batch_max_size": 4, "timeout": "100ms"}}
    )
    post(collector.url(), [zspan(f"{7:032x}", i) for i in range(10)])
    collector.wait_for(10)
    lines = [line for line in collector.out.read_text().splitlines() if line.strip()]
    assert [line.count('"spanId"') for line in lines] == [4, 4, 2]  # split at 4, the rest on timeout
    metrics = requests.get(f"http://{collector.proc.address('metrics')}/metrics", timeout=10).text
    for name in ("otelcol_processor_incoming_items", "otelcol_processor_outgoing_items"):
        assert f'{name}{{otel_signal="traces",processor="batch"}} 10.0' in metrics
    assert 'otelcol_receiver_accepted_spans{receiver="zipkin",transport="http"} 10.0' in metrics
