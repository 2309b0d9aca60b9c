"""What every trace processor shares: its next consumer, its item counters
(`otelcol_processor_incoming_items` / `outgoing_items`, label `otel_signal="traces"`), and a
factory built from a config dataclass and a constructor."""

from __future__ import annotations

import builtins
from collections.abc import Callable
from typing import TypeVar

from meshtrace.collector.component import Component, ComponentID, Host, Kind, TracesConsumer
from meshtrace.collector.factory import ComponentFactory
from meshtrace.collector.telemetry import TELEMETRY

C = TypeVar("C")


class TracesProcessor:
    """Base class: `consume_traces` is the subclass's; `start`/`shutdown` default to no-ops."""

    def __init__(self, id: ComponentID, next_consumer: TracesConsumer) -> None:
        self.id = id
        self.next = next_consumer
        self.items = TELEMETRY.processor_items(id)

    async def start(self, host: Host) -> None:
        return None

    async def shutdown(self) -> None:
        return None


def processor_factory(
    type: str, config_type: builtins.type[C], build: Callable[[ComponentID, C, TracesConsumer], Component]
) -> ComponentFactory[C]:
    """The `ComponentFactory` of a processor: like any other, but it always has a next consumer."""

    def create(id: ComponentID, config: C, next_consumer: TracesConsumer | None) -> Component:
        if next_consumer is None:
            raise ValueError(f"processor {id} needs a next consumer")
        return build(id, config, next_consumer)

    return ComponentFactory(type, Kind.PROCESSOR, config_type, create)
