"""The `batch` processor: gathers spans into batches by size or time, as encoded bytes."""

from meshtrace.collector.processors.base import ProcessorFactory
from meshtrace.collector.processors.batch.config import BatchConfig
from meshtrace.collector.processors.batch.processor import BatchProcessor

factory = ProcessorFactory("batch", BatchConfig, BatchProcessor)
