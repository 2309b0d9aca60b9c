"""The `zipkin` receiver (9411): `/api/v2/spans` JSON and protobuf, `/api/v1/spans` JSON."""

from __future__ import annotations

from meshtrace.collector.component import Component, ComponentID, Kind, TracesConsumer
from meshtrace.collector.factory import ComponentFactory
from meshtrace.collector.receivers.zipkin.config import ZipkinReceiverConfig


def _build(id: ComponentID, config: ZipkinReceiverConfig, next_consumer: TracesConsumer | None) -> Component:
    # Imported here: `validate` and the lint need the config, not aiohttp.
    from meshtrace.collector.receivers.zipkin.receiver import ZipkinReceiver

    if next_consumer is None:
        raise ValueError(f"receiver {id} needs a next consumer")
    return ZipkinReceiver(id, config, next_consumer)


factory = ComponentFactory("zipkin", Kind.RECEIVER, ZipkinReceiverConfig, _build)
