"""What every trace processor shares: its next consumer, its item counters
(`otelcol_processor_incoming_items` / `outgoing_items`, label `otel_signal="traces"`), and a
factory built from a config dataclass and a constructor."""

from __future__ import annotations

import builtins
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, fields, is_dataclass
from typing import Any, Generic, TypeVar

from meshtrace.collector.component import Component, ComponentID, Host, Kind, TracesConsumer
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


@dataclass(frozen=True)
class ProcessorFactory(Generic[C]):
    """A `Factory` (meshtrace/collector/component.py) for a processor with a dataclass config."""

    type: str
    config_type: builtins.type[C]  # `type` is the component type name here
    build: Callable[[ComponentID, C, TracesConsumer], Component]
    kind: Kind = Kind.PROCESSOR

    def default_config(self) -> dict[str, Any]:
        """The field defaults, read without `__init__`: a config may be invalid until the user
        sets a required value (memory_limiter's check_interval and limit)."""
        out: dict[str, Any] = {}
        for f in fields(self.config_type):  # type: ignore[arg-type]
            value = f.default_factory() if f.default_factory is not MISSING else f.default
            out[f.name] = asdict(value) if is_dataclass(value) else value  # type: ignore[arg-type]
        return out

    def create(self, id: ComponentID, config: Any, next_consumer: TracesConsumer | None) -> Component:
        if next_consumer is None:
            raise ValueError(f"processor {id} needs a next consumer")
        return self.build(id, config, next_consumer)
