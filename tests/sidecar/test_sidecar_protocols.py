"""Protocol selection in the sidecar: the document's per-port `protocol` checked and classed, and
the first-bytes detection for `auto` ports (units and hypothesis)."""

from __future__ import annotations

from typing import get_args

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshtrace.config.protocol import DOCUMENT_VALUES
from meshtrace.document import PortProtocol
from meshtrace.sidecar.config import ConfigError, parse
from meshtrace.sidecar.http1 import RequestParser
from meshtrace.sidecar.protocols import H2_PREFACE, detected, handling, looks_like_http

FQDN = "db.default.svc.cluster.local"


def _service(ports: list[dict[str, object]]) -> dict[str, object]:
    return {"services": {FQDN: {"ports": ports, "endpoints": []}}}


def test_the_contract_has_every_protocol_the_control_plane_sends() -> None:
    assert set(DOCUMENT_VALUES) == set(get_args(PortProtocol))


@pytest.mark.parametrize(
    ("protocol", "expect"),
    [("http", "http"), ("grpc", "http"), ("grpc-web", "http"), ("http2", "http"), ("tcp", "tcp"),
     ("tls", "tcp"), ("https", "tcp"), ("mysql", "tcp"), ("auto", "detect"), ("udp", "none")],
)  # fmt: skip
def test_handling_by_protocol(protocol: str, expect: str) -> None:
    assert handling(protocol) == expect


def test_port_specs_parsed_with_target_ports() -> None:
    cfg = parse(
        _service([{"name": "tcp-db", "port": 5432, "target_port": 15432, "protocol": "tcp"}, {"port": 80}]),
        "1", "w", "default", {},
    )  # fmt: skip
    svc = cfg.registry.services[FQDN]
    assert (svc.port_spec(5432).protocol, svc.port_spec(5432).target_port) == ("tcp", 15432)
    assert svc.port_spec(80).protocol == "auto"  # an older document without the key: detect
    assert svc.port_spec(81).protocol == "auto"


def test_an_unknown_protocol_is_refused_naming_the_field() -> None:
    with pytest.raises(
        ConfigError, match=r"services\.db\.default\.svc\.cluster\.local\.ports\[0\]\.protocol"
    ):
        parse(_service([{"port": 25, "protocol": "smtp"}]), "1", "w", "default", {})


@pytest.mark.parametrize("first", [b"GET / HTTP/1.1\r\n", b"POST", b"G", b"PRI * HTTP/2", H2_PREFACE + b"\0"])
def test_http_is_detected(first: bytes) -> None:
    assert looks_like_http(first)


@pytest.mark.parametrize(
    "first", [b"", b"\x16\x03\x01", b"*1\r\n$4\r\nPING\r\n", b"get / HTTP/1.1", b"\x00\x00"]
)
def test_other_bytes_are_tcp(first: bytes) -> None:
    assert not looks_like_http(first)


@given(st.binary(max_size=64))
def test_detection_never_raises(first: bytes) -> None:
    assert looks_like_http(first) in (True, False)


def test_the_first_service_port_goes_to_the_main_app_port_further_ports_to_their_target() -> None:
    cfg = parse(
        _service([{"port": 8080, "target_port": 8080}, {"port": 9090, "target_port": 19090},
                  {"port": 9091, "target_port": "grpc"}]),
        "1", "w", "default", {},
    )  # fmt: skip
    svc = cfg.registry.services[FQDN]
    assert svc.app_port(8080, 31000) == 31000  # the sidecar's --app-port, whatever targetPort says
    assert svc.app_port(9090, 31000) == 19090
    assert svc.app_port(9091, 31000) == 31000  # a named targetPort: not known to the sidecar
    assert svc.app_port(1, 31000) == 31000


@given(st.binary(max_size=512), st.integers(min_value=1, max_value=64), st.sampled_from([b"CONNECT", b"WS"]))
def test_after_an_upgrade_head_every_byte_reaches_the_tunnel_unparsed(
    tail: bytes, piece: int, kind: bytes
) -> None:
    """Whatever follows a CONNECT or WebSocket head, in whatever pieces it arrives, is kept as is
    for the tunnel, and the parser queues no error or second request."""
    head = (
        b"CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n\r\n"
        if kind == b"CONNECT"
        else b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"
    )
    data = head + tail
    p = RequestParser()
    for i in range(0, len(data), piece):
        p.feed(data[i : i + piece])
    assert p.upgraded and b"".join(p.rest) == tail
    assert [type(e).__name__ for e in p.events] == ["RequestHead", "EndOfMessage"]


@pytest.mark.parametrize(
    ("first", "decided"),
    [(b"", False), (b"PRI * HTTP/2", False), (H2_PREFACE, True), (b"GET / HTTP/1.0\r\n\r\n", True),
     (b"P", False), (b"\x16", True)],
)  # fmt: skip
def test_detection_waits_only_while_the_bytes_could_still_be_the_h2_preface(
    first: bytes, decided: bool
) -> None:
    assert detected(first) is decided


def test_a_static_endpoint_is_reached_on_the_port_its_service_port_targets() -> None:
    doc = {
        "services": {
            FQDN: {  # a workload without a sidecar: one static endpoint, at its first port
                "ports": [{"port": 8080, "target_port": 8080}, {"port": 9090, "target_port": 9090}],
                "endpoints": [{"ip": "127.0.0.9", "port": 8080, "pod": None}],
            },
            "otel.default.svc.cluster.local": {  # the collector: a static endpoint per port
                "ports": [{"port": 4317, "target_port": 4317}, {"port": 4318, "target_port": 4318}],
                "endpoints": [{"ip": "127.0.0.1", "port": p, "pod": None} for p in (4318, 4317)],
            },
        }
    }  # fmt: skip
    reg = parse(doc, "1", "w", "default", {}).registry.services
    db, otel = reg[FQDN], reg["otel.default.svc.cluster.local"]
    assert not db.endpoints[0].sidecar
    assert db.static_port(8080, db.endpoints[0]) == 8080
    assert db.static_port(9090, db.endpoints[0]) == 9090  # was 8080: gRPC sent to the HTTP port
    for ep in otel.endpoints:  # whichever endpoint round robin picks
        assert otel.static_port(4317, ep) == 4317 and otel.static_port(4318, ep) == 4318
