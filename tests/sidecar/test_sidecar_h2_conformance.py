"""h2spec-style conformance of the sidecar's HTTP/2 listener: raw frames (hyperframe, HPACK by
`hpack`) after the client preface, each case answered with the connection or stream error RFC
9113 requires, and the sidecar still serving afterwards. Plus a hypothesis fuzz of the h2 input
path: random bytes and random frame sequences never crash the listener."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from h2.errors import ErrorCodes as E
from hpack import Encoder
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SETTINGS = SettingsFrame(0).serialize()
PING_DATA = b"meshping"


def raw_frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    """A frame as bytes, whatever its content (hyperframe refuses to build invalid ones)."""
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def headers(stream: int, fields: list[tuple[str, str]], end: bool = True) -> bytes:
    """HEADERS (+ CONTINUATION frames when the block is over the 16384 frame size)."""
    block = Encoder().encode(fields)
    pieces = [block[i : i + 16384] for i in range(0, len(block), 16384)] or [b""]
    frame = HeadersFrame(stream, pieces[0])
    if end:
        frame.flags.add("END_STREAM")
    frames: list[Frame] = [frame, *(ContinuationFrame(stream, p) for p in pieces[1:])]
    frames[-1].flags.add("END_HEADERS")
    return b"".join(f.serialize() for f in frames)


def request(stream: int = 1, extra: list[tuple[str, str]] | None = None, end: bool = True) -> bytes:
    base = [(":method", "GET"), (":scheme", "http"), (":authority", "127.0.0.1:9"), (":path", "/")]
    return headers(stream, base + (extra or []), end)


def read_frames(sock: socket.socket, until: Callable[[Frame], bool], timeout: float = 5.0) -> list[Frame]:
    """Frames the sidecar sent, until `until` matches one, the connection closes or time passes."""
    sock.settimeout(0.2)
    buf = b""
    frames: list[Frame] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            break
        if not data:
            break
        buf += data
        while len(buf) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(buf[:9]))
            if len(buf) < 9 + length:
                break
            frame.parse_body(memoryview(buf[9 : 9 + length]))
            buf = buf[9 + length :]
            frames.append(frame)
            if until(frame):
                return frames
    return frames


def connect(address: str) -> socket.socket:
    host, port = address.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=5)


def exchange(address: str, payload: bytes, until: Callable[[Frame], bool]) -> list[Frame]:
    with connect(address) as sock:
        sock.sendall(PREFACE + SETTINGS + SettingsFrame(0, flags=["ACK"]).serialize() + payload)
        return read_frames(sock, until)


def is_goaway(f: Frame) -> bool:
    return isinstance(f, GoAwayFrame)


def alive(address: str) -> None:
    """A fresh connection still gets its PING answered."""
    got = exchange(address, PingFrame(0, PING_DATA).serialize(), lambda f: isinstance(f, PingFrame))
    assert any(isinstance(f, PingFrame) and "ACK" in f.flags and f.opaque_data == PING_DATA for f in got)


GOAWAY = "goaway"
RST = "rst"
ANSWER = "answer"
EITHER = "stream or connection error"

# (case, bytes after the preface and SETTINGS, expectation, detail): GOAWAY with an error code
# (connection error), RST_STREAM on stream 1 with a code (stream error), either of them where the
# RFC allows both, or an answer on stream 1
CASES: list[tuple[str, bytes, str, Any]] = [
    ("settings ack with payload", raw_frame(4, 1, 0, b"\x00" * 6), GOAWAY, E.FRAME_SIZE_ERROR),
    ("settings length not a multiple of 6", raw_frame(4, 0, 0, b"\x00" * 5), GOAWAY, E.FRAME_SIZE_ERROR),
    ("settings on a stream", raw_frame(4, 0, 1, b""), GOAWAY, E.PROTOCOL_ERROR),
    ("enable_push = 2", raw_frame(4, 0, 0, struct.pack(">HI", 2, 2)), GOAWAY, E.PROTOCOL_ERROR),
    ("initial window over 2^31-1", raw_frame(4, 0, 0, struct.pack(">HI", 4, 2**31)), GOAWAY,
     E.FLOW_CONTROL_ERROR),
    ("max frame size under 16384", raw_frame(4, 0, 0, struct.pack(">HI", 5, 100)), GOAWAY,
     E.PROTOCOL_ERROR),
    ("ping of 7 octets", raw_frame(6, 0, 0, b"1234567"), GOAWAY, E.FRAME_SIZE_ERROR),
    ("ping on a stream", raw_frame(6, 0, 1, PING_DATA), GOAWAY, E.PROTOCOL_ERROR),
    ("window update of 0 on the connection", raw_frame(8, 0, 0, struct.pack(">I", 0)), GOAWAY,
     E.PROTOCOL_ERROR),
    ("connection window overflow", WindowUpdateFrame(0, 2**31 - 1).serialize() * 2, GOAWAY,
     E.FLOW_CONTROL_ERROR),
    ("data on stream 0", raw_frame(0, 0, 0, b"x"), GOAWAY, E.PROTOCOL_ERROR),
    ("data on an idle stream", DataFrame(1, b"x").serialize(), GOAWAY, E.PROTOCOL_ERROR),
    ("headers on an even (server) stream", request(2), GOAWAY, E.PROTOCOL_ERROR),
    ("frame over max frame size", raw_frame(0, 0, 1, b"\x00" * 16385), GOAWAY, E.FRAME_SIZE_ERROR),
    ("rst_stream on stream 0", raw_frame(3, 0, 0, struct.pack(">I", 8)), GOAWAY, E.PROTOCOL_ERROR),
    ("rst_stream on an idle stream", RstStreamFrame(1, 8).serialize(), GOAWAY, E.PROTOCOL_ERROR),
    ("rst_stream of 3 octets", raw_frame(3, 0, 1, b"\x00\x00\x08"), GOAWAY, E.FRAME_SIZE_ERROR),
    ("continuation without headers", ContinuationFrame(1, b"").serialize(), GOAWAY, E.PROTOCOL_ERROR),
    ("headers interrupted by another frame",
     raw_frame(1, 0, 1, Encoder().encode([(":method", "GET")])) + PingFrame(0, PING_DATA).serialize(),
     GOAWAY, E.PROTOCOL_ERROR),
    ("undecodable header block", raw_frame(1, 5, 1, b"\xff\xff\xff\xff"), GOAWAY, E.COMPRESSION_ERROR),
    ("uppercase header name", request(1, [("X-Upper", "1")]), GOAWAY, E.PROTOCOL_ERROR),
    ("request without :path",
     headers(1, [(":method", "GET"), (":scheme", "http"), (":authority", "a")]), GOAWAY,
     E.PROTOCOL_ERROR),
    ("connection-specific header", request(1, [("connection", "keep-alive")]), GOAWAY,
     E.PROTOCOL_ERROR),
    ("data after END_STREAM (half-closed remote)", request(1) + DataFrame(1, b"late").serialize(), RST,
     E.STREAM_CLOSED),
    # RFC 9113 5.1 "closed": frames after RST_STREAM are a stream or connection error STREAM_CLOSED
    ("data after the client's RST_STREAM",
     request(1, end=False) + RstStreamFrame(1, E.CANCEL).serialize() + DataFrame(1, b"late").serialize(),
     EITHER, E.STREAM_CLOSED),
    ("stream window overflow", request(1, end=False) + WindowUpdateFrame(1, 2**31 - 1).serialize() * 2, RST,
     E.FLOW_CONTROL_ERROR),
    ("header list over max_request_headers_kb (60 KiB)", request(1, [("x-big", "v" * 61 * 1024)]), ANSWER,
     "431"),
    ("header list over the decoder's 64 KiB", request(1, [("x-big", "v" * 70 * 1024)]), GOAWAY,
     E.ENHANCE_YOUR_CALM),
]  # fmt: skip


@pytest.fixture
def h2_sidecar(meshtrace_process: Any, tmp_path: Path, harness: Any) -> Any:
    ip = harness.loopback()
    doc = harness.config_doc("solo", "http://127.0.0.1:9", 0.0)
    return harness.start_sidecar(meshtrace_process, tmp_path, "solo", ip, harness.free_port(ip), doc)


def _matches(expect: str, detail: Any) -> Callable[[Frame], bool]:
    if expect == GOAWAY:
        return is_goaway
    if expect in (RST, EITHER):
        return lambda f: isinstance(f, RstStreamFrame | GoAwayFrame)
    return lambda f: isinstance(f, HeadersFrame) and f.stream_id == 1


def test_conformance_cases(h2_sidecar: Any) -> None:
    """All cases on one sidecar (one process: the cases are cheap, the process is not)."""
    address = h2_sidecar.address("outbound")
    failures = []
    for name, payload, expect, detail in CASES:
        got = exchange(address, payload, _matches(expect, detail))
        last = got[-1] if got else None
        if expect == GOAWAY:
            ok = isinstance(last, GoAwayFrame) and last.error_code == detail
        elif expect == RST:
            ok = isinstance(last, RstStreamFrame) and last.stream_id == 1 and last.error_code == detail
        elif expect == EITHER:
            ok = isinstance(last, RstStreamFrame | GoAwayFrame) and last.error_code == detail
        else:
            ok = isinstance(last, HeadersFrame) and f":status{detail}".encode() in _decoded(last)
        if not ok:
            failures.append(f"{name}: got {last!r}")
        alive(address)
    assert not failures, "\n".join(failures)


def _decoded(frame: HeadersFrame) -> bytes:
    from hpack import Decoder

    return b"".join(k + v for k, v in Decoder().decode(frame.data, raw=True))


def test_ping_settings_ack_and_goaway(h2_sidecar: Any) -> None:
    address = h2_sidecar.address("outbound")
    with connect(address) as sock:
        sock.sendall(PREFACE + SETTINGS)
        frames = read_frames(sock, lambda f: isinstance(f, SettingsFrame) and "ACK" in f.flags)
        # the server's own SETTINGS (Envoy's limits), then the ACK of ours
        own = next(f for f in frames if isinstance(f, SettingsFrame) and "ACK" not in f.flags)
        assert own.settings[SettingsFrame.INITIAL_WINDOW_SIZE] == 256 * 1024 * 1024
        assert own.settings[SettingsFrame.MAX_CONCURRENT_STREAMS] == 2**31 - 1
        assert own.settings[SettingsFrame.MAX_FRAME_SIZE] == 16384
        assert any(isinstance(f, SettingsFrame) and "ACK" in f.flags for f in frames)
        sock.sendall(PingFrame(0, PING_DATA).serialize())
        pong = read_frames(sock, lambda f: isinstance(f, PingFrame))[-1]
        assert isinstance(pong, PingFrame) and "ACK" in pong.flags and pong.opaque_data == PING_DATA
        # a client GOAWAY: the sidecar finishes and closes without an error
        sock.sendall(GoAwayFrame(0, 0, E.NO_ERROR).serialize())
        rest = read_frames(sock, is_goaway, timeout=3)
        assert all(f.error_code == E.NO_ERROR for f in rest if isinstance(f, GoAwayFrame))
    alive(address)


def test_bad_preface_is_not_http2(h2_sidecar: Any) -> None:
    """A preface that stops matching is HTTP/1.1 to the listener: `PRI * HTTP/2.0` with a broken
    tail is a malformed HTTP/1.1 request, answered 400 and closed."""
    address = h2_sidecar.address("outbound")
    with connect(address) as sock:
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n")
        sock.settimeout(5)
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 4")
    alive(address)


def test_rst_stream_from_client_keeps_connection(h2_sidecar: Any) -> None:
    """A client resetting a stream it opened ends that stream only: the connection still serves."""
    address = h2_sidecar.address("outbound")
    with connect(address) as sock:
        sock.sendall(PREFACE + SETTINGS + request(1, end=False) + RstStreamFrame(1, E.CANCEL).serialize())
        sock.sendall(PingFrame(0, PING_DATA).serialize())
        got = read_frames(sock, lambda f: isinstance(f, PingFrame) and "ACK" in f.flags)
        assert not any(isinstance(f, GoAwayFrame) for f in got)
        assert isinstance(got[-1], PingFrame)


# -- fuzz: whatever follows the preface, the listener answers or closes, and keeps serving

FRAME = st.builds(
    raw_frame,
    st.integers(0, 12),
    st.integers(0, 255),
    st.sampled_from([0, 1, 2, 3, 5, 2**31 - 1]),
    st.binary(max_size=64),
)


def _poke(sidecar: Any, payload: bytes) -> None:
    """Send, read what comes back for a moment, then check the listener still serves and
    nothing went wrong inside it (an unexpected error is logged with a traceback)."""
    address = sidecar.address("outbound")
    with connect(address) as sock:
        sock.sendall(PREFACE + payload)
        read_frames(sock, is_goaway, timeout=0.3)
    alive(address)
    assert "Traceback" not in sidecar.output()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=512))
def test_fuzz_random_bytes_after_preface(h2_sidecar: Any, data: bytes) -> None:
    _poke(h2_sidecar, data)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames=st.lists(FRAME, max_size=8), with_request=st.booleans())
def test_fuzz_random_frame_sequences(h2_sidecar: Any, frames: list[bytes], with_request: bool) -> None:
    head = SETTINGS + (request(1, end=False) if with_request else b"")
    _poke(h2_sidecar, head + b"".join(frames))


def test_idle_connection_gets_goaway(meshtrace_process: Any, tmp_path: Path, harness: Any) -> None:
    """--idle-timeout applies to HTTP/2 connections too: no stream for that long, GOAWAY
    (NO_ERROR) and close. A preface begun and not finished is closed after --header-timeout."""
    ip = harness.loopback()
    doc = harness.config_doc("solo", "http://127.0.0.1:9", 0.0)
    proc = harness.start_sidecar(
        meshtrace_process, tmp_path, "solo", ip, harness.free_port(ip), doc,
        "--idle-timeout", "1", "--header-timeout", "1",
    )  # fmt: skip
    with connect(proc.address("outbound")) as sock:
        sock.sendall(PREFACE[:10])
        sock.settimeout(5)
        assert sock.recv(100) == b""  # closed, nothing answered
    with connect(proc.address("outbound")) as sock:
        sock.sendall(PREFACE + SETTINGS)
        started = time.monotonic()
        got = read_frames(sock, is_goaway, timeout=5)
        assert isinstance(got[-1], GoAwayFrame) and got[-1].error_code == E.NO_ERROR
        assert time.monotonic() - started > 0.8


def test_rapid_reset_does_not_stop_the_listener(h2_sidecar: Any) -> None:
    """Streams opened and reset at once, a thousand on one connection (the "rapid reset"
    pattern): each is answered or dropped, the connection still answers PING and nothing fails
    inside the sidecar."""
    address = h2_sidecar.address("outbound")
    own = [(":method", "GET"), (":scheme", "http"), (":authority", address), (":path", "/")]
    burst = b"".join(
        headers(sid, own, end=True) + RstStreamFrame(sid, E.CANCEL).serialize() for sid in range(1, 2001, 2)
    )
    with connect(address) as sock:
        sock.sendall(PREFACE + SETTINGS + burst + PingFrame(0, PING_DATA).serialize())
        got = read_frames(sock, lambda f: isinstance(f, PingFrame) and "ACK" in f.flags, timeout=20)
        assert isinstance(got[-1], PingFrame)
        assert not any(isinstance(f, GoAwayFrame) for f in got)
    alive(address)
    assert "Traceback" not in h2_sidecar.output()
