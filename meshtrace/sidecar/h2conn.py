"""HTTP/2 connections: the socket shell around python-hyper's sans-IO `h2` state machine, for both
sides of the proxy. One reader task per connection feeds received bytes to `h2` and hands each
stream's events to that stream; streams are read and written by the proxy's per-stream tasks.

Flow control is end to end: received DATA is acknowledged (WINDOW_UPDATE) only when the stream's
consumer says it has forwarded it (`Stream.ack`), so a slow receiver slows its sender instead of
filling this process; sending waits for the peer's window. Limits are Envoy's defaults."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Final

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.connection import ConnectionState
from h2.errors import ErrorCodes
from hpack.exceptions import HPACKError, OversizedHeaderListError
from hyperframe.exceptions import InvalidDataError
from hyperframe.frame import GoAwayFrame

from meshtrace.sidecar.backend import Stream as NetworkStream

log = logging.getLogger("meshtrace.sidecar")

PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# Envoy's Http2ProtocolOptions defaults (api/envoy/config/core/v3/protocol.proto): max concurrent
# streams 2^31-1, initial stream and connection windows 256 MiB, HPACK table 4096; the frame size
# is HTTP/2's default (16384), which Envoy does not change.
MAX_CONCURRENT_STREAMS: Final = 2**31 - 1
INITIAL_STREAM_WINDOW: Final = 256 * 1024 * 1024
INITIAL_CONNECTION_WINDOW: Final = 256 * 1024 * 1024
MAX_FRAME_SIZE: Final = 16384
HPACK_TABLE_SIZE: Final = 4096
# a header list over Envoy's max_request_headers_kb (60 KiB) is answered 431 on its stream (RFC
# 9113 10.5.1); the HPACK decoder itself stops at h2's 64 KiB (a connection error, since a block
# it did not decode leaves the compression state unknown)
MAX_HEADER_LIST_SIZE: Final = 60 * 1024
DECODER_HEADER_LIST_LIMIT: Final = 64 * 1024
# DATA received but not yet forwarded, per connection, beyond which the reader stops reading the
# socket (Envoy's per_connection_buffer_limit_bytes default, 1 MiB): with 256 MiB windows the
# peer may send far more than the proxy should hold
CONNECTION_BUFFER_LIMIT: Final = 1024 * 1024
WRITE_HIGH_WATER: Final = 256 * 1024
ALPN_H2: Final = ("istio-h2", "h2")

Headers = list[tuple[str, str]]


class StreamGone(Exception):
    """The stream was reset (by the peer or locally) or its connection ended; `code` is the
    RST_STREAM/GOAWAY error code, `refused` whether the peer never processed it (retry safe)."""

    def __init__(self, detail: str, code: int = ErrorCodes.CANCEL, refused: bool = False) -> None:
        super().__init__(detail)
        self.code = code
        self.refused = refused


# what a stream's reader gets, in order: one of these per h2 event for the stream
class Head:
    __slots__ = ("end", "headers", "informational")

    def __init__(self, headers: Headers, end: bool, informational: bool = False) -> None:
        self.headers = headers
        self.end = end  # END_STREAM on this HEADERS frame (a trailers-only answer, a bodiless request)
        self.informational = informational


class Data:
    __slots__ = ("data", "end", "flow")

    def __init__(self, data: bytes, flow: int, end: bool) -> None:
        self.data = data
        self.flow = flow  # flow-controlled length (data + padding), what `ack` gives back
        self.end = end


class Trailers:
    __slots__ = ("headers",)

    def __init__(self, headers: Headers) -> None:
        self.headers = headers


class End:
    __slots__ = ()


END: Final = End()
StreamEvent = Head | Data | Trailers | End


def header_list_size(headers: Headers) -> int:
    """RFC 9113 6.5.2: name + value + 32 octets per field."""
    return sum(len(k) + len(v) + 32 for k, v in headers)


def _send_data(h2c: h2.connection.H2Connection, stream_id: int, data: bytes, end: bool) -> None:
    h2c.send_data(stream_id, data, end_stream=end)


def _decode(raw: list[tuple[bytes, bytes]]) -> Headers:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw]


class Stream:
    """One stream: its events in arrival order (`next_event`) and the sending side."""

    __slots__ = ("_events", "_waiter", "_window", "conn", "gone", "id", "linked", "received", "remote_ended")

    def __init__(self, conn: H2Conn, stream_id: int) -> None:
        self.conn = conn
        self.id = stream_id
        self._events: deque[StreamEvent] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._window: asyncio.Future[None] | None = None
        self.gone: StreamGone | None = None
        self.received = 0  # DATA bytes received, for request_size/response_size
        self.remote_ended = False  # the peer has sent END_STREAM
        self.linked: Stream | None = None  # reset (CANCEL) when this stream fails

    # -- fed by the connection's reader
    def _push(self, event: StreamEvent) -> None:
        if event is END or (isinstance(event, Head | Data) and event.end):
            self.remote_ended = True
        self._events.append(event)
        self._wake()

    def _fail(self, gone: StreamGone) -> None:
        if self.gone is None:
            self.gone = gone
        self._wake()
        self._wake_window()
        linked, self.linked = self.linked, None
        if linked is not None:
            linked.reset(ErrorCodes.CANCEL)

    def _wake(self) -> None:
        w = self._waiter
        if w is not None:
            self._waiter = None
            if not w.done():
                w.set_result(None)

    def _wake_window(self) -> None:
        w = self._window
        if w is not None:
            self._window = None
            if not w.done():
                w.set_result(None)

    # -- for the proxy
    async def next_event(self) -> StreamEvent:
        """The next event; raises StreamGone once the stream was reset or the connection ended
        (events that came before are still handed out first)."""
        while not self._events:
            if self.gone is not None:
                raise self.gone
            self._waiter = self.conn.wire.loop.create_future()
            await self._waiter
        return self._events.popleft()

    def ack(self, flow: int) -> None:
        """`flow` received bytes were forwarded: open the windows again by that much."""
        self.conn.acknowledge(self.id, flow)

    def send_headers(self, headers: Headers, end: bool = False) -> None:
        self._check()
        self.conn.call(lambda h2c: h2c.send_headers(self.id, headers, end_stream=end))

    async def send_data(self, data: bytes, end: bool = False) -> None:
        """Send `data` within the peer's flow-control windows and frame size, waiting for
        WINDOW_UPDATEs as needed; END_STREAM on the last frame when `end`."""
        conn = self.conn
        view = memoryview(data)
        while True:
            self._check()
            window = conn.window(self.id)
            n = min(window, conn.h2.max_outbound_frame_size, len(view))
            if n == 0 and view:
                self._window = conn.wire.loop.create_future()
                await self._window
                continue
            chunk, view = view[:n].tobytes(), view[n:]
            conn.call(partial(_send_data, stream_id=self.id, data=chunk, end=end and not view))
            await conn.drain()
            if not view:
                return

    def send_trailers(self, headers: Headers) -> None:
        self.send_headers(headers, end=True)

    def reset(self, code: int = ErrorCodes.CANCEL) -> None:
        """RST_STREAM (once); the stream is forgotten."""
        if self.gone is None:
            self.gone = StreamGone("reset locally", code)
            self.conn.reset(self.id, code)
        self.conn.forget(self.id)

    def finish(self) -> None:
        """The proxy is done with the stream: forget it (late DATA is acknowledged unread)."""
        self.conn.forget(self.id)

    def _check(self) -> None:
        if self.gone is not None:
            raise self.gone


class H2Conn:
    """One HTTP/2 connection over a `NetworkStream` (the socket), client or server side."""

    def __init__(self, wire: NetworkStream, client_side: bool) -> None:
        self.wire = wire
        self.client_side = client_side
        # outbound fields are not validated again: they are what h2 validated inbound plus the
        # proxy's own (about a fifth of a stream's h2 cost)
        config = h2.config.H2Configuration(
            client_side=client_side, header_encoding=None, validate_outbound_headers=False
        )
        self.h2 = h2.connection.H2Connection(config=config)
        self.h2.local_settings = h2.settings.Settings(
            client=client_side,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: INITIAL_STREAM_WINDOW,
                h2.settings.SettingCodes.MAX_FRAME_SIZE: MAX_FRAME_SIZE,
                h2.settings.SettingCodes.HEADER_TABLE_SIZE: HPACK_TABLE_SIZE,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: DECODER_HEADER_LIST_LIMIT,
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
            },
        )
        self.streams: dict[int, Stream] = {}
        self._incoming: list[bytes] = []
        self._out: list[bytes] = []  # produced this turn, not yet written (see flush)
        self._out_size = 0
        self._write_scheduled = False
        self._unacked = 0
        self._room: asyncio.Future[None] | None = None
        self.closed = False
        self.goaway = False  # the peer sent GOAWAY: no new streams here
        self.on_request: Callable[[Stream], None] | None = None
        self.on_idle: Callable[[H2Conn], None] | None = None  # a stream slot freed (pools)
        self.error: str | None = None
        # the peer's first SETTINGS arrived (its MAX_CONCURRENT_STREAMS is known), or it closed
        self.settled = asyncio.Event()
        self.last_active = 0.0  # loop time a stream last ended (for close_when_idle)

    # -- h2 calls and writing
    def start(self) -> None:
        """Send the preface/SETTINGS and widen the connection window to Envoy's default."""
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(INITIAL_CONNECTION_WINDOW - 65535)
        self.flush()

    def call(self, op: Callable[[h2.connection.H2Connection], object]) -> None:
        """Run one sending operation on the state machine and write what it produced; an
        operation the state machine refuses (stream closed meanwhile) fails that stream only."""
        if self.closed:
            raise StreamGone("connection closed")
        try:
            op(self.h2)
        except (h2.exceptions.StreamClosedError, h2.exceptions.NoSuchStreamError) as exc:
            raise StreamGone(f"stream closed: {exc}") from None
        except h2.exceptions.ProtocolError as exc:
            raise StreamGone(f"cannot send: {exc}", ErrorCodes.INTERNAL_ERROR) from None
        self.flush()

    def flush(self) -> None:
        """Take what h2 produced; it is written at the end of this event-loop turn, so the frames
        of one turn (a response's HEADERS, DATA and trailers; WINDOW_UPDATEs) go in one send
        instead of a send each (which cost ~20 % more CPU per gRPC call)."""
        data = self.h2.data_to_send()
        if not data:
            return
        self._out.append(data)
        self._out_size += len(data)
        if self._out_size > WRITE_HIGH_WATER:
            self._write_out()
        elif not self._write_scheduled:
            self._write_scheduled = True
            self.wire.loop.call_soon(self._write_out)

    def _write_out(self) -> None:
        self._write_scheduled = False
        if self._out:
            data = b"".join(self._out)
            self._out.clear()
            self._out_size = 0
            if not self.wire.is_closing():
                self.wire.write(data)

    async def drain(self) -> None:
        if self.wire.buffered() + self._out_size > WRITE_HIGH_WATER:
            self._write_out()
            try:
                await self.wire.drain()
            except ConnectionError:
                raise StreamGone("connection closed") from None

    def window(self, stream_id: int) -> int:
        try:
            return self.h2.local_flow_control_window(stream_id)
        except (h2.exceptions.StreamClosedError, h2.exceptions.NoSuchStreamError):
            raise StreamGone("stream closed") from None

    def acknowledge(self, stream_id: int, flow: int) -> None:
        self._unacked -= flow
        if flow and not self.closed:
            with contextlib.suppress(h2.exceptions.ProtocolError):
                # closed streams still give back their share of the connection window
                self.h2.acknowledge_received_data(flow, stream_id)
            self.flush()
        room = self._room
        if room is not None and self._unacked <= CONNECTION_BUFFER_LIMIT:
            self._room = None
            if not room.done():
                room.set_result(None)

    def reset(self, stream_id: int, code: int) -> None:
        if not self.closed:
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.h2.reset_stream(stream_id, code)
            self.flush()

    def close_when_idle(self, seconds: float) -> None:
        """GOAWAY and close once no stream has been open for `seconds` (Envoy's idle_timeout for
        HTTP/2 connections; 0 = never). One timer, re-armed for the remainder when it fires
        early, as the HTTP/1.1 side's."""
        if seconds <= 0:
            return
        loop = self.wire.loop

        def check() -> None:
            if self.closed:
                return
            if self.streams:  # busy: look again a period later
                loop.call_later(seconds, check)
                return
            due = self.last_active + seconds
            if loop.time() < due:
                loop.call_at(due, check)
                return
            self.close()

        self.last_active = loop.time()
        loop.call_at(self.last_active + seconds, check)

    def forget(self, stream_id: int) -> None:
        self.last_active = self.wire.loop.time()
        stream = self.streams.pop(stream_id, None)
        if stream is not None:
            # events never read still hold connection window: give it back
            for event in stream._events:
                if isinstance(event, Data):
                    self.acknowledge(stream_id, event.flow)
            stream._events.clear()
            if self.goaway and not self.streams:  # the last stream a GOAWAY let finish
                self.close()
            if self.on_idle is not None:
                self.on_idle(self)

    # -- opening streams (client side)
    def capacity(self) -> int:
        """How many more streams the peer accepts now (its MAX_CONCURRENT_STREAMS)."""
        if self.closed or self.goaway or self.wire.is_closing():
            return 0
        limit = self.h2.remote_settings.max_concurrent_streams
        return limit - self.h2.open_outbound_streams

    def open_stream(self, headers: Headers, end: bool) -> Stream:
        stream_id = self.h2.get_next_available_stream_id()
        stream = self.streams[stream_id] = Stream(self, stream_id)
        try:
            self.call(lambda h2c: h2c.send_headers(stream_id, headers, end_stream=end))
        except StreamGone:
            self.streams.pop(stream_id, None)
            raise
        return stream

    def close(self, code: int = ErrorCodes.NO_ERROR) -> None:
        """GOAWAY (when still open) and close the socket once written."""
        if not self.closed:
            with contextlib.suppress(Exception):
                self.h2.close_connection(code)
                self.flush()
        self._write_out()
        self._lost("connection closed")
        self.wire.close()

    # -- reading
    async def run(self) -> None:
        """Read until the connection ends: feed `h2`, dispatch its events."""
        wire = self.wire
        incoming = self._incoming
        wire.set_feed(incoming.append)
        try:
            while not self.closed:
                if incoming:
                    data = b"".join(incoming)
                    incoming.clear()
                    self.receive(data)
                    continue
                if self._unacked > CONNECTION_BUFFER_LIMIT:
                    self._room = wire.loop.create_future()
                    await self._room
                    continue
                if not await wire.wait():
                    break
        finally:
            self._write_out()
            self._lost("connection closed by peer")
            wire.close()

    def receive(self, data: bytes) -> None:
        """Feed received bytes; a connection error sends GOAWAY with its code and closes."""
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            # h2 has queued GOAWAY with the error code for this violation
            self.error = f"protocol error: {exc}"
            self._goaway_with(rfc_error_code(exc))
            self._lost(self.error)
            self.wire.close()
            return
        except Exception as exc:  # h2 failed on input it should have refused: end this connection only
            log.exception("h2 connection: unexpected error on input")
            self.error = f"internal error: {exc!r}"
            self.close(ErrorCodes.INTERNAL_ERROR)
            return
        for event in events:
            self._dispatch(event)
        self.flush()

    def _goaway_with(self, code: int) -> None:
        """Write what h2 queued, its closing GOAWAY carrying `code` (where h2's differs)."""
        data = self.h2.data_to_send()
        if data[-_GOAWAY_SIZE:][3:4] == b"\x07" and int.from_bytes(data[-4:], "big") != code:
            last = self.h2.highest_inbound_stream_id
            data = data[:-_GOAWAY_SIZE] + GoAwayFrame(0, last_stream_id=last, error_code=code).serialize()
        self._out.append(data)
        self._write_out()

    def _dispatch(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            sid = event.stream_id
            stream = self.streams[sid] = Stream(self, sid)
            stream._push(Head(_decode(event.headers), event.stream_ended is not None))
            if self.on_request is not None:
                self.on_request(stream)
            return
        if isinstance(event, h2.events.DataReceived):
            self._unacked += event.flow_controlled_length
            target = self.streams.get(event.stream_id)
            if target is None:  # reset or finished here: nobody reads it
                self.acknowledge(event.stream_id, event.flow_controlled_length)
                return
            target.received += len(event.data)
            target._push(Data(event.data, event.flow_controlled_length, event.stream_ended is not None))
            return
        if isinstance(event, h2.events.WindowUpdated):
            if event.stream_id:
                one = self.streams.get(event.stream_id)
                if one is not None:
                    one._wake_window()
            else:
                for stream in self.streams.values():
                    stream._wake_window()
            return
        if isinstance(event, h2.events.RemoteSettingsChanged):
            self.settled.set()
            for stream in self.streams.values():  # the initial window may have grown
                stream._wake_window()
            if self.on_idle is not None:  # MAX_CONCURRENT_STREAMS may have grown
                self.on_idle(self)
            return
        if isinstance(event, h2.events.ConnectionTerminated):
            self._on_goaway(event)
            return
        self._dispatch_stream(event)

    def _dispatch_stream(self, event: h2.events.Event) -> None:
        sid = getattr(event, "stream_id", None)
        target = self.streams.get(sid) if sid is not None else None
        if target is None:
            return
        if isinstance(event, h2.events.ResponseReceived):
            target._push(Head(_decode(event.headers), event.stream_ended is not None))
        elif isinstance(event, h2.events.InformationalResponseReceived):
            target._push(Head(_decode(event.headers), False, informational=True))
        elif isinstance(event, h2.events.TrailersReceived):
            target._push(Trailers(_decode(event.headers)))
        elif isinstance(event, h2.events.StreamEnded):
            target._push(END)
        elif isinstance(event, h2.events.StreamReset):
            code = event.error_code
            refused = code == ErrorCodes.REFUSED_STREAM
            target._fail(StreamGone(f"stream reset by peer ({code!r})", code, refused))

    def _on_goaway(self, event: h2.events.ConnectionTerminated) -> None:
        """RFC 9113 6.8: streams this side opened up to `last_stream_id` may still complete, later
        ones were never processed (refused: safe to retry); the peer's own streams (a client's
        requests, when the client sends GOAWAY) continue. No new stream is opened here."""
        self.goaway = True
        code = event.error_code if event.error_code is not None else ErrorCodes.NO_ERROR
        if self.client_side:
            last = event.last_stream_id if event.last_stream_id is not None else 2**31
            for sid, stream in list(self.streams.items()):
                if sid > last:
                    stream._fail(StreamGone("refused by GOAWAY", code, refused=True))
        if code != ErrorCodes.NO_ERROR:
            self.error = f"GOAWAY {code!r}"
        if self.streams:
            # h2 4.4.1 takes a received GOAWAY as the end of the connection and would refuse
            # the frames of the streams still allowed to finish: reopen its state machine
            self.h2.state_machine.state = (
                ConnectionState.CLIENT_OPEN if self.client_side else ConnectionState.SERVER_OPEN
            )
        else:
            self.close()
        if self.on_idle is not None:
            self.on_idle(self)

    def _lost(self, why: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.settled.set()
        for stream in self.streams.values():
            stream._fail(StreamGone(why, ErrorCodes.CANCEL))
        room = self._room
        if room is not None and not room.done():
            room.set_result(None)
        if self.on_idle is not None:
            self.on_idle(self)


_GOAWAY_SIZE: Final = 17  # h2's GOAWAY: a frame header and 8 octets, no debug data


def rfc_error_code(exc: h2.exceptions.ProtocolError) -> int:
    """The RFC 9113 error code for a connection error h2 raised. h2 4.4.1 sends PROTOCOL_ERROR
    in two cases where the RFC names another code: a field block HPACK cannot decode (4.3:
    COMPRESSION_ERROR) and a SETTINGS ACK with a payload (6.5: FRAME_SIZE_ERROR)."""
    cause = exc.__cause__
    if isinstance(cause, HPACKError) and not isinstance(cause, OversizedHeaderListError):
        return ErrorCodes.COMPRESSION_ERROR
    if isinstance(cause, InvalidDataError) and "ack frame must not have payload" in str(cause).lower():
        return ErrorCodes.FRAME_SIZE_ERROR
    return int(exc.error_code)


async def sniff_preface(wire: NetworkStream, idle: float, headers: float) -> bool:
    """Whether the connection starts with the HTTP/2 client preface (h2c prior knowledge), read
    without consuming: the bytes seen stay for whichever parser takes the connection. A prefix
    that stops matching decides HTTP/1.1 at once; the full preface, HTTP/2. The first bytes may
    take `idle` seconds, the rest of a begun preface `headers` (the slowloris bound); a
    connection that sends nothing for that long is ended as idle."""
    seen = bytearray()
    wire.set_feed(seen.extend)
    try:
        while len(seen) < len(PREFACE) and PREFACE.startswith(bytes(seen)):
            async with asyncio.timeout((headers if seen else idle) or None):
                if not await wire.wait():
                    break
    except TimeoutError:
        wire.wake_eof()
    wire.put_back(bytes(seen))
    return bytes(seen[: len(PREFACE)]) == PREFACE


def negotiated_h2(wire: NetworkStream) -> bool:
    """Whether TLS ALPN chose HTTP/2 on this connection."""
    ssl_object = wire.get_extra_info("ssl_object")
    return ssl_object is not None and ssl_object.selected_alpn_protocol() in ALPN_H2
