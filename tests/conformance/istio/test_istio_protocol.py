"""Istio's protocol-selection tables (pkg/config/protocol Parse/IsHTTP, pkg/config/kube
ConvertProtocol) run against meshtrace.config.protocol; the table is protocol.yaml beside this file."""

from __future__ import annotations

from pathlib import Path

import pytest
from conformance_rows import Row, load

from meshtrace.config.protocol import convert, is_http, parse

ROWS = load(Path(__file__).resolve().parent / "protocol.yaml")[1]


def _rows(test: str) -> list[object]:
    return [pytest.param(r, id=r.id) for r in ROWS if r.test == test]


@pytest.mark.parametrize("row", _rows("TestParse"))
def test_parse(row: Row) -> None:
    assert parse(row.case["input"]) == row.case["expect"], row.upstream


@pytest.mark.parametrize("row", _rows("TestIsHTTP"))
def test_is_http(row: Row) -> None:
    assert is_http(row.case["instance"]) is row.case["is_http"], row.upstream


@pytest.mark.parametrize("row", _rows("TestConvertProtocol"))
def test_convert_protocol(row: Row) -> None:
    c = row.case
    # Go's zero Protocol ("") is not UDP, as Kubernetes' default TCP is not
    got = convert(c["port"], c["port_name"], c["proto"] or "TCP", c["app_proto"])
    assert got == c["expect"], row.upstream


def test_every_row_is_run() -> None:
    assert {r.test for r in ROWS} == {"TestParse", "TestIsHTTP", "TestConvertProtocol"}
    assert all(r.status == "agree" for r in ROWS)
