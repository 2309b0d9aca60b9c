"""Access log lines (`meshtrace/accesslog.py`): Istio's and Envoy's default formats, `-` for
what is not known, the start time, and recognising a line."""

from __future__ import annotations

import pytest

from meshtrace import accesslog
from meshtrace.accesslog import Entry

START = 1_795_321_670_786_123_456  # 2026-11-22T04:27:50.786123456Z


def _full() -> Entry:
    return Entry(
        start_ns=START, method="GET", path="/echo", protocol="HTTP/1.1", status=200, flags="-",
        details="via_upstream", bytes_received=0, bytes_sent=370, duration_ms=18, upstream_service_time="17",
        x_forwarded_for=None, user_agent="Python-urllib/3.11", request_id="fb01db3f",
        authority="backend:8080",
        upstream_host="127.0.0.9:42009", upstream_cluster="outbound|8080||backend.default.svc.cluster.local",
        downstream_local=("127.0.0.5", 34241), downstream_remote=("127.0.0.5", 44050), route_name="default",
    )  # fmt: skip


def test_istio_format() -> None:
    assert accesslog.istio_line(_full()) == (
        '[2026-11-22T04:27:50.786Z] "GET /echo HTTP/1.1" 200 - via_upstream - "-" 0 370 18 17 "-" '
        '"Python-urllib/3.11" "fb01db3f" "backend:8080" "127.0.0.9:42009" '
        "outbound|8080||backend.default.svc.cluster.local - 127.0.0.5:34241 127.0.0.5:44050 - default\n"
    )


def test_envoy_format() -> None:
    assert accesslog.envoy_line(_full()) == (
        '[2026-11-22T04:27:50.786Z] "GET /echo HTTP/1.1" 200 - 0 370 18 17 "-" '
        '"Python-urllib/3.11" "fb01db3f" "backend:8080" "127.0.0.9:42009"\n'
    )


def test_unknown_fields_are_dashes() -> None:
    entry = Entry(START, None, None, "HTTP/1.1", 400, "-", "http1.codec_error", 0, 0, 0)
    assert accesslog.istio_line(entry) == (
        '[2026-11-22T04:27:50.786Z] "- - HTTP/1.1" 400 - http1.codec_error - "-" 0 0 0 - '
        '"-" "-" "-" "-" "-" - - - - - -\n'
    )


@pytest.mark.parametrize(
    ("ns", "text"),
    [(0, "1970-01-01T00:00:00.000Z"), (999_999, "1970-01-01T00:00:00.000Z"),
     (1_000_000, "1970-01-01T00:00:00.001Z"), (86_399_999_999_999, "1970-01-01T23:59:59.999Z")],
)  # fmt: skip
def test_start_time(ns: int, text: str) -> None:
    assert accesslog.start_time(ns) == text


@pytest.mark.parametrize(
    ("line", "is_log"),
    [(accesslog.istio_line(_full()), True), (accesslog.envoy_line(_full()), True),
     ("[2026-11-22 19:47] warning: x", False), ("error: [2026-11-22T04:27:50.786Z] \"GET", False),
     ("", False)],
)  # fmt: skip
def test_recognised(line: str, is_log: bool) -> None:
    assert accesslog.is_access_log_line(line) is is_log


def test_a_tcp_connection_has_no_request() -> None:
    entry = accesslog.tcp_entry(0, 512, 516, 7)
    entry.upstream_host, entry.upstream_cluster = (
        "10.0.0.2:5432",
        "outbound|5432||db.default.svc.cluster.local",
    )
    line = accesslog.istio_line(entry)
    assert line.startswith(
        '[1970-01-01T00:00:00.000Z] "- - -" 0 - - - "-" 512 516 7 - "-" "-" "-" "-" "10.0.0.2:5432" '
    )
    assert accesslog.is_access_log_line(line)
