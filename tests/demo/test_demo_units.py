"""Demo service units: fault decisions, listen address, the SQLite store, BACKEND_URL."""

from __future__ import annotations

from pathlib import Path

import pytest
from fuzzing import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from meshtrace.demo.faults import FaultError, Faults, decide
from meshtrace.demo.frontend import backend_url
from meshtrace.demo.service import Listen, listen_address
from meshtrace.demo.store import SEED_USERS, InjectedFault, UserStore


def test_no_faults_by_default() -> None:
    assert decide({}, {}, 0.0) == Faults(fail=False, slow_ms=0)


@pytest.mark.parametrize(
    ("value", "draw", "fail"),
    [("1", 0.99, True), ("true", 0.5, True), ("0", 0.0, False), ("0.3", 0.29, True), ("0.3", 0.3, False)],
)
def test_fail_rate(value: str, draw: float, fail: bool) -> None:
    assert decide({"fail": value}, {}, draw).fail is fail
    assert decide({}, {"FAIL_RATE": value}, draw).fail is fail


def test_query_overrides_environment() -> None:
    env = {"FAIL_RATE": "1", "SLOW_QUERY_MS": "500"}
    assert decide({"fail": "0", "slow_ms": "5"}, env, 0.0) == Faults(fail=False, slow_ms=5)
    assert decide({}, env, 0.0) == Faults(fail=True, slow_ms=500)


@pytest.mark.parametrize(
    ("query", "env", "field"),
    [
        ({"fail": "often"}, {}, "fail"),
        ({"fail": "1.5"}, {}, "fail"),
        ({}, {"FAIL_RATE": "-1"}, "FAIL_RATE"),
        ({"slow_ms": "fast"}, {}, "slow_ms"),
        ({"slow_ms": "-3"}, {}, "slow_ms"),
        ({}, {"SLOW_QUERY_MS": "999999"}, "SLOW_QUERY_MS"),
    ],
)
def test_bad_fault_values_name_the_field(query: dict[str, str], env: dict[str, str], field: str) -> None:
    with pytest.raises(FaultError, match=field):
        decide(query, env, 0.0)


@settings(max_examples=examples(200), deadline=None)
@given(
    st.dictionaries(st.sampled_from(["fail", "slow_ms", "other"]), st.text(max_size=12)),
    st.dictionaries(st.sampled_from(["FAIL_RATE", "SLOW_QUERY_MS"]), st.text(max_size=12)),
    st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
)
def test_any_input_gives_faults_or_a_fault_error(
    query: dict[str, str], env: dict[str, str], draw: float
) -> None:
    try:
        faults = decide(query, env, draw)
    except FaultError:
        return
    assert 0 <= faults.slow_ms <= 60_000


def test_listen_address() -> None:
    assert listen_address({}) == Listen("127.0.0.1", 8080)
    assert listen_address({"POD_IP": "127.0.1.2", "PORT": "0"}) == Listen("127.0.1.2", 0)
    for bad in ("http", "70000", "-1"):
        with pytest.raises(ValueError, match="PORT"):
            listen_address({"PORT": bad})


def test_backend_url() -> None:
    assert str(backend_url({})) == "http://backend:8080"
    assert str(backend_url({"BACKEND_URL": "http://127.0.0.1:9000"})) == "http://127.0.0.1:9000"
    with pytest.raises(ValueError, match="BACKEND_URL"):
        backend_url({"BACKEND_URL": "backend:8080"})


def test_store_creates_seeds_and_reopens(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "users.sqlite"
    assert UserStore(path).select_users(Faults()) == list(SEED_USERS)
    # A second replica on the same file does not duplicate the seed rows.
    assert UserStore(path).select_users(Faults()) == list(SEED_USERS)


def test_store_injected_fault_is_a_sqlite_error(tmp_path: Path) -> None:
    import sqlite3

    with pytest.raises(sqlite3.Error) as caught:
        UserStore(tmp_path / "u.sqlite").select_users(Faults(fail=True))
    assert isinstance(caught.value, InjectedFault)
