"""`ComponentFactory`: the Factory (component.py) of a component with a dataclass config, built
from the config class and a constructor, so each component declares itself in one statement:

    factory = ComponentFactory("debug", Kind.EXPORTER, DebugConfig, DebugExporter.create)
"""

from __future__ import annotations

import builtins
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from meshtrace.collector.component import Component, ComponentID, Kind, TracesConsumer

C = TypeVar("C")


def field_defaults(config_type: type) -> dict[str, Any]:
    """A dataclass's field defaults as a mapping, read without calling `__init__` (a config may be
    invalid until the user sets a required value, like the file exporter's `path`)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config_type):
        value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        out[f.name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value  # type: ignore[arg-type]
    return out


@dataclass(frozen=True)
class ComponentFactory(Generic[C]):
    type: str
    kind: Kind
    config_type: builtins.type[C]
    build: Callable[[ComponentID, C, TracesConsumer | None], Component]
    # (key path relative to the component, message) for values that work but surprise
    warnings: Callable[[C], list[tuple[str, str]]] | None = None

    def default_config(self) -> dict[str, Any]:
        return field_defaults(self.config_type)

    def create(self, id: ComponentID, config: Any, next_consumer: TracesConsumer | None) -> Component:
        return self.build(id, config, next_consumer)
