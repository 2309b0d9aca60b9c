"""The `batch` processor: gathers spans into batches by size or time, as encoded bytes."""

from meshtrace.collector.processors.base import processor_factory
from meshtrace.collector.processors.batch.config import BatchConfig
from meshtrace.collector.processors.batch.processor import BatchProcessor

factory = processor_factory("batch", BatchConfig, BatchProcessor)
