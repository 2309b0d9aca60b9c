"""The memory_limiter's config, with the Collector's defaults and checks (check_interval and a
limit have no usable default: a config must set them)."""

from __future__ import annotations

from dataclasses import dataclass

from meshtrace.collector.schema import Duration

NO_DURATION = Duration(0)
SOFT_GC_INTERVAL = Duration(10)


@dataclass
class MemoryLimiterConfig:
    check_interval: Duration = NO_DURATION
    limit_mib: int = 0
    spike_limit_mib: int = 0  # 0: 20% of the limit
    limit_percentage: int = 0  # of the total memory (the cgroup's limit when there is one)
    spike_limit_percentage: int = 0
    min_gc_interval_when_soft_limited: Duration = SOFT_GC_INTERVAL
    min_gc_interval_when_hard_limited: Duration = NO_DURATION

    def __post_init__(self) -> None:
        if self.check_interval <= 0:
            raise ValueError("check_interval must be greater than zero")
        if self.limit_mib <= 0 and self.limit_percentage <= 0:
            raise ValueError("limit_mib or limit_percentage must be greater than zero")
        if self.limit_mib < 0 or self.spike_limit_mib < 0:
            raise ValueError("limit_mib and spike_limit_mib must not be negative")
        if self.limit_mib and self.spike_limit_mib >= self.limit_mib:
            raise ValueError("spike_limit_mib must be smaller than limit_mib")
        if not (0 <= self.limit_percentage <= 100 and 0 <= self.spike_limit_percentage <= 100):
            raise ValueError("limit_percentage and spike_limit_percentage must be between 0 and 100")
        if self.limit_percentage and self.spike_limit_percentage >= self.limit_percentage:
            raise ValueError("spike_limit_percentage must be smaller than limit_percentage")
