"""What the sidecar does with a Service port's protocol (the config document's `protocol`, resolved
as istiod does): HTTP-class ports go through the HTTP path, TCP-class ports are proxied as opaque
bytes, `auto` is detected from the connection's first bytes (Envoy's HTTP inspector). Sans-IO."""

from __future__ import annotations

import re
from typing import Final, Literal

# Istio's Instance.IsHTTP and Instance.IsTCP, in the document's lowercase words. mongo, redis and
# mysql are TCP: Istio's filters for them are off unless istiod is told otherwise.
HTTP_PROTOCOLS: Final = frozenset({"http", "http2", "http_proxy", "grpc", "grpc-web"})
TCP_PROTOCOLS: Final = frozenset({"tcp", "https", "tls", "mongo", "redis", "mysql"})
AUTO: Final = "auto"
UDP: Final = "udp"  # Istio does not proxy UDP

Handling = Literal["http", "tcp", "detect", "none"]

H2_PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# an HTTP/1.x request line as far as it has arrived: a method token, a space, then the target
_HTTP1_START: Final = re.compile(rb"^[A-Z]{1,16}( |$)")


def handling(protocol: str) -> Handling:
    """How a connection to a port of this protocol is proxied."""
    if protocol in HTTP_PROTOCOLS:
        return "http"
    if protocol in TCP_PROTOCOLS:
        return "tcp"
    if protocol == UDP:
        return "none"
    return "detect"


def detected(first: bytes) -> bool:
    """Whether the first bytes decide the protocol: the whole HTTP/2 preface, or bytes that have
    already left it (a short HTTP/1.0 request need not wait for more)."""
    return len(first) >= len(H2_PREFACE) or not H2_PREFACE.startswith(first)


def looks_like_http(first: bytes) -> bool:
    """Envoy's HTTP inspector on the first bytes a client sent: the HTTP/2 preface (or its
    start), or an HTTP/1.x request line's method; anything else is TCP."""
    if not first:
        return False
    n = min(len(first), len(H2_PREFACE))
    if first[:n] == H2_PREFACE[:n]:
        return True
    return _HTTP1_START.match(first) is not None
