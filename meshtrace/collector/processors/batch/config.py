"""The batch processor's config, with the Collector's defaults."""

from __future__ import annotations

from dataclasses import dataclass, field

from meshtrace.collector.schema import Duration

DEFAULT_TIMEOUT = Duration(0.2)


@dataclass
class BatchConfig:
    send_batch_size: int = 8192  # a batch this large is sent at once (0: only the timeout sends)
    timeout: Duration = DEFAULT_TIMEOUT  # a non-empty batch is sent this long after its first span
    send_batch_max_size: int = 0  # larger batches are split (0: no cap)
    metadata_keys: list[str] = field(default_factory=list)
    metadata_cardinality_limit: int = 1000

    def __post_init__(self) -> None:
        if self.send_batch_size < 0 or self.send_batch_max_size < 0:
            raise ValueError("send_batch_size and send_batch_max_size must not be negative")
        if self.send_batch_max_size and self.send_batch_max_size < self.send_batch_size:
            raise ValueError("send_batch_max_size must be greater or equal to send_batch_size")
        if self.timeout < 0:
            raise ValueError("timeout must not be negative")
        if self.metadata_keys:
            raise ValueError("metadata_keys (a batcher per client metadata value) is not supported")
