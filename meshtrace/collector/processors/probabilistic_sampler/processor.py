"""The probabilistic_sampler processor: decodes each batch, keeps the spans whose trace passes."""

from __future__ import annotations

import logging
import re

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from meshtrace.collector.component import ComponentID, TracesConsumer
from meshtrace.collector.processors.base import TracesProcessor
from meshtrace.collector.processors.probabilistic_sampler import sampling
from meshtrace.collector.processors.probabilistic_sampler.config import ProbabilisticSamplerConfig
from meshtrace.model import Traces

log = logging.getLogger(__name__)

PRIORITY_ATTRIBUTE = "sampling.priority"
PRIORITY_BYTES = PRIORITY_ATTRIBUTE.encode()
# What Go's strconv.ParseFloat reads and Python's float() also would: no spaces or "_" separators.
_GO_FLOAT = re.compile(r"[^\s_]+")


def _priority_of(number: float) -> sampling.Priority:
    if number == 0:
        return sampling.Priority.DO_NOT_SAMPLE
    return sampling.Priority.MUST_SAMPLE if number > 0 else sampling.Priority.DEFER  # negative and NaN defer


def sampling_priority(attributes: list[KeyValue]) -> sampling.Priority:
    """The OpenTracing `sampling.priority` attribute: a number, or a string Go's ParseFloat reads."""
    for kv in attributes:
        if kv.key == PRIORITY_ATTRIBUTE:
            value = kv.value
            which = value.WhichOneof("value")
            if which in ("int_value", "double_value"):
                return _priority_of(float(getattr(value, which)))
            if which == "string_value" and _GO_FLOAT.fullmatch(value.string_value):
                try:
                    return _priority_of(float(value.string_value))
                except ValueError:
                    return sampling.Priority.DEFER
            return sampling.Priority.DEFER
    return sampling.Priority.DEFER


def prune_empty(message: ExportTraceServiceRequest) -> None:
    """Drop scope and resource entries left without spans."""
    for rs in message.resource_spans:
        kept_scopes = [ss for ss in rs.scope_spans if ss.spans]
        if len(kept_scopes) != len(rs.scope_spans):
            del rs.scope_spans[:]
            rs.scope_spans.extend(kept_scopes)
    kept_resources = [rs for rs in message.resource_spans if rs.scope_spans]
    if len(kept_resources) != len(message.resource_spans):
        del message.resource_spans[:]
        message.resource_spans.extend(kept_resources)


class SpanSampler:
    """The per-span decision of one configuration (pure: no IO, no clock)."""

    def __init__(self, config: ProbabilisticSamplerConfig) -> None:
        self.fail_closed = config.fail_closed
        self.sampler = sampling.Sampler.build(
            config.effective_mode, config.sampling_percentage, config.sampling_precision, config.hash_seed
        )

    def keep(self, span: Span, has_priority: bool = True) -> bool:
        """Decide for `span`, updating its tracestate when kept.

        `has_priority` False skips looking for `sampling.priority` (the batch does not contain it).
        """
        priority = sampling_priority(list(span.attributes)) if has_priority else sampling.Priority.DEFER
        keep, tracestate, problem = self.sampler.decide(
            span.trace_id, span.trace_state, priority, self.fail_closed
        )
        if problem is not None:
            log.debug("span %s: %s", span.span_id.hex(), problem)
        if keep:
            span.trace_state = tracestate
        return keep


class ProbabilisticSampler(TracesProcessor):
    def __init__(
        self, id: ComponentID, config: ProbabilisticSamplerConfig, next_consumer: TracesConsumer
    ) -> None:
        super().__init__(id, next_consumer)
        self.sampler = SpanSampler(config)

    async def consume_traces(self, traces: Traces) -> None:
        # Reading every span's attributes is the costly part; most batches carry no priority.
        has_priority = PRIORITY_BYTES in traces.encoded()
        message = traces.message()
        incoming = kept = 0
        for rs in message.resource_spans:
            for ss in rs.scope_spans:
                spans = [s for s in ss.spans if self.sampler.keep(s, has_priority)]
                incoming += len(ss.spans)
                kept += len(spans)
                if len(spans) != len(ss.spans):
                    del ss.spans[:]
                    ss.spans.extend(spans)
        prune_empty(message)
        self.items.incoming(incoming)
        traces.changed()
        if kept:
            self.items.outgoing(kept)
            await self.next.consume_traces(traces)
