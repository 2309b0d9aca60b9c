"""The `otlp` receiver (gRPC 4317, HTTP 4318 `/v1/traces`)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from meshtrace.collector.component import Component, ComponentID, Kind, TracesConsumer
from meshtrace.collector.receivers.otlp.config import GrpcConfig, HttpConfig, OtlpReceiverConfig


class OtlpReceiverFactory:
    type = "otlp"
    kind = Kind.RECEIVER
    config_type = OtlpReceiverConfig

    def default_config(self) -> dict[str, Any]:
        return {"protocols": {"grpc": asdict(GrpcConfig()), "http": asdict(HttpConfig())}}

    def create(self, id: ComponentID, config: Any, next_consumer: TracesConsumer | None) -> Component:
        from meshtrace.collector.receivers.otlp.receiver import OtlpReceiver

        assert next_consumer is not None
        return OtlpReceiver(id, config, next_consumer)


factory = OtlpReceiverFactory()
