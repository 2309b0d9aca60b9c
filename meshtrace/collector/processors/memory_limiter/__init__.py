"""The `memory_limiter` processor: refuses data (retryable) while memory is over the soft limit."""

from meshtrace.collector.processors.base import ProcessorFactory
from meshtrace.collector.processors.memory_limiter.config import MemoryLimiterConfig
from meshtrace.collector.processors.memory_limiter.processor import MemoryLimiterProcessor

factory = ProcessorFactory("memory_limiter", MemoryLimiterConfig, MemoryLimiterProcessor)
