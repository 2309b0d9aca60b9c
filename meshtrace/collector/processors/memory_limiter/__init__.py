"""The `memory_limiter` processor: refuses data (retryable) while memory is over the soft limit."""

from meshtrace.collector.processors.base import processor_factory
from meshtrace.collector.processors.memory_limiter.config import MemoryLimiterConfig
from meshtrace.collector.processors.memory_limiter.processor import MemoryLimiterProcessor

factory = processor_factory("memory_limiter", MemoryLimiterConfig, MemoryLimiterProcessor)
