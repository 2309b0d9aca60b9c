"""Real gRPC apps for the sidecar tests (grpcio, raw-bytes messages through generic handlers, so
no generated code): an echo service with every streaming kind, deadlines, chosen status codes,
trailers-only failures and a flaky method; and a small HTTP/2 (h2c) echo server on `h2` for
httpx."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import h2.config
import h2.connection
import h2.events
import h2.settings
from hyperframe.frame import GoAwayFrame

SERVICE = "mesh.Echo"
MESSAGE_LIMITS = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]


def _ident(b: bytes) -> bytes:
    return b


class EchoApp:
    """The backend: `grpc.server` on `host`, port chosen by the kernel."""

    def __init__(self, host: str) -> None:
        self.flaky_left: dict[str, int] = {}  # key -> failures still to give (UNAVAILABLE)
        self.calls: dict[str, int] = {}
        self.cancelled = threading.Event()
        self.produced = 0  # server-stream messages the transport took
        self.lock = threading.Lock()
        handlers = {
            "Unary": grpc.unary_unary_rpc_method_handler(self.unary, _ident, _ident),
            "Metadata": grpc.unary_unary_rpc_method_handler(self.metadata, _ident, _ident),
            "Status": grpc.unary_unary_rpc_method_handler(self.status, _ident, _ident),
            "Flaky": grpc.unary_unary_rpc_method_handler(self.flaky, _ident, _ident),
            "Slow": grpc.unary_unary_rpc_method_handler(self.slow, _ident, _ident),
            "ClientStream": grpc.stream_unary_rpc_method_handler(self.client_stream, _ident, _ident),
            "ServerStream": grpc.unary_stream_rpc_method_handler(self.server_stream, _ident, _ident),
            "Bidi": grpc.stream_stream_rpc_method_handler(self.bidi, _ident, _ident),
        }
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=16),
            handlers=[grpc.method_handlers_generic_handler(SERVICE, handlers)],
            options=[
                ("grpc.max_receive_message_length", 64 << 20),
                ("grpc.max_send_message_length", 64 << 20),
            ],
        )
        self.port = self.server.add_insecure_port(f"{host}:0")
        self.server.start()

    def close(self) -> None:
        self.server.stop(0)

    def _count(self, name: str) -> None:
        with self.lock:
            self.calls[name] = self.calls.get(name, 0) + 1

    def unary(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self._count("Unary")
        return request

    def metadata(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        """The request metadata as JSON (what the app saw of the trace context)."""
        return json.dumps(dict(context.invocation_metadata())).encode()

    def status(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        """Fails with the status code named in the request (`5`, `14`...), before any message:
        grpc answers trailers-only."""
        context.abort(grpc.StatusCode[_code_name(int(request))], f"asked for {int(request)}")
        raise AssertionError("abort returns by raising")

    def flaky(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        key = request.decode()
        self._count(f"Flaky:{key}")
        with self.lock:
            left = self.flaky_left.get(key, 0)
            if left:
                self.flaky_left[key] = left - 1
        if left:
            context.abort(grpc.StatusCode.UNAVAILABLE, "not yet")
        return b"ok:" + request

    def slow(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        deadline = time.monotonic() + float(request.decode())
        while time.monotonic() < deadline:
            if not context.is_active():
                self.cancelled.set()
                break
            time.sleep(0.02)
        return b"late"

    def client_stream(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        n = size = 0
        for r in requests:
            n += 1
            size += len(r)
        return f"{n}:{size}".encode()

    def server_stream(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        count, size = (int(x) for x in request.decode().split(":"))
        for i in range(count):
            yield bytes([i % 256]) * size
            self.produced += 1

    def bidi(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        for r in requests:
            yield b"echo:" + r


def _code_name(value: int) -> str:
    return next(c.name for c in grpc.StatusCode if c.value[0] == value)


def channel(outbound: str, authority: str) -> grpc.Channel:
    """An app's channel through its sidecar's outbound listener (h2c prior knowledge), the
    Service named by :authority as the capture would route it."""
    return grpc.insecure_channel(
        outbound,
        options=[
            ("grpc.default_authority", authority),
            ("grpc.enable_retries", 0),
            *MESSAGE_LIMITS,
        ],
    )


def method(ch: grpc.Channel, kind: str, name: str) -> Any:
    path = f"/{SERVICE}/{name}"
    make = {
        "unary": ch.unary_unary,
        "client": ch.stream_unary,
        "server": ch.unary_stream,
        "bidi": ch.stream_stream,
    }[kind]
    return make(path, request_serializer=_ident, response_deserializer=_ident)


class H2EchoApp:
    """An HTTP/2 (h2c prior knowledge) server on `h2` in its own thread: answers every request
    with its headers (and request trailers, as `trailers`) as JSON plus the request body's length,
    and a trailer. `/slow` answers after
    0.5 s; `/goaway` answers, then sends GOAWAY. It allows `max_streams` concurrent streams per
    connection and counts the connections it accepted."""

    def __init__(self, host: str, max_streams: int = 100) -> None:
        self.max_streams = max_streams
        self.connections = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        started = asyncio.run_coroutine_threadsafe(asyncio.start_server(self._serve, host, 0), self.loop)
        self.server = started.result(10)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        config = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        conn = h2.connection.H2Connection(config)
        conn.local_settings = h2.settings.Settings(
            client=False, initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.max_streams}
        )
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        heads: dict[int, dict[str, str]] = {}
        sizes: dict[int, int] = {}

        async def answer(sid: int) -> None:
            head = heads.pop(sid)
            if head[":path"] == "/slow":
                await asyncio.sleep(0.5)
            body = json.dumps({"headers": head, "size": sizes.pop(sid)}).encode()
            conn.send_headers(sid, [(":status", "200"), ("content-type", "application/json")])
            conn.send_data(sid, body)
            conn.send_headers(sid, [("x-trailer", "done")], end_stream=True)
            writer.write(conn.data_to_send())
            if head[":path"] == "/goaway":
                # written by hand: h2's close_connection() would also refuse to finish the
                # streams still in flight, which a GOAWAY lets complete (RFC 9113 6.8)
                last = conn.highest_inbound_stream_id
                writer.write(GoAwayFrame(0, last_stream_id=last, error_code=0).serialize())

        tasks = set()
        while data := await reader.read(65536):
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    heads[event.stream_id] = dict(event.headers)
                    sizes[event.stream_id] = 0
                elif isinstance(event, h2.events.DataReceived):
                    sizes[event.stream_id] += len(event.data)
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.TrailersReceived):
                    heads[event.stream_id]["trailers"] = json.dumps(dict(event.headers))
                elif isinstance(event, h2.events.StreamEnded):
                    task = asyncio.ensure_future(answer(event.stream_id))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
            writer.write(conn.data_to_send())
            await writer.drain()
        writer.close()

    def close(self) -> None:
        async def stop() -> None:
            self.server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
