"""Access log lines in Istio's default format (what the sidecar writes) and Envoy's default
format, and how to recognise one (the run folder keeps them off the terminal).

Istio's default text format (docs/upstream-behaviour.md §2c):

    [%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE%
    %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS%
    "%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION%
    %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%"
    "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW%
    %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS%
    %REQUESTED_SERVER_NAME% %ROUTE_NAME%

(one line). Envoy's own default keeps the first part up to `%BYTES_RECEIVED%` without the
details, termination and transport-failure fields, and ends at `"%UPSTREAM_HOST%"`. A value that
is not known is written `-`; START_TIME is UTC with milliseconds (`2026-11-26T04:27:50.786Z`).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

NONE = "-"
# A line in either format starts with the request's start time in brackets, then the quoted request.
LINE_START = re.compile(r'^\[\d{4}-\d\d-\d\dT[^\]]*\] "')


@dataclass(slots=True)
class Entry:
    """One request's fields as the formats name them; None is written `-`."""

    start_ns: int
    method: str | None
    path: str | None
    protocol: str  # "HTTP/1.1"
    status: int
    flags: str  # %RESPONSE_FLAGS%, "-" when none
    details: str  # %RESPONSE_CODE_DETAILS%, spaces already replaced by underscores
    bytes_received: int
    bytes_sent: int
    duration_ms: int
    upstream_service_time: str | None = None  # ms, as the x-envoy-upstream-service-time header
    x_forwarded_for: str | None = None
    user_agent: str | None = None
    request_id: str | None = None
    authority: str | None = None
    upstream_host: str | None = None
    upstream_cluster: str | None = None
    downstream_local: tuple[str, int] | None = None  # (host, port)
    downstream_remote: tuple[str, int] | None = None
    route_name: str | None = None


def tcp_entry(start_ns: int, bytes_received: int, bytes_sent: int, duration_ms: int) -> Entry:
    """A TCP connection's entry: no request, so method, path and protocol are `-` and the
    response code 0 (`"- - -" 0 - - -`, as Envoy's TCP proxy logs with Istio's format)."""
    return Entry(
        start_ns=start_ns,
        method=None,
        path=None,
        protocol=NONE,
        status=0,
        flags=NONE,
        details=NONE,
        bytes_received=bytes_received,
        bytes_sent=bytes_sent,
        duration_ms=duration_ms,
    )


def start_time(ns: int) -> str:
    """%START_TIME%: `YYYY-MM-DDTHH:MM:SS.mmmZ`, UTC."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 1_000_000_000))
    return f"{stamp}.{(ns // 1_000_000) % 1000:03d}Z"


def _v(value: object) -> str:
    return NONE if value is None else str(value)


def _address(address: tuple[str, int] | None) -> str:
    return NONE if address is None else f"{address[0]}:{address[1]}"


def _head(e: Entry) -> str:
    return f'[{start_time(e.start_ns)}] "{_v(e.method)} {_v(e.path)} {e.protocol}" {e.status} {e.flags}'


def _peers(e: Entry) -> str:
    return (
        f'"{_v(e.x_forwarded_for)}" "{_v(e.user_agent)}" "{_v(e.request_id)}" "{_v(e.authority)}" '
        f'"{_v(e.upstream_host)}"'
    )


def istio_line(e: Entry) -> str:
    """The line in Istio's default format, newline-terminated. Connection termination details,
    the upstream transport failure reason, the upstream local address and the requested server
    name are not known to the sidecar and are written `-`."""
    return (
        f'{_head(e)} {e.details} {NONE} "{NONE}" {e.bytes_received} {e.bytes_sent} {e.duration_ms} '
        f"{_v(e.upstream_service_time)} {_peers(e)} {_v(e.upstream_cluster)} {NONE} "
        f"{_address(e.downstream_local)} {_address(e.downstream_remote)} {NONE} {_v(e.route_name)}\n"
    )


def envoy_line(e: Entry) -> str:
    """The line in Envoy's default format, newline-terminated."""
    return (
        f"{_head(e)} {e.bytes_received} {e.bytes_sent} {e.duration_ms} "
        f"{_v(e.upstream_service_time)} {_peers(e)}\n"
    )


def is_access_log_line(line: str) -> bool:
    return LINE_START.match(line) is not None
