"""The demo's gRPC API, defined without a .proto build step: the backend's `meshtrace.demo.Users`
service has one unary method, `Count`, whose request and answer are JSON bytes (`{}` ->
`{"count": N}`). The frontend calls it on every `/api/data` when BACKEND_GRPC names the backend's
gRPC address; the backend serves it when GRPC_PORT is set."""

from __future__ import annotations

import json
from typing import Final

SERVICE: Final = "meshtrace.demo.Users"
COUNT: Final = "Count"
GRPC_PORT_ENV: Final = "GRPC_PORT"  # backend: serve the gRPC API on POD_IP:GRPC_PORT
BACKEND_GRPC_ENV: Final = "BACKEND_GRPC"  # frontend: host:port of the backend's gRPC API


def encode(doc: dict[str, object]) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def decode(data: bytes) -> dict[str, object]:
    """A message's JSON object; ValueError for anything else."""
    doc = json.loads(data or b"{}")
    if not isinstance(doc, dict):
        raise ValueError("a message is a JSON object")
    return doc
