"""The shared Prometheus text writer (`meshtrace/prometheus.py`): escaping, label sets, headers
and both value spellings, checked against prometheus_client's parser."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from meshtrace import prometheus as prom


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("plain", "plain"),
        ('say "hi"', 'say \\"hi\\"'),
        ("a\\b", "a\\\\b"),
        ("two\nlines", "two\\nlines"),
        ('\\"\n', '\\\\\\"\\n'),
        ("", ""),
        ("ünïcode", "ünïcode"),
    ],
)
def test_label_value_escaping(raw: str, escaped: str) -> None:
    assert prom.escape_label_value(raw) == escaped
    line = prom.sample("m", prom.label_set([("k", raw)]), "1")
    (family,) = text_string_to_metric_families(line + "\n")
    assert family.samples[0].labels == {"k": raw}


@pytest.mark.parametrize(
    ("labels", "text"),
    [([], ""), ([("a", "1")], '{a="1"}'), ([("b", "2"), ("a", "1")], '{b="2",a="1"}')],
)
def test_label_set(labels: list[tuple[str, str]], text: str) -> None:
    assert prom.label_set(labels) == text


@pytest.mark.parametrize(
    ("help_text", "lines"),
    [
        (None, ["# TYPE m counter"]),
        ("Total.", ["# HELP m Total.", "# TYPE m counter"]),
        ('a\\b "q"\nc', ['# HELP m a\\\\b "q"\\nc', "# TYPE m counter"]),
    ],
)
def test_family_header(help_text: str | None, lines: list[str]) -> None:
    assert prom.family_header("m", "counter", help_text) == lines


@pytest.mark.parametrize(
    ("value", "envoy", "go"),
    [
        (0, "0", "0.0"),
        (3, "3", "3.0"),
        (2.5, "2.5", "2.5"),
        (1_000_000.0, "1000000", "1e+06"),
        (0.1, "0.1", "0.1"),
        (float("inf"), None, "+Inf"),
        (float("nan"), None, "NaN"),
    ],
)
def test_value_spellings(value: float, envoy: str | None, go: str) -> None:
    if envoy is not None:
        assert prom.envoy_value(value) == envoy
    assert prom.go_value(value) == go


def test_exposition_round_trips_through_the_parser() -> None:
    lines = [
        *prom.family_header("req_total", "counter", "Requests."),
        prom.sample("req_total", prom.label_set([("code", "200")]), "3"),
        *prom.family_header("up", "gauge"),
        prom.sample("up", "", prom.go_value(1)),
    ]
    body = prom.exposition(lines)
    assert body.endswith(b"\n") and not body.endswith(b"\n\n")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    assert families["req"].samples[0].value == 3 and families["up"].samples[0].value == 1
