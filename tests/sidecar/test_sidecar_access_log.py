"""The sidecar's access log lines, read from a real sidecar's stdout: Istio's default format
(meshtrace/accesslog.py) for a proxied request and for a request that failed to parse."""

from __future__ import annotations

import re
from typing import Any

from sidecar_helpers import raw, via_proxy

from meshtrace.accesslog import is_access_log_line

# Istio's default format, field by field: start, "method path protocol", code, flags, details,
# termination, "transport failure", received, sent, duration, upstream time, "xff", "agent",
# "request id", "authority", "upstream host", cluster, upstream local, downstream local, downstream
# remote, server name, route.
Q = r'"[^"]*"'
W = r"\S+"
ISTIO = re.compile(
    rf"\[\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{{3}}Z\] {Q} \d{{3}} {W} {W} {W} {Q} \d+ \d+ \d+ {W} "
    rf"{Q} {Q} {Q} {Q} {Q} {W} {W} {W} {W} {W} {W}"
)


def test_access_log_lines_are_in_istios_format(mesh_factory: Any) -> None:
    mesh = mesh_factory(0.0)
    status, _, _ = via_proxy(mesh, "http://backend:8080/echo")
    assert status == 200
    line = mesh.frontend.wait_for_line('"GET /echo HTTP/1.1" 200').strip()
    assert ISTIO.fullmatch(line) and is_access_log_line(line), line
    assert " via_upstream " in line and '"backend:8080"' in line and "outbound|8080||backend." in line
    assert raw(mesh.backend.address("inbound"), b"GARBAGE\r\n\r\n").startswith(b"HTTP/1.1 400")
    bad = mesh.backend.wait_for_line('"- - HTTP/1.1" 400').strip()
    assert ISTIO.fullmatch(bad) and bad.endswith(" - -"), bad
