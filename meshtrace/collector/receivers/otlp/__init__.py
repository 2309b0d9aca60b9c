"""The `otlp` receiver (gRPC 4317, HTTP 4318 `/v1/traces`)."""

from __future__ import annotations

from meshtrace.collector.component import Component, ComponentID, Kind, TracesConsumer
from meshtrace.collector.factory import ComponentFactory
from meshtrace.collector.receivers.otlp.config import OtlpReceiverConfig


def _build(id: ComponentID, config: OtlpReceiverConfig, next_consumer: TracesConsumer | None) -> Component:
    # Imported here: `validate` and the lint need the config, not grpcio and aiohttp.
    from meshtrace.collector.receivers.otlp.receiver import OtlpReceiver

    assert next_consumer is not None
    return OtlpReceiver(id, config, next_consumer)


factory = ComponentFactory("otlp", Kind.RECEIVER, OtlpReceiverConfig, _build)
