"""batch: size trigger, timeout, max-size split, flush on shutdown, no decoding to batch."""

from __future__ import annotations

import asyncio

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from meshtrace.collector.component import ComponentID
from meshtrace.collector.processors.batch import factory
from meshtrace.collector.processors.batch.config import BatchConfig
from meshtrace.collector.processors.batch.processor import Batcher, split_traces
from meshtrace.collector.schema import Duration
from meshtrace.collector.telemetry import TELEMETRY
from meshtrace.model import Traces


def encoded(service: str, spans: int, scopes: int = 1) -> Traces:
    """Encoded bytes with a known span count, as a receiver hands them on."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.add(key="service.name").value.string_value = service
    for s in range(scopes):
        ss = rs.scope_spans.add()
        ss.scope.name = f"scope{s}"
        for i in range(spans):
            ss.spans.add(
                trace_id=bytes([1]) * 16, span_id=(i + 1).to_bytes(8, "big"), name=f"{service}-{s}-{i}"
            )
    return Traces.from_bytes(req.SerializeToString(), span_count=spans * scopes)


def names(traces: Traces) -> list[str]:
    return [sp.name for rs in traces.message().resource_spans for ss in rs.scope_spans for sp in ss.spans]


def test_size_trigger_concatenates_without_decoding() -> None:
    batcher = Batcher(send_batch_size=10, send_batch_max_size=0)
    assert batcher.add(encoded("a", 4)) == []
    assert batcher.add(encoded("b", 4)) == []
    (batch,) = batcher.add(encoded("c", 4))
    assert batch._message is None  # concatenated bytes, never parsed
    assert len(batch) == 12 and batcher.count == 0
    assert [rs.resource.attributes[0].value.string_value for rs in batch.message().resource_spans] == [
        "a",
        "b",
        "c",
    ]


def test_max_size_splits_at_span_boundaries_keeping_resource_and_scope() -> None:
    batcher = Batcher(send_batch_size=4, send_batch_max_size=5)
    first, second = batcher.add(encoded("a", 6, scopes=2))  # 12 spans -> 5, 5, 2 pending
    assert len(first) == 5 and len(second) == 5 and batcher.count == 2
    assert names(first) == [f"a-0-{i}" for i in range(5)]
    assert names(second) == ["a-0-5", "a-1-0", "a-1-1", "a-1-2", "a-1-3"]
    scopes = [ss.scope.name for rs in second.message().resource_spans for ss in rs.scope_spans]
    assert scopes == ["scope0", "scope1"]
    (rest,) = batcher.flush()
    assert names(rest) == ["a-1-4", "a-1-5"]
    assert rest.message().resource_spans[0].resource.attributes[0].value.string_value == "a"


def test_split_traces_counts() -> None:
    head, rest = split_traces(encoded("x", 3), 1)
    assert (len(head), len(rest)) == (1, 2)
    assert (head.span_count(), rest.span_count()) == (1, 2)


class Sink:
    def __init__(self) -> None:
        self.got: list[Traces] = []
        self.arrived = asyncio.Event()

    async def consume_traces(self, traces: Traces) -> None:
        self.got.append(traces)
        self.arrived.set()


def test_processor_timeout_flush_and_metrics() -> None:
    async def main() -> None:
        sink = Sink()
        id = ComponentID("batch", "t")
        proc = factory.create(id, BatchConfig(send_batch_size=100, timeout=Duration(0.05)), sink)
        await proc.start(host=None)  # type: ignore[arg-type]
        await proc.consume_traces(encoded("a", 3))  # type: ignore[attr-defined]
        await proc.consume_traces(encoded("b", 2))  # type: ignore[attr-defined]
        assert sink.got == []  # under the size trigger: waits for the timeout
        await asyncio.wait_for(sink.arrived.wait(), timeout=5)
        assert [len(t) for t in sink.got] == [5]
        await proc.consume_traces(encoded("c", 1))  # type: ignore[attr-defined]
        await proc.shutdown()  # flushes what is pending
        assert [len(t) for t in sink.got] == [5, 1]
        labels = {"processor": "batch/t", "otel_signal": "traces"}
        assert TELEMETRY.value("otelcol_processor_incoming_items", **labels) == 6
        assert TELEMETRY.value("otelcol_processor_outgoing_items", **labels) == 6

    asyncio.run(main())


def test_processor_size_trigger_sends_at_once() -> None:
    async def main() -> None:
        sink = Sink()
        proc = factory.create(ComponentID("batch"), BatchConfig(send_batch_size=4), sink)
        await proc.start(host=None)  # type: ignore[arg-type]
        await proc.consume_traces(encoded("a", 5))  # type: ignore[attr-defined]
        assert [len(t) for t in sink.got] == [5]  # no max size: the whole batch goes
        await proc.shutdown()

    asyncio.run(main())


def test_config_validation() -> None:
    for bad in ({"send_batch_size": 10, "send_batch_max_size": 5}, {"send_batch_size": -1}):
        try:
            BatchConfig(**bad)  # type: ignore[arg-type]
        except ValueError as exc:
            assert "send_batch" in str(exc)
        else:
            raise AssertionError(bad)
    assert factory.default_config()["send_batch_size"] == 8192
    assert factory.default_config()["timeout"] == 0.2
