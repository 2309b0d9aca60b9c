"""Go durations (`meshtrace/durations.py`): Go's `time.ParseDuration` grammar and the three
readers' policies (Collector config, Istio mesh config, query parameters)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshtrace.durations import MAX_NS, collector_seconds, go_duration_ns, mesh_seconds


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("0", 0),
        ("7ns", 7),
        ("500us", 500_000),
        ("500µs", 500_000),  # U+00B5
        ("500μs", 500_000),  # U+03BC: Go accepts it too
        ("200ms", 200_000_000),
        ("1.2s", 1_200_000_000),
        (".5s", 500_000_000),
        ("1.s", 1_000_000_000),
        ("1m30s", 90 * 10**9),
        ("1h1m1s1ms", 3_661_001_000_000),
        ("1.5h", 5400 * 10**9),
        ("2562047h", 2562047 * 3600 * 10**9),  # the largest whole number of hours int64 holds
    ],
)
def test_go_durations(text: str, ns: int) -> None:
    assert go_duration_ns(text) == ns


@pytest.mark.parametrize(
    "bad", ["", "5", "s", ".s", "5 s", "5S", "1d", "-5s", "+5s", "1.5.5s", "5s ", "2562048h", "1e3s"]
)
def test_not_go_durations(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        go_duration_ns(bad)


@given(st.text(max_size=20))
def test_any_text_reads_or_is_refused(text: str) -> None:
    try:
        ns = go_duration_ns(text)
    except ValueError:
        return
    assert 0 <= ns <= MAX_NS


@pytest.mark.parametrize(("value", "seconds"), [("5s", 5.0), (" 5s ", 5.0), ("", 0.0), (0, 0.0), ("0", 0.0)])
def test_collector_policy(value: Any, seconds: float) -> None:
    assert collector_seconds(value) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", [5, 1.5, True, None, [1], "5"])
def test_collector_policy_refuses(bad: Any) -> None:
    with pytest.raises(ValueError):
        collector_seconds(bad)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("3s", 3.0), ("500ms", 0.5), (2, 2.0), (0.5, 0.5), ("x", None), (None, None), (True, None), ("", None)],
)
def test_mesh_policy(value: Any, seconds: float | None) -> None:
    assert mesh_seconds(value) == seconds
