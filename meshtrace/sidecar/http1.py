"""HTTP/1.1 message parsing and framing (sans-IO): httptools (llhttp) does the byte parsing, this
module turns its callbacks into events and applies a proxy's rules (Envoy's answers):
request smuggling (Content-Length with Transfer-Encoding) and a second Host -> 400, a
transfer-coding other than chunked and protocol upgrades but WebSocket -> 501, headers over
60 KiB -> 431, hop-by-hop headers never forwarded. After a CONNECT or WebSocket upgrade head (or a
101 answer) the parser stops: `upgraded` is set and later bytes wait in `rest` for the tunnel.

Events a parser yields, in order (h11's, typed): a `RequestHead`/`ResponseHead`, `Data` body
chunks (already de-chunked), `EndOfMessage` when the message is complete, or an `HttpError` after
which nothing follows.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Final

import httptools

MAX_HEADERS_BYTES: Final = 60 * 1024  # Envoy's max_request_headers_kb default

# RFC 9110 7.6.1 plus the proxy-only ones clients send; never forwarded to the next hop.
HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

_NOT_FORWARDED: Final = HOP_BY_HOP | {"content-length"}

REASONS: Final = {
    100: "Continue",
    200: "OK",
    204: "No Content",
    304: "Not Modified",
    400: "Bad Request",
    404: "Not Found",
    408: "Request Timeout",
    413: "Payload Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class HttpError(Exception):
    """A request the proxy answers itself: `status` and a short reason for the body and the log."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass(slots=True)
class Head:
    """Common part of request and response heads. `headers` keeps the original names and order,
    `names` their lowercase forms (same order, lowered once while parsing); `index` maps lowercase
    names to values (repeated headers joined with ", ")."""

    headers: list[tuple[str, str]]
    index: dict[str, str]
    version: str
    keep_alive: bool
    chunked: bool
    content_length: int | None
    names: list[str]

    def get(self, name: str, default: str | None = None) -> str | None:
        return self.index.get(name, default)

    def forwardable(self, drop: frozenset[str] = _NOT_FORWARDED) -> list[tuple[str, str]]:
        """The headers without hop-by-hop ones (including those named in Connection), without
        Content-Length, which the sender sets from its own framing, and without `drop` (which
        must include HOP_BY_HOP and content-length)."""
        connection = self.index.get("connection")
        if connection:
            drop = drop | {t.strip().lower() for t in connection.split(",")}
        return [h for h, lk in zip(self.headers, self.names, strict=True) if lk not in drop]


@dataclass(slots=True)
class RequestHead(Head):
    method: str = "GET"
    target: str = "/"
    raw_size: int = 0  # bytes of the request line and headers, for request_size

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)


@dataclass(slots=True)
class ResponseHead(Head):
    status: int = 200
    reason: str = ""
    raw_size: int = 0


@dataclass(slots=True)
class Data:
    """A piece of a message body (de-chunked)."""

    data: bytes


@dataclass(slots=True, frozen=True)
class EndOfMessage:
    """The message is complete (its last body byte, or the end of a body-less head)."""


END_OF_MESSAGE: Final = EndOfMessage()  # one shared instance: it carries nothing

Event = RequestHead | ResponseHead | Data | EndOfMessage | HttpError


@dataclass(slots=True)
class _Building:
    url: list[bytes] = field(default_factory=list)
    headers: list[tuple[str, str]] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    index: dict[str, str] = field(default_factory=dict)
    size: int = 0


