"""The tail_sampling processor: `TailSampler` is the sans-IO core (spans in, decided traces out,
time passed in); `TailSamplingProcessor` is its shell (a once-a-second decision tick).

Spans are grouped by trace id and kept, as ResourceSpans fragments, from the trace's first span
for `decision_wait`; then the policies evaluate the trace (`drop` policies first) and their
answers are combined as the Collector does (`policies.combine`). At
most `num_traces` traces are held: the oldest is evicted (dropped undecided). The decision is
remembered for the same number of traces, so late spans of a decided trace follow it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans

from meshtrace.collector.component import ComponentID, Host, TracesConsumer
from meshtrace.collector.processors.base import TracesProcessor
from meshtrace.collector.processors.tail_sampling.config import TailSamplingConfig
from meshtrace.collector.processors.tail_sampling.policies import (
    Policy,
    TraceData,
    build_policy,
    decide,
    ordered,
)
from meshtrace.model import Traces
from meshtrace.model.traces import spans_in

log = logging.getLogger(__name__)


def fragments_by_trace(message: ExportTraceServiceRequest) -> dict[bytes, list[ResourceSpans]]:
    """Each trace's spans, under copies of their resource and scope."""
    out: dict[bytes, list[ResourceSpans]] = {}
    for rs in message.resource_spans:
        for ss in rs.scope_spans:
            groups: dict[bytes, list[object]] = {}
            for span in ss.spans:
                groups.setdefault(span.trace_id, []).append(span)
            for trace_id, spans in groups.items():
                fragment = ResourceSpans(resource=rs.resource, schema_url=rs.schema_url)
                fragment.scope_spans.add(scope=ss.scope, schema_url=ss.schema_url, spans=spans)
                out.setdefault(trace_id, []).append(fragment)
    return out


class TailSampler:
    def __init__(self, config: TailSamplingConfig, clock: Callable[[], float]) -> None:
        self.decision_wait = float(config.decision_wait)
        self.num_traces = config.num_traces
        self.sample_on_first_match = config.sample_on_first_match
        self.policies: list[Policy] = ordered(
            [build_policy(raw, f"policies[{i}]", clock) for i, raw in enumerate(config.policies)]
        )
        self.pending: OrderedDict[bytes, TraceData] = OrderedDict()  # in order of first arrival
        self.decided: OrderedDict[bytes, bool] = OrderedDict()
        self.evicted = 0

    def add(self, message: ExportTraceServiceRequest, now: float) -> list[ResourceSpans]:
        """Take a batch; the fragments to send now (late spans of traces already kept)."""
        forward: list[ResourceSpans] = []
        for trace_id, fragments in fragments_by_trace(message).items():
            decided = self.decided.get(trace_id)
            if decided is not None:
                if decided:
                    forward.extend(fragments)
                continue
            trace = self.pending.get(trace_id)
            if trace is None:
                trace = self.pending[trace_id] = TraceData(trace_id, now)
                if len(self.pending) > self.num_traces:
                    _, oldest = self.pending.popitem(last=False)
                    self.evicted += 1
                    log.warning(
                        "tail_sampling: num_traces reached, dropped %d undecided spans", oldest.span_count
                    )
            trace.fragments.extend(fragments)
            trace.span_count += spans_in(fragments)
        return forward

    def tick(self, now: float) -> list[ResourceSpans]:
        """Decide every trace whose decision_wait has passed; the fragments of those kept."""
        forward: list[ResourceSpans] = []
        while self.pending:
            trace = next(iter(self.pending.values()))
            if now - trace.arrived < self.decision_wait:
                break
            del self.pending[trace.trace_id]
            keep = decide(self.policies, trace, self.sample_on_first_match)
            self.decided[trace.trace_id] = keep
            if len(self.decided) > self.num_traces:
                self.decided.popitem(last=False)
            if keep:
                forward.extend(trace.fragments)
        return forward


class TailSamplingProcessor(TracesProcessor):
    TICK = 1.0  # the Collector decides once a second

    def __init__(
        self,
        id: ComponentID,
        config: TailSamplingConfig,
        next_consumer: TracesConsumer,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(id, next_consumer)
        self.clock = clock
        self.sampler = TailSampler(config, clock)
        self._task: asyncio.Task[None] | None = None

    async def start(self, host: Host) -> None:
        self._task = asyncio.create_task(self._run(), name=f"{self.id} decisions")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.TICK)
            await self.decide()

    async def decide(self) -> None:
        await self._send(self.sampler.tick(self.clock()))

    async def consume_traces(self, traces: Traces) -> None:
        self.items.incoming(len(traces))
        await self._send(self.sampler.add(traces.message(), self.clock()))

    async def _send(self, fragments: list[ResourceSpans]) -> None:
        if not fragments:
            return
        batch = Traces.from_message(ExportTraceServiceRequest(resource_spans=fragments))
        self.items.outgoing(len(batch))
        try:
            await self.next.consume_traces(batch)
        except Exception as exc:
            log.warning("%s: next consumer failed, %d spans dropped: %s", self.id, len(batch), exc)

    async def shutdown(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        # The Collector drops traces still waiting; deciding them early on what has arrived keeps
        # the promise that a clean shutdown delivers what was accepted (and the policies say keep).
        await self._send(self.sampler.tick(float("inf")))
