"""Failure and latency injection, decided per request from query parameters and the environment
(sans-IO: the caller passes the random draw), so error traces and tail latency exist to look at.

- `?fail=R` / FAIL_RATE=R: the database query fails with probability R (0..1; `1`/`true` = always).
- `?slow_ms=N` / SLOW_QUERY_MS=N: the database query takes N ms longer.
A query parameter overrides the variable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from meshtrace.sdk.settings import parse_bounded

FAIL_PARAM = "fail"
SLOW_PARAM = "slow_ms"
FAIL_ENV = "FAIL_RATE"
SLOW_ENV = "SLOW_QUERY_MS"
# The frontend passes these on to the backend, so a fault can be asked for at the front door.
PARAMS = (FAIL_PARAM, SLOW_PARAM)
MAX_SLOW_MS = 60_000


class FaultError(ValueError):
    """A fault parameter or variable has a value that is not understood; names the field."""


@dataclass(frozen=True)
class Faults:
    fail: bool = False
    slow_ms: int = 0


def parse_rate(name: str, value: str) -> float:
    text = value.strip().lower()
    if text in ("true", "yes"):
        return 1.0
    if text in ("false", "no", ""):
        return 0.0
    return parse_bounded(name, value, float, 0.0, 1.0, "a rate between 0 and 1 (or true/false)", FaultError)


def parse_slow_ms(name: str, value: str) -> int:
    if not value.strip():
        return 0
    return parse_bounded(name, value, int, 0, MAX_SLOW_MS, f"milliseconds, 0 to {MAX_SLOW_MS}", FaultError)


def decide(query: Mapping[str, str], env: Mapping[str, str], draw: float) -> Faults:
    """The faults for one request; `draw` is a uniform random number in [0, 1)."""
    if FAIL_PARAM in query:
        rate = parse_rate(FAIL_PARAM, query[FAIL_PARAM])
    else:
        rate = parse_rate(FAIL_ENV, env.get(FAIL_ENV, ""))
    if SLOW_PARAM in query:
        slow = parse_slow_ms(SLOW_PARAM, query[SLOW_PARAM])
    else:
        slow = parse_slow_ms(SLOW_ENV, env.get(SLOW_ENV, ""))
    return Faults(fail=draw < rate, slow_ms=slow)