class _Parser:
    """Shared callback plumbing; subclasses make the head object."""

    _p: Any  # the httptools parser

    def __init__(self, max_header_bytes: int = MAX_HEADERS_BYTES) -> None:
        self.events: deque[Event] = deque()
        self.max_header_bytes = max_header_bytes
        self._b = _Building()
        self._in_head = False
        self._head_fed = 0
        self._error: HttpError | None = None
        self.failed = False
        self.upgraded = False  # CONNECT or Upgrade: what follows the head is the tunnel's
        self.rest: list[bytes] = []  # bytes after the upgrade, for the tunnel to take

    # -- httptools callbacks
    def on_message_begin(self) -> None:
        self._b = _Building()
        self._in_head = True
        self._head_fed = 0

    def on_url(self, url: bytes) -> None:
        self._b.url.append(url)
        self._b.size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        b = self._b
        b.size += len(name) + len(value) + 4
        if b.size > self.max_header_bytes:
            self._error = HttpError(431, "request headers too large")
            raise self._error
        key = name.decode("latin-1")
        val = value.decode("latin-1")
        b.headers.append((key, val))
        lower = key.lower()
        b.names.append(lower)
        old = b.index.get(lower)
        if old is None:
            b.index[lower] = val
            return
        if lower == "host":
            # RFC 9112 3.2: more than one Host line is a 400; proxies disagreeing on which one
            # counts is a routing bypass
            self._error = HttpError(400, "more than one Host header")
            raise self._error
        b.index[lower] = f"{old}, {val}"

    def on_headers_complete(self) -> None:
        self._in_head = False
        self.events.append(self._make_head())

    def on_body(self, body: bytes) -> None:
        if body:
            self.events.append(Data(body))

    def on_message_complete(self) -> None:
        self.events.append(END_OF_MESSAGE)

    def _make_head(self) -> RequestHead | ResponseHead:
        raise NotImplementedError

    def _framing(self, index: dict[str, str]) -> tuple[bool, int | None]:
        te = index.get("transfer-encoding")
        cl = index.get("content-length")
        if te is not None and cl is not None:
            # llhttp already refuses this; keep the rule explicit for the lenient paths.
            self._error = HttpError(400, "both Content-Length and Transfer-Encoding")
            raise self._error
        chunked = te is not None and te.lower().rsplit(",", 1)[-1].strip() == "chunked"
        length = int(cl) if cl is not None and cl.isdigit() else None
        return chunked, length

    def feed(self, data: bytes) -> None:
        """Parse `data`; events land in `self.events`. After an error, one `HttpError` event is
        queued and later data is ignored."""
        if self.upgraded:
            self.rest.append(data)
            return
        if self.failed:
            return
        try:
            self._p.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            # only heads `_make_head` let through get here (CONNECT, WebSocket, a 101 answer)
            self.upgraded = True
            self.rest.append(data[exc.args[0] :] if exc.args else b"")
            return
        except httptools.HttpParserError as exc:
            self._fail(self._error or HttpError(400, _parser_reason(exc)))
            return
        self._head_fed = self._head_fed + len(data) if self._in_head else 0
        if self._head_fed > self.max_header_bytes + 1024:
            # a single header line still being accumulated inside llhttp
            self._fail(HttpError(431, "request headers too large"))

    def _fail(self, error: HttpError) -> None:
        self.failed = True
        self.events.append(error)

    @property
    def in_message(self) -> bool:
        """A message has begun (bytes arrived) and its head is not complete yet."""
        return self._in_head


def _parser_reason(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:120]


class RequestParser(_Parser):
    def __init__(self, max_header_bytes: int = MAX_HEADERS_BYTES) -> None:
        super().__init__(max_header_bytes)
        self._p = httptools.HttpRequestParser(self)

    def _make_head(self) -> RequestHead:
        b, p = self._b, self._p
        chunked, length = self._framing(b.index)
        te = b.index.get("transfer-encoding")
        if te is not None and te.strip().lower() != "chunked":
            # Envoy's codec: chunked is the only transfer-coding it decodes, anything else is
            # 501 (RFC 9112 6.1); forwarding it would drop or mis-frame the body
            self._error = HttpError(501, f"transfer-coding {te[:40]!r} is not implemented")
            raise self._error
        if "upgrade" in b.index and not is_websocket_upgrade(b.index):
            # raised here, before the head is queued, so an upgrade is never forwarded as a plain
            # request: Envoy refuses upgrade types its route does not enable (Istio enables
            # websocket only)
            self._error = HttpError(501, "protocol upgrade is not supported")
            raise self._error
        return RequestHead(
            b.headers,
            b.index,
            p.get_http_version(),
            p.should_keep_alive(),
            chunked,
            length,
            b.names,
            p.get_method().decode("ascii"),
            b"".join(b.url).decode("latin-1"),
            b.size + 16,
        )


