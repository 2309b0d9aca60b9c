"""Read an HTTP request body with a size limit that holds after decompression.

Every endpoint that takes a body (the collector's OTLP/HTTP and Zipkin receivers, the query's
`/api/import`) reads it here, with aiohttp's own decompression switched off
(`meshtrace.collector.httpserve.serve`): the body is inflated chunk by chunk with a cap on the
output, so a small gzip bomb costs at most `limit` bytes, never the size it unpacks to.

Content-Encoding, as the Collector's confighttp: `gzip` (and `x-gzip`), `deflate` and `zlib` (zlib
framing; `deflate` also accepts raw deflate, which some clients send), or none/`identity`.
zstd, snappy, lz4 and br would need new dependencies: they are answered 415 naming what is
supported (the Collector supports them, and answers 400 for codings it does not know).
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable, Iterator

from aiohttp import web

SUPPORTED = ("gzip", "deflate", "zlib")
_GZIP = 16 + zlib.MAX_WBITS
_ZLIB = zlib.MAX_WBITS
_RAW = -zlib.MAX_WBITS
# Output per decompression call: ~3 ms of zlib, after which the event loop gets a turn (a 62 KiB
# body that inflates to 12 MB took one 30 ms call).
STEP = 1 << 20


class BodyError(Exception):
    """The answer for a body that cannot be read: status and a message for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class BodyRefused(BodyError):
    """`reserve` said no: the server has too many request bytes in flight (retry later)."""

    def __init__(self, message: str) -> None:
        super().__init__(429, message)


def _wbits(encoding: str) -> int | None:
    """zlib's window bits for a Content-Encoding; None for no compression; BodyError if unknown."""
    coding = encoding.strip().lower()
    if coding in ("", "identity"):
        return None
    if coding in ("gzip", "x-gzip"):
        return _GZIP
    if coding in ("deflate", "zlib"):
        return _ZLIB
    raise BodyError(
        415, f"unsupported Content-Encoding {encoding!r}, supported: [{', '.join(SUPPORTED)}, identity]"
    )


def _is_zlib_header(head: bytes) -> bool:
    """RFC 1950: CM = 8 and the two header bytes a multiple of 31."""
    return len(head) >= 2 and head[0] & 0x0F == 8 and (head[0] << 8 | head[1]) % 31 == 0


class Inflater:
    """Sans-IO streaming decompression with a cap on the output (BodyError 413 over `limit`)."""

    def __init__(self, encoding: str, limit: int) -> None:
        self.wbits = _wbits(encoding)
        self.encoding = encoding
        self._raw_fallback = encoding.strip().lower() == "deflate"
        self._head = b""
        self.limit = limit
        self.size = 0
        self._z: zlib._Decompress | None = None

    def _too_large(self) -> BodyError:
        what = "decompressed request body" if self.wbits is not None else "request body"
        return BodyError(413, f"{what} over the limit of {self.limit} bytes")

    def feed(self, data: bytes) -> Iterator[bytes]:
        """The decompressed bytes `data` adds, in pieces of at most STEP bytes."""
        if self.wbits is None:
            self.size += len(data)
            if self.size > self.limit:
                raise self._too_large()
            yield data
            return
        if self._z is None and self._raw_fallback:
            data, self._head = self._head + data, b""
            if len(data) < 2:  # zlib's header is two bytes: wait for both before choosing
                self._head = data
                return
        while data:
            if self._z is None:
                wbits = self.wbits
                if self._raw_fallback and not _is_zlib_header(data):
                    wbits = _RAW  # "deflate" sent as raw deflate, without zlib's header
                self._z = zlib.decompressobj(wbits)
            try:
                # At most one byte past the limit per call, so a bomb never inflates further.
                chunk = self._z.decompress(data, min(STEP, self.limit - self.size + 1))
            except zlib.error as exc:
                raise BodyError(400, f"cannot decompress the {self.encoding} body: {exc}") from None
            self.size += len(chunk)
            if self.size > self.limit:
                raise self._too_large()
            if chunk:
                yield chunk
            if self._z.unconsumed_tail:
                data = self._z.unconsumed_tail
            elif self._z.eof and self.wbits == _GZIP and self._z.unused_data:
                data = self._z.unused_data  # the next member of a multi-member gzip file
                self._z = None
            else:
                data = b""

    def finish(self) -> None:
        """BodyError 400 if the compressed stream stopped before its end."""
        if self.wbits is not None and (self._z is None or not self._z.eof):
            raise BodyError(400, f"cannot decompress the {self.encoding} body: truncated or empty")


async def read_body(request: web.Request, limit: int, reserve: Callable[[int], bool] | None = None) -> bytes:
    """The decompressed body, at most `limit` bytes on the wire and after decompression.

    `reserve(n)` is asked for the declared Content-Length before a byte is read (a refused client
    is held for no memory), then before each `n` decompressed bytes are kept (admission control
    on the bytes in flight); when it says no, BodyRefused. What was reserved is the caller's to
    release (meshtrace.collector.admission.Ticket does, on leaving its `with`).
    """
    if reserve is not None and not reserve(request.content_length or 0):
        raise BodyRefused("too many request bytes in flight, retry later")
    inflater = Inflater(request.headers.get("Content-Encoding", ""), limit)
    if request.content_length is not None and request.content_length > limit:
        raise BodyError(413, f"request body over the limit of {limit} bytes")
    chunks: list[bytes] = []
    wire = 0
    while True:
        data = await request.content.readany()
        if not data:
            break
        wire += len(data)
        if wire > limit:
            raise BodyError(413, f"request body over the limit of {limit} bytes")
        for chunk in inflater.feed(data):
            if reserve is not None and not reserve(len(chunk)):
                raise BodyRefused("too many request bytes in flight, retry later")
            chunks.append(chunk)
            if inflater.wbits is not None:
                await asyncio.sleep(0)
    inflater.finish()
    return b"".join(chunks)
