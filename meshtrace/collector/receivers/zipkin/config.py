"""The zipkin receiver's config, with the Collector's defaults (`localhost:9411`, bound on
127.0.0.1 as every meshtrace receiver: docs/architecture.md, rules of the house)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from meshtrace.collector.schema import host_port

MIB = 1024 * 1024


@dataclass
class ZipkinReceiverConfig:
    endpoint: str = "localhost:9411"
    parse_string_tags: bool = False
    max_request_body_size: int = 20 * MIB
    include_metadata: bool = False
    cors: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        host_port(self.endpoint)
        if self.max_request_body_size <= 0:
            raise ValueError("max_request_body_size must be positive")

    def bind_address(self) -> tuple[str, int]:
        """(host, port) to listen on; `localhost` means the IPv4 loopback only."""
        host, port = host_port(self.endpoint)
        return ("127.0.0.1" if host == "localhost" else host), port
