"""The `probabilistic_sampler` processor: keeps a percentage of traces, the same decision on every
span of a trace and on every collector (decisions in `sampling`)."""

from meshtrace.collector.processors.base import processor_factory
from meshtrace.collector.processors.probabilistic_sampler.config import ProbabilisticSamplerConfig
from meshtrace.collector.processors.probabilistic_sampler.processor import ProbabilisticSampler

factory = processor_factory("probabilistic_sampler", ProbabilisticSamplerConfig, ProbabilisticSampler)
