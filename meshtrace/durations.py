"""Go durations ("200ms", "1m30s"), as the Collector's config, Istio's mesh config and Jaeger's
query parameters write them: one grammar, read by Go's `time.ParseDuration` rules.

The grammar: one or more `<number><unit>` parts, a number being digits with an optional
fraction (`1.5`, `.5`, `1.`), a unit one of `ns`, `us`, `µs` (U+00B5), `μs` (U+03BC), `ms`, `s`,
`m`, `h`; "0" alone is zero; the value must fit int64 nanoseconds (about 292 years). Go also
accepts a leading sign; meshtrace does not, since every duration it reads is a length of time
(a timeout, an interval, a search bound) where a negative one has no meaning.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from typing import Any

MAX_NS = 2**63 - 1  # Go's time.Duration is an int64 of nanoseconds
_UNIT_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,  # U+00B5 micro sign
    "μs": 1_000,  # U+03BC Greek mu: Go accepts both spellings
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
# A number, then the unit: everything up to the next digit or dot (Go reads the unit that way).
_PART = re.compile(r"(\d+\.?\d*|\.\d+)([^\d.]+)")


def go_duration_ns(text: str) -> int:
    """Nanoseconds from a Go duration; ValueError naming the text when it is not one."""
    if text == "0":
        return 0
    pos, total = 0, Fraction(0)
    while pos < len(text):
        match = _PART.match(text, pos)
        unit = _UNIT_NS.get(match[2]) if match else None
        if match is None or unit is None:
            raise ValueError(f"invalid duration {text!r}: expected e.g. 200ms, 5s, 1m30s")
        total += Fraction(match[1]) * unit
        pos = match.end()
    if not text:
        raise ValueError("invalid duration '': expected e.g. 200ms, 5s, 1m30s")
    if total > MAX_NS:
        raise ValueError(f"invalid duration {text!r}: longer than {MAX_NS}ns")
    return math.floor(total)


def collector_seconds(value: Any) -> float:
    """Seconds from a duration in a Collector config. A bare 0 (or "") is zero; another bare
    number is refused: the Collector would read it as nanoseconds, which is never what was meant."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"expected a duration like 5s, got {value!r}")
    if isinstance(value, int | float):
        if value == 0:
            return 0.0
        raise ValueError(f"duration {value!r} needs a unit, e.g. {value}s")
    text = value.strip()
    return go_duration_ns(text) / 1e9 if text else 0.0


def mesh_seconds(value: Any) -> float | None:
    """Seconds from a protobuf duration in Istio's mesh config ("3s", "500ms", "1m30s"), or a
    number of seconds; None when it is neither (the caller then keeps Istio's default)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return go_duration_ns(str(value).strip()) / 1e9
    except ValueError:
        return None