class ResponseParser(_Parser):
    def __init__(self) -> None:
        super().__init__(MAX_HEADERS_BYTES)
        self._p = httptools.HttpResponseParser(self)
        self._reason = b""

    def on_status(self, status: bytes) -> None:
        self._reason += status

    def _make_head(self) -> ResponseHead:
        b, p = self._b, self._p
        chunked, length = self._framing(b.index)
        head = ResponseHead(
            b.headers,
            b.index,
            p.get_http_version(),
            p.should_keep_alive(),
            chunked,
            length,
            b.names,
            p.get_status_code(),
            self._reason.decode("latin-1"),
            b.size + 17,
        )
        self._reason = b""
        return head


def is_websocket_upgrade(index: dict[str, str]) -> bool:
    """`Upgrade: websocket` with `Connection: upgrade` (RFC 6455 4.1): the one upgrade proxied."""
    if index.get("upgrade", "").strip().lower() != "websocket":
        return False
    return "upgrade" in {t.strip().lower() for t in index.get("connection", "").split(",")}


def encode_head(first_line: str, headers: list[tuple[str, str]]) -> bytes:
    parts = [first_line, "\r\n"]
    for k, v in headers:
        parts += (k, ": ", v, "\r\n")
    parts.append("\r\n")
    return "".join(parts).encode("latin-1")


def encode_chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK: Final = b"0\r\n\r\n"


def simple_response(
    status: int,
    body: bytes,
    content_type: str = "text/plain",
    extra: list[tuple[str, str]] | None = None,
    keep_alive: bool = True,
) -> bytes:
    """A complete response the proxy writes itself (local replies, admin pages)."""
    headers = [("content-length", str(len(body))), ("content-type", content_type)]
    if extra:
        headers += extra
    if not keep_alive:
        headers.append(("connection", "close"))
    return encode_head(f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}", headers) + body


def split_target(target: str, host_header: str | None) -> tuple[str, int | None, str]:
    """(host, port or None, origin-form path) of a request target.

    `http://backend:8080/x?y` (the scheme in any case, RFC 9110 4.2.3) -> ("backend", 8080,
    "/x?y"); `/x` with Host `backend:8080` -> ("backend", 8080, "/x"). An absolute-form target's
    authority wins over Host (RFC 9112 3.2.2). Raises HttpError(400) when no host can be found,
    for https:// (that needs CONNECT) and for other schemes."""
    if target[:1] == "/" or "://" not in target:
        if not host_header:
            raise HttpError(400, "missing Host header")
        host, port = split_authority(host_header)
        path = target
    else:
        host, port, path = _split_absolute(target)
    if not host:
        raise HttpError(400, "empty host in request target")
    return host, port, path


def _split_absolute(target: str) -> tuple[str, int | None, str]:
    try:
        url = httptools.parse_url(target.encode("latin-1"))
    except httptools.HttpParserInvalidURLError:
        raise HttpError(400, f"invalid request target {target[:80]!r}") from None
    scheme = (url.schema or b"").lower()
    if scheme == b"https":
        raise HttpError(400, "https:// targets need CONNECT, which is not supported")
    if scheme != b"http":
        raise HttpError(400, f"unsupported scheme in request target {target[:80]!r}")
    if url.port is not None and not 0 < url.port < 65536:
        raise HttpError(400, f"invalid port in request target {target[:80]!r}")
    # the path, query and fragment go on as received (not re-serialised from the parts)
    rest = target[target.index("://") + 3 :]
    cut = min(i for i in (rest.find("/"), rest.find("?"), rest.find("#"), len(rest)) if i >= 0)
    path = rest[cut:]
    if not path.startswith("/"):
        path = "/" + path
    return (url.host or b"").decode("latin-1").lower(), url.port, path


def split_authority(authority: str) -> tuple[str, int | None]:
    authority = authority.strip()
    if authority.startswith("["):
        end = authority.find("]")
        host, rest = authority[1:end], authority[end + 1 :]
        port_s = rest[1:] if rest.startswith(":") else ""
    elif authority.count(":") == 1:
        host, port_s = authority.split(":")
    else:
        host, port_s = authority, ""
    if port_s:
        if not port_s.isdigit() or not 0 < int(port_s) < 65536:
            raise HttpError(400, f"invalid port in host {authority!r}")
        return host.lower(), int(port_s)
    return host.lower(), None
