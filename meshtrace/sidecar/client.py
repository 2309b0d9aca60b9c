"""A minimal HTTP/1.1 client over the proxy's own connection pool, for the off-request-path
traffic (span export over OTLP/HTTP and Zipkin, the control plane): no aiohttp import in the
sidecar process."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from urllib.parse import urlsplit

from meshtrace.sidecar.backend import Stream
from meshtrace.sidecar.conn import Pool
from meshtrace.sidecar.http1 import ResponseHead, encode_head


def split_url(url: str, schemes: tuple[str, ...] = ("http",)) -> tuple[str, int, str]:
    """(host, port, path) of a URL of one of `schemes`; a bare `host:port` is accepted as http."""
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    if parts.scheme not in schemes:
        raise ValueError(f"{url}: only {' or '.join(s + '://' for s in schemes)} is supported")
    host = parts.hostname or "127.0.0.1"
    return host, parts.port or (443 if parts.scheme == "https" else 80), parts.path or "/"


async def request(
    pool: Pool,
    host: str,
    port: int,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
    tls: ssl.SSLContext | None = None,
    check: Callable[[Stream], None] | None = None,
) -> tuple[ResponseHead, bytes]:
    """(response head, body), over TLS with `tls` (`check` vets the server).
    Raises ConnectFailure, PeerClosed, HttpError or TimeoutError."""
    async with asyncio.timeout(timeout):
        up = await pool.acquire(host, port, tls, check)
        ok = False
        try:
            hdrs = [("host", f"{host}:{port}"), ("content-length", str(len(body)))]
            hdrs += list((headers or {}).items())
            up.writer.write(encode_head(f"{method} {path} HTTP/1.1", hdrs) + body)
            head = await up.response_head(method == "HEAD")
            chunks = []
            while (chunk := await up.body_chunk()) is not None:
                chunks.append(chunk)
            ok = head.keep_alive and not up.until_close
            return head, b"".join(chunks)
        finally:
            pool.release(up, ok)
