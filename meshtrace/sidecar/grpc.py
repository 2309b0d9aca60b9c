"""gRPC rules the proxy applies, as pure functions (sans-IO): what marks a gRPC request, its
status from trailers (or a trailers-only answer), `grpc-timeout`, Istio's retry policy for gRPC
and HTTP statuses, Envoy's HTTP-to-gRPC status mapping for local replies, and the counting of
length-prefixed gRPC messages on a stream."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from meshtrace.sidecar.http1 import RequestHead

# gRPC status codes (grpc/doc/statuscodes.md)
OK: Final = 0
CANCELLED: Final = 1
UNKNOWN: Final = 2
DEADLINE_EXCEEDED: Final = 4
PERMISSION_DENIED: Final = 7
RESOURCE_EXHAUSTED: Final = 8
UNIMPLEMENTED: Final = 12
INTERNAL: Final = 13
UNAVAILABLE: Final = 14
UNAUTHENTICATED: Final = 16

# statuses Envoy's tracer tags `error=true`: the server's failures (client-side errors such as
# CANCELLED, INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED are not)
DATA_LOSS: Final = 15
SERVER_ERRORS: Final = frozenset(
    {UNKNOWN, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS}
)

# Envoy's retry_on names for gRPC statuses (x-envoy-retry-grpc-on), which Istio's `retryOn` takes
GRPC_RETRY_ON: Final = {
    "cancelled": CANCELLED,
    "deadline-exceeded": DEADLINE_EXCEEDED,
    "internal": INTERNAL,
    "resource-exhausted": RESOURCE_EXHAUSTED,
    "unavailable": UNAVAILABLE,
}
# the HTTP conditions it takes beside them (Envoy's x-envoy-retry-on)
HTTP_RETRY_ON: Final = frozenset(
    {
        "5xx",
        "gateway-error",
        "reset",
        "connect-failure",
        "envoy-ratelimited",
        "retriable-4xx",
        "refused-stream",
        "retriable-status-codes",
        "retriable-headers",
        "http3-post-connect-failure",
    }
)
# gRPC's timeout units (PROTOCOL-HTTP2.md: TimeoutValue is at most 8 digits)
_TIMEOUT: Final = re.compile(r"([0-9]{1,8})([HMSmun])")
_UNIT_SECONDS: Final = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


def is_grpc(content_type: str | None) -> bool:
    """A gRPC request or answer: `application/grpc` with an optional `+proto`/`;...` suffix."""
    if not content_type:
        return False
    ct = content_type.lower()
    return ct == "application/grpc" or ct.startswith(("application/grpc+", "application/grpc;"))


def parse_timeout(value: str | None) -> float | None:
    """`grpc-timeout` in seconds, or None when absent or malformed (then it does not bound)."""
    if not value:
        return None
    m = _TIMEOUT.fullmatch(value.strip())
    if m is None:
        return None
    return int(m.group(1)) * _UNIT_SECONDS[m.group(2)]


def status_of(headers: Mapping[str, str]) -> int | None:
    """The `grpc-status` in a trailers block (or a trailers-only answer's headers)."""
    raw = headers.get("grpc-status")
    if raw is None or not raw.strip().isdigit():
        return None
    return int(raw.strip())


def http_to_grpc(status: int) -> int:
    """Envoy's mapping (Grpc::Utility::httpToGrpcStatus) for a local reply to a gRPC request."""
    if status == 400:
        return INTERNAL
    if status == 401:
        return UNAUTHENTICATED
    if status == 403:
        return PERMISSION_DENIED
    if status == 404:
        return UNIMPLEMENTED
    if status in (429, 502, 503, 504):
        return UNAVAILABLE
    return UNKNOWN


def local_reply_headers(grpc_status: int, message: str) -> list[tuple[str, str]]:
    """A trailers-only gRPC answer for a reply the proxy makes itself (Envoy's local replies to
    gRPC requests): HTTP 200, the status (`http_to_grpc` of the reply's HTTP status, as a rule)."""
    return [
        (":status", "200"),
        ("content-type", "application/grpc"),
        ("grpc-status", str(grpc_status)),
        ("grpc-message", percent_encode(message)),
    ]


def percent_encode(message: str) -> str:
    """grpc-message encoding (PROTOCOL-HTTP2.md): bytes outside 0x20-0x7E and `%` as %XX."""
    out = []
    for b in message.encode():
        out.append(chr(b) if 0x20 <= b <= 0x7E and b != 0x25 else f"%{b:02X}")
    return "".join(out)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """A route's retry policy, as Istio writes it into Envoy's route: attempts in all (first try
    included), the conditions, and the HTTP statuses `retriable-status-codes` names."""

    attempts: int = 3
    retry_on: frozenset[str] = frozenset(
        {"connect-failure", "refused-stream", "unavailable", "cancelled", "retriable-status-codes"}
    )
    status_codes: frozenset[int] = field(default_factory=lambda: frozenset({503}))

    @property
    def grpc_statuses(self) -> frozenset[int]:
        return frozenset(GRPC_RETRY_ON[c] for c in self.retry_on if c in GRPC_RETRY_ON)


# Istio's default (pilot's DefaultRetryPolicy): 2 retries on connect-failure, refused-stream,
# unavailable, cancelled and retriable-status-codes with [503]
ISTIO_DEFAULT: Final = RetryPolicy()


def parse_retry_on(value: str, attempts: int = 2) -> RetryPolicy:
    """A VirtualService `retries` block (`attempts` retries, `retryOn`) as Istio translates it:
    numbers in retryOn become retriable status codes (adding `retriable-status-codes`); unknown
    names raise ValueError naming them."""
    conditions: set[str] = set()
    codes: set[int] = set()
    for token in (t.strip() for t in value.split(",")):
        if not token:
            continue
        if token.isdigit():
            codes.add(int(token))
        elif token in GRPC_RETRY_ON or token in HTTP_RETRY_ON:
            conditions.add(token)
        else:
            raise ValueError(f"retryOn: unknown condition {token!r}")
    if codes:
        conditions.add("retriable-status-codes")
    return RetryPolicy(attempts + 1, frozenset(conditions), frozenset(codes))


def retry_reason(
    policy: RetryPolicy, http_status: int | None, grpc_status: int | None, refused: bool = False
) -> str | None:
    """Why an attempt's outcome is retried under `policy` (None: it is the answer). A gRPC
    status counts only from a trailers-only answer: once a body was forwarded it cannot be."""
    on = policy.retry_on
    if refused:
        return "refused-stream" if "refused-stream" in on or "reset" in on else None
    if http_status is None:
        return "reset" if "reset" in on else None
    if grpc_status is not None and grpc_status in policy.grpc_statuses:
        return next(c for c, s in GRPC_RETRY_ON.items() if s == grpc_status)
    if "retriable-status-codes" in on and http_status in policy.status_codes:
        return "retriable-status-codes"
    if "5xx" in on and http_status >= 500:
        return "5xx"
    if "gateway-error" in on and http_status in (502, 503, 504):
        return "gateway-error"
    if "retriable-4xx" in on and http_status == 409:
        return "retriable-4xx"
    return None


class MessageCounter:
    """Counts gRPC length-prefixed messages (1-byte flag, 4-byte big-endian length) as DATA goes
    by, across frame boundaries, as Envoy's gRPC stats filter counts them for
    istio_request_messages_total / istio_response_messages_total: a message counts when its
    prefix has been seen."""

    __slots__ = ("_need", "_prefix", "count")

    def __init__(self) -> None:
        self.count = 0
        self._need = 0  # payload bytes of the current message still to come
        self._prefix = b""  # a prefix split across DATA frames

    def feed(self, data: bytes) -> None:
        i, n = 0, len(data)
        while i < n:
            if self._need:
                take = min(self._need, n - i)
                self._need -= take
                i += take
                continue
            want = 5 - len(self._prefix)
            self._prefix += data[i : i + want]
            i += want
            if len(self._prefix) == 5:
                self.count += 1
                self._need = int.from_bytes(self._prefix[1:5], "big")
                self._prefix = b""


@dataclass(slots=True)
class GrpcCall:
    """One gRPC stream as tags and metrics see it: the request's path, authority, content type
    and timeout, then the status (trailers or trailers-only) and the messages each way."""

    path: str
    authority: str
    content_type: str
    timeout: str | None
    status: int | None = None
    message: str | None = None
    requests: MessageCounter = field(default_factory=MessageCounter)
    responses: MessageCounter = field(default_factory=MessageCounter)

    @classmethod
    def of(cls, head: RequestHead) -> GrpcCall:
        idx = head.index
        return cls(head.target, idx.get("host", ""), idx.get("content-type", ""), idx.get("grpc-timeout"))

    def tags(self) -> list[tuple[str, str]]:
        """Envoy's gRPC span tags (tracer utility's addGrpcRequestTags/addGrpcResponseTags)."""
        out = [
            ("grpc.path", self.path),
            ("grpc.authority", self.authority),
            ("grpc.content_type", self.content_type),
        ]
        if self.timeout is not None:
            out.append(("grpc.timeout", self.timeout))
        if self.status is not None:
            out.append(("grpc.status_code", str(self.status)))
        if self.message is not None:
            out.append(("grpc.message", self.message))
        return out

    @property
    def server_error(self) -> bool:
        return self.status in SERVER_ERRORS
