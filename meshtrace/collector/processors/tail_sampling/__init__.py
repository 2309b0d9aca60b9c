"""The `tail_sampling` processor: holds each trace for `decision_wait`, then keeps it if any
policy says so (the place for "keep every trace with an error": docs/sampling.md)."""

from meshtrace.collector.processors.base import processor_factory
from meshtrace.collector.processors.tail_sampling.config import TailSamplingConfig
from meshtrace.collector.processors.tail_sampling.processor import TailSamplingProcessor

factory = processor_factory("tail_sampling", TailSamplingConfig, TailSamplingProcessor)
