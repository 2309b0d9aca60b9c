"""Bootstrap credentials and SPIFFE ids (issue 12): round trip, refusals, and a fuzz of the
token parser (it reads whatever a client sends in Authorization)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshtrace.control import identity

KEY = b"k" * 32
CLAIMS = identity.Claims("shop", "api-sa", "api-0")


def test_round_trip_and_spiffe_id() -> None:
    assert identity.verify(KEY, identity.mint(KEY, CLAIMS)) == CLAIMS
    assert CLAIMS.spiffe_id("cluster.local") == "spiffe://cluster.local/ns/shop/sa/api-sa"
    assert identity.parse_spiffe_id("spiffe://td/ns/shop/sa/api-sa") == ("td", "shop", "api-sa")
    assert identity.parse_spiffe_id("spiffe://td/ns//sa/x") is None
    assert identity.parse_spiffe_id("https://td/ns/a/sa/b") is None


@pytest.mark.parametrize(
    ("token", "why"),
    [
        ("", "not a meshtrace"),
        ("v2.abc.def", "not a meshtrace"),
        (identity.mint(b"x" * 32, CLAIMS), "signature"),
        (identity.mint(KEY, CLAIMS)[:-2] + "AA", "signature"),
        ("v1.!!!.???", "malformed"),
    ],
)
def test_refused_credentials(token: str, why: str) -> None:
    with pytest.raises(identity.InvalidCredential, match=why):
        identity.verify(KEY, token)


def test_tampered_claims_do_not_verify() -> None:
    _, payload, signature = identity.mint(KEY, CLAIMS).split(".")
    other = identity.mint(KEY, identity.Claims("shop", "admin", "api-0")).split(".")[1]
    with pytest.raises(identity.InvalidCredential, match="signature"):
        identity.verify(KEY, f"v1.{other}.{signature}")
    assert payload != other


@given(st.text(max_size=300))
def test_any_authorization_value_is_refused_cleanly(token: str) -> None:
    with pytest.raises(identity.InvalidCredential):
        identity.verify(KEY, token)


def test_key_file_is_private_and_kept(tmp_path: Path) -> None:
    key = identity.load_or_create_key(tmp_path / "data")
    assert identity.load_or_create_key(tmp_path / "data") == key and len(key) == 32
    assert os.stat(tmp_path / "data" / identity.KEY_FILE).st_mode & 0o077 == 0
    (tmp_path / "short").mkdir()
    (tmp_path / "short" / identity.KEY_FILE).write_bytes(b"x")
    with pytest.raises(ValueError, match="shorter than 32"):
        identity.load_or_create_key(tmp_path / "short")
