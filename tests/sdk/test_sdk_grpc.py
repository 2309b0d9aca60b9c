"""meshtrace.sdk.grpc with a real grpcio server and client (in a fresh interpreter: the global
tracer provider can be set once per process): span names, kinds, rpc.* attributes, the context
crossing in metadata, and the status rules for clients and servers."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

SCRIPT = r"""
import asyncio, json, grpc
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from meshtrace.sdk import init_tracer
from meshtrace.sdk.grpc import generic_service, unary_call

exporter = InMemorySpanExporter()
shutdown = init_tracer("svc", exporter=exporter)

async def ok(request, context):
    return request[::-1]

async def bad(request, context):
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no such user")

async def boom(request, context):
    raise RuntimeError("boom")

async def main():
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((generic_service("demo.Users", {"Ok": ok, "Bad": bad, "Boom": boom}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    out = {}
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.enable_http_proxy", 0)]) as ch:
        out["Ok"] = (await unary_call(ch, "demo.Users", "Ok", b"abc", 5.0)).decode()
        for method in ("Bad", "Boom"):
            try:
                await unary_call(ch, "demo.Users", method, b"", 5.0)
            except grpc.aio.AioRpcError as err:
                out[method] = err.code().name
    await server.stop(None)
    return out

answers = asyncio.run(main())
shutdown()
spans = [
    {"name": s.name, "kind": s.kind.name, "attrs": dict(s.attributes), "status": s.status.status_code.name,
     "trace": s.context.trace_id, "id": s.context.span_id, "parent": s.parent.span_id if s.parent else None}
    for s in exporter.get_finished_spans()
]
print(json.dumps({"answers": answers, "spans": spans}))
"""


@pytest.mark.e2e
def test_grpc_client_and_server_spans() -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=True
    )
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    assert doc["answers"] == {"Ok": "cba", "Bad": "INVALID_ARGUMENT", "Boom": "UNKNOWN"}
    spans = {(s["name"], s["kind"]): s for s in doc["spans"]}
    assert len(spans) == 6
    for method, server_status, code in (("Ok", "UNSET", 0), ("Bad", "UNSET", 3), ("Boom", "ERROR", 2)):
        client = spans[(f"demo.Users/{method}", "CLIENT")]
        server = spans[(f"demo.Users/{method}", "SERVER")]
        for span in (client, server):
            assert span["attrs"]["rpc.system"] == "grpc"
            assert span["attrs"]["rpc.service"] == "demo.Users" and span["attrs"]["rpc.method"] == method
            assert span["attrs"]["rpc.grpc.status_code"] == code
        # the server continued the client's trace from the call's metadata
        assert server["trace"] == client["trace"] and server["parent"] == client["id"]
        # a client span is an error for any code but OK; a server span only for server-side codes
        assert client["status"] == ("UNSET" if code == 0 else "ERROR")
        assert server["status"] == server_status
