"""A minimal HTTP/1.1 client over the proxy's own connection pool, for the off-request-path
traffic (span export over OTLP/HTTP and Zipkin, the control plane): no aiohttp import in the
sidecar process."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from meshtrace.sidecar.conn import Pool
from meshtrace.sidecar.http1 import ResponseHead, encode_head


def split_url(url: str) -> tuple[str, int, str]:
    """(host, port, path) of an http:// URL; a bare `host:port` is accepted."""
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise ValueError(f"{url}: only http:// is supported")
    host = parts.hostname or "127.0.0.1"
    return host, parts.port or 80, parts.path or "/"


async def request(
    pool: Pool,
    host: str,
    port: int,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, bytes]:
    """(status, body). Raises ConnectFailure, PeerClosed, HttpError or TimeoutError."""
    head, answer = await exchange(pool, host, port, method, path, body, headers, timeout)
    return head.status, answer


async def exchange(
    pool: Pool,
    host: str,
    port: int,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[ResponseHead, bytes]:
    """(response head, body), for callers that read the answer's headers; raises as `request`."""
    async with asyncio.timeout(timeout):
        up = await pool.acquire(host, port)
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
