"""The otlp receiver's config, with the Collector's defaults (endpoints on 127.0.0.1:
docs/architecture.md, rules of the house)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from meshtrace.collector.schema import host_port

MIB = 1024 * 1024
IGNORED = "accepted for compatibility and not implemented yet: ignored"


@dataclass
class GrpcConfig:
    endpoint: str = "127.0.0.1:4317"
    transport: Literal["tcp"] = "tcp"
    max_recv_msg_size_mib: int = 4
    max_concurrent_streams: int = 0
    read_buffer_size: int = 512 * 1024
    write_buffer_size: int = 0
    include_metadata: bool = field(default=False, metadata={"warning": IGNORED})
    keepalive: dict[str, Any] = field(default_factory=dict, metadata={"warning": IGNORED})

    def __post_init__(self) -> None:
        host_port(self.endpoint)
        if self.max_recv_msg_size_mib <= 0:
            raise ValueError("max_recv_msg_size_mib must be positive")


@dataclass
class HttpConfig:
    endpoint: str = "127.0.0.1:4318"
    traces_url_path: str = "/v1/traces"
    max_request_body_size: int = 20 * MIB
    include_metadata: bool = field(default=False, metadata={"warning": IGNORED})
    cors: dict[str, Any] = field(default_factory=dict, metadata={"warning": IGNORED})

    def __post_init__(self) -> None:
        host_port(self.endpoint)
        if not self.traces_url_path.startswith("/"):
            raise ValueError("traces_url_path must start with /")
        if self.max_request_body_size <= 0:
            raise ValueError("max_request_body_size must be positive")


@dataclass
class Protocols:
    grpc: GrpcConfig | None = None
    http: HttpConfig | None = None


@dataclass
class OtlpReceiverConfig:
    protocols: Protocols = field(default_factory=Protocols)

    def __post_init__(self) -> None:
        if self.protocols.grpc is None and self.protocols.http is None:
            raise ValueError("must specify at least one protocol (protocols.grpc or protocols.http)")
