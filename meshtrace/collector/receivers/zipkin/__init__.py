"""The `zipkin` receiver (9411): `/api/v2/spans` JSON and protobuf, `/api/v1/spans` JSON."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from meshtrace.collector.component import Component, ComponentID, Kind, TracesConsumer
from meshtrace.collector.receivers.zipkin.config import ZipkinReceiverConfig


class ZipkinReceiverFactory:
    type = "zipkin"
    kind = Kind.RECEIVER
    config_type = ZipkinReceiverConfig

    def default_config(self) -> dict[str, Any]:
        return asdict(ZipkinReceiverConfig())

    def create(self, id: ComponentID, config: Any, next_consumer: TracesConsumer | None) -> Component:
        from meshtrace.collector.receivers.zipkin.receiver import ZipkinReceiver

        if next_consumer is None:
            raise ValueError(f"receiver {id} needs a next consumer")
        return ZipkinReceiver(id, config, next_consumer)


factory = ZipkinReceiverFactory()
