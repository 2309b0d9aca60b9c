"""The gRPC rules (`meshtrace.sidecar.grpc`) as tables: grpc-timeout, Envoy's HTTP-to-gRPC
mapping, Istio's retry policy and its retryOn parsing, message counting across DATA frames."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshtrace.sidecar import grpc

TIMEOUTS = [
    ("1S", 1.0),
    ("100m", 0.1),
    ("5M", 300.0),
    ("2H", 7200.0),
    ("250u", 0.00025),
    ("99999999n", 0.099999999),
    ("123456789S", None),  # at most 8 digits
    ("1s", None),  # units are case-sensitive: `s` is not one
    ("S", None),
    ("-1S", None),
    ("", None),
    (None, None),
]


@pytest.mark.parametrize(("value", "seconds"), TIMEOUTS)
def test_parse_timeout(value: str | None, seconds: float | None) -> None:
    got = grpc.parse_timeout(value)
    assert got == pytest.approx(seconds) if seconds is not None else got is None


# Envoy's Grpc::Utility::httpToGrpcStatus
@pytest.mark.parametrize(
    ("http", "code"),
    [
        (400, 13),
        (401, 16),
        (403, 7),
        (404, 12),
        (429, 14),
        (502, 14),
        (503, 14),
        (504, 14),
        (500, 2),
        (431, 2),
    ],
)
def test_http_to_grpc(http: int, code: int) -> None:
    assert grpc.http_to_grpc(http) == code


def test_local_reply_is_trailers_only() -> None:
    headers = dict(grpc.local_reply_headers(grpc.http_to_grpc(503), "no healthy upstream"))
    assert headers == {
        ":status": "200",
        "content-type": "application/grpc",
        "grpc-status": "14",
        "grpc-message": "no healthy upstream",
    }
    assert grpc.percent_encode("50% é\n") == "50%25 %C3%A9%0A"


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("application/grpc", True),
        ("application/grpc+proto", True),
        ("application/grpc;charset=utf-8", True),
        ("Application/GRPC", True),
        ("application/grpc-web", False),
        ("application/json", False),
        (None, False),
    ],
)
def test_is_grpc(content_type: str | None, expected: bool) -> None:
    assert grpc.is_grpc(content_type) is expected


D = grpc.ISTIO_DEFAULT
G = grpc.parse_retry_on("deadline-exceeded,internal,resource-exhausted")
# (policy, HTTP status or None for a reset, grpc-status of a trailers-only answer, refused, reason)
RETRIES = [
    (D, 200, grpc.UNAVAILABLE, False, "unavailable"),
    (D, 200, grpc.CANCELLED, False, "cancelled"),
    (D, 200, grpc.DEADLINE_EXCEEDED, False, None),  # not in Istio's default
    (D, 200, grpc.RESOURCE_EXHAUSTED, False, None),
    (D, 200, grpc.INTERNAL, False, None),
    (D, 200, grpc.OK, False, None),
    (D, 200, None, False, None),
    (D, 503, None, False, "retriable-status-codes"),
    (D, 500, None, False, None),
    (D, None, None, True, "refused-stream"),
    (D, None, None, False, None),  # a reset is not in the default
    (
        grpc.parse_retry_on("deadline-exceeded,internal,resource-exhausted"),
        200,
        4,
        False,
        "deadline-exceeded",
    ),
    (G, 200, 13, False, "internal"),
    (
        grpc.parse_retry_on("deadline-exceeded,internal,resource-exhausted"),
        200,
        8,
        False,
        "resource-exhausted",
    ),
    (grpc.parse_retry_on("5xx"), 500, None, False, "5xx"),
    (grpc.parse_retry_on("gateway-error"), 504, None, False, "gateway-error"),
    (grpc.parse_retry_on("gateway-error"), 500, None, False, None),
    (grpc.parse_retry_on("reset"), None, None, False, "reset"),
    (grpc.parse_retry_on("retriable-4xx"), 409, None, False, "retriable-4xx"),
    (grpc.parse_retry_on("connect-failure,429"), 429, None, False, "retriable-status-codes"),
]


@pytest.mark.parametrize(("policy", "http", "status", "refused", "reason"), RETRIES)
def test_retry_reason(
    policy: grpc.RetryPolicy, http: int | None, status: int | None, refused: bool, reason: str | None
) -> None:
    assert grpc.retry_reason(policy, http, status, refused) == reason


def test_istio_default_policy() -> None:
    assert D.attempts == 3  # two retries
    assert D.retry_on == {
        "connect-failure",
        "refused-stream",
        "unavailable",
        "cancelled",
        "retriable-status-codes",
    }
    assert D.status_codes == {503}


def test_parse_retry_on() -> None:
    policy = grpc.parse_retry_on("unavailable, 503,502", attempts=4)
    assert policy.attempts == 5
    assert policy.retry_on == {"unavailable", "retriable-status-codes"}
    assert policy.status_codes == {502, 503}
    with pytest.raises(ValueError, match="unknown condition 'sometimes'"):
        grpc.parse_retry_on("unavailable,sometimes")


def _messages(sizes: list[int]) -> bytes:
    return b"".join(b"\x00" + n.to_bytes(4, "big") + b"m" * n for n in sizes)


@given(sizes=st.lists(st.integers(0, 300), max_size=20), cuts=st.lists(st.integers(0, 7000), max_size=10))
def test_message_counter_across_frames(sizes: list[int], cuts: list[int]) -> None:
    """However the stream is cut into DATA frames, each message counts once."""
    data = _messages(sizes)
    points = sorted({c for c in cuts if c <= len(data)} | {0, len(data)})
    counter = grpc.MessageCounter()
    for a, b in itertools.pairwise(points):
        counter.feed(data[a:b])
    assert counter.count == len(sizes)


def test_grpc_call_tags() -> None:
    call = grpc.GrpcCall("/mesh.Echo/Unary", "backend:8080", "application/grpc", "1S")
    call.status, call.message = grpc.UNAVAILABLE, "down"
    assert dict(call.tags()) == {
        "grpc.path": "/mesh.Echo/Unary",
        "grpc.authority": "backend:8080",
        "grpc.content_type": "application/grpc",
        "grpc.timeout": "1S",
        "grpc.status_code": "14",
        "grpc.message": "down",
    }
    assert call.server_error
    # Envoy tags error only for the server's failures
    errors = {code for code in range(17) if grpc.GrpcCall("/", "", "", None, status=code).server_error}
    assert errors == {2, 4, 8, 12, 13, 14, 15}
