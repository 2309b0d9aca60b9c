"""`meshtrace.csrf.refusal`, the rule the query API and the control plane share (sans-IO)."""

from __future__ import annotations

import pytest
from fuzzing import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from meshtrace.csrf import refusal

HOST = "127.0.0.1:16686"


@pytest.mark.parametrize(
    ("method", "origin", "has_body", "content_type", "status"),
    [
        ("GET", "http://evil.example", False, None, None),  # reads are not guarded
        ("HEAD", "null", False, None, None),
        ("POST", None, True, "application/json", None),  # curl, the sidecars
        ("POST", "http://127.0.0.1:16686", True, "application/json", None),  # the web UI
        ("POST", "HTTP://127.0.0.1:16686", True, "application/json", None),
        ("POST", None, False, None, None),  # a heartbeat has no body
        ("POST", "http://127.0.0.1:16686", False, None, None),
        ("POST", None, True, None, 415),
        ("POST", None, True, "text/plain", 415),
        ("PUT", None, True, "application/x-www-form-urlencoded", 415),
        ("POST", "http://evil.example", True, "application/json", 403),
        ("DELETE", "http://127.0.0.1:1", False, None, 403),
        ("POST", "null", True, "application/json", 403),
        ("POST", "http://127.0.0.1", True, "application/json", 403),
        ("POST", "http://127.0.0.1:16686/", True, "application/json", 403),  # not a serialized origin
        ("POST", "http://evil.example", True, "text/plain", 403),  # the Origin is checked first
    ],
)
def test_refusal(
    method: str, origin: str | None, has_body: bool, content_type: str | None, status: int | None
) -> None:
    refused = refusal(method, origin, HOST, has_body, content_type)
    assert (refused and refused[0]) == status


@settings(max_examples=examples(300), deadline=None)
@given(
    origin=st.text(max_size=60) | st.builds(lambda h: f"http://{h}", st.text(max_size=30)),
    host=st.text(max_size=30),
    content_type=st.none() | st.text(max_size=30),
)
def test_only_this_servers_origin_passes(origin: str, host: str, content_type: str | None) -> None:
    refused = refusal("POST", origin, host, True, content_type)
    if refused is None or refused[0] == 415:
        scheme, _, authority = origin.strip().partition("://")
        assert scheme and authority.lower() == host.lower()
    else:
        assert refused[0] == 403
    if refused is not None:  # header values are echoed safely
        assert refused[1].isascii() and "\n" not in refused[1] and "\r" not in refused[1]


@given(
    host=st.from_regex(r"[a-z0-9.-]{1,20}(:[0-9]{1,5})?", fullmatch=True),
    scheme=st.sampled_from(["http", "https"]),
)
def test_this_servers_origin_passes(host: str, scheme: str) -> None:
    assert refusal("POST", f"{scheme}://{host.upper()}", host, True, "application/json") is None
