"""The probabilistic_sampler's config, with the Collector's defaults."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from meshtrace.collector.processors.probabilistic_sampler.sampling import (
    MIN_PROBABILITY,
    NUM_HEX_DIGITS,
    float32,
)


@dataclass
class ProbabilisticSamplerConfig:
    sampling_percentage: float = 0.0
    hash_seed: int = 0
    # "" = the Collector's default: proportional, or hash_seed when a non-zero hash_seed is set.
    mode: Literal["", "proportional", "equalizing", "hash_seed"] = ""
    sampling_precision: int = 4
    fail_closed: bool = True
    attribute_source: Literal["traceID", "record"] = "traceID"
    from_attribute: str = ""
    sampling_priority: str = ""

    def __post_init__(self) -> None:
        # The Collector's checks, on the float32 it declares the percentage as.
        ratio = float32(self.sampling_percentage) / 100
        if math.isnan(ratio) or math.isinf(ratio):
            raise ValueError(f"sampling_percentage is invalid: {self.sampling_percentage}")
        if ratio < 0:
            raise ValueError(f"sampling_percentage must not be negative, got {self.sampling_percentage}")
        if 0 < ratio < MIN_PROBABILITY:
            raise ValueError(
                f"sampling_percentage {self.sampling_percentage} is too small: the smallest is 2^-56 * 100"
            )
        if not 0 <= self.hash_seed <= 0xFFFFFFFF:
            raise ValueError("hash_seed must be a uint32")
        if not 1 <= self.sampling_precision <= NUM_HEX_DIGITS:
            raise ValueError(f"sampling_precision must be 1-{NUM_HEX_DIGITS}, got {self.sampling_precision}")

    @property
    def effective_mode(self) -> str:
        if self.mode:
            return self.mode
        return "hash_seed" if self.hash_seed else "proportional"
