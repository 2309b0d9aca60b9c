"""The small interfaces every collector component implements (like the Collector's
`component` package). Components are created by a `Factory` from a validated config and started
with a `Host` through which they find extensions and exporters by id.

Data flows as `meshtrace.model.Traces`, pushed through `TracesConsumer.consume_traces`. A consumer
refuses data it cannot take now by raising `RefusedError` (retryable: gRPC UNAVAILABLE / HTTP
503 or 429) and rejects data that can never be taken with `PermanentError` (HTTP 400).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from meshtrace.model import Traces

if TYPE_CHECKING:
    from meshtrace.collector.admission import Admission


class Kind(enum.Enum):
    RECEIVER = "receiver"
    PROCESSOR = "processor"
    EXPORTER = "exporter"
    EXTENSION = "extension"
    CONNECTOR = "connector"

    @property
    def section(self) -> str:
        """The config section that holds components of this kind (`receivers`, ...)."""
        return self.value + "s"


@dataclass(frozen=True, order=True)
class ComponentID:
    """`type[/name]`, e.g. `otlp`, `otlp/jaeger`."""

    type: str
    name: str = ""

    @classmethod
    def parse(cls, text: str) -> ComponentID:
        type_, sep, name = str(text).strip().partition("/")
        if not type_ or (sep and not name):
            raise ValueError(f"invalid component id {text!r}: expected type[/name]")
        return cls(type_, name)

    def __str__(self) -> str:
        return f"{self.type}/{self.name}" if self.name else self.type


class RefusedError(Exception):
    """Data not accepted now; the sender should retry (after `retry_after` seconds if known)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(Exception):
    """Data that can never be accepted (malformed); the sender must not retry it."""


@runtime_checkable
class TracesConsumer(Protocol):
    async def consume_traces(self, traces: Traces) -> None: ...


class Host(Protocol):
    """What a running component may ask of the collector it runs in."""

    def get_extension(self, id: ComponentID) -> Component | None: ...

    def get_exporter(self, id: ComponentID) -> Component | None: ...

    def admission(self) -> Admission:
        """The collector's admission control, shared by its receivers and memory limiters."""
        ...


class Component(Protocol):
    """Started once with the `Host`; `shutdown` flushes what it holds downstream (processors).

    Exporters may also have `async drain(timeout: float)`: on shutdown the service calls it
    first, to send what is queued for at most `timeout` seconds (see exporters/helper)."""

    async def start(self, host: Host) -> None: ...

    async def shutdown(self) -> None: ...


class TracesComponent(Component, TracesConsumer, Protocol):
    """What processors and exporters are: a component that consumes traces."""


@runtime_checkable
class PipelineWatcher(Protocol):
    """Optional for extensions (health_check): told when every pipeline has started / is stopping."""

    def ready(self) -> None: ...

    def not_ready(self) -> None: ...


class Factory(Protocol):
    """Creates one component type. `create` receives the validated config, with defaults applied.

    Config: if the factory has a `config_type` attribute (a dataclass, see
    `meshtrace.collector.schema`), the YAML is decoded into it (unknown keys, wrong types and
    `__post_init__` ValueErrors are reported with their key path) and `create` gets the instance;
    `meshtrace.collector.factory.ComponentFactory` builds such a factory in one statement. Without
    `config_type`, `create` gets `default_config()` deep-merged with the YAML, and keys not in
    `default_config()` are errors.

    A factory may also have `warnings(config) -> list[tuple[str, str]]`: (key path relative to
    the component, message) for values that work but surprise (e.g. TLS on by default).

    `next_consumer` is the processor or exporter fan-out after a receiver/processor; None for
    exporters and extensions.
    """

    type: str
    kind: Kind

    def default_config(self) -> dict[str, Any]: ...

    def create(self, id: ComponentID, config: Any, next_consumer: TracesConsumer | None) -> Component: ...


class StorageError(Exception):
    """A storage client could not read or write (disk full, I/O error, locked file)."""


class StorageClient(Protocol):
    """A component's own key/value store on disk (the Collector's `storage.Client`). `batch` is
    one atomic transaction: after it returns, its writes survive the process being killed."""

    async def get(self, key: str) -> bytes | None: ...

    async def batch(self, set: Mapping[str, bytes] | None = None, delete: Iterable[str] = ()) -> None: ...

    async def close(self) -> None: ...


@runtime_checkable
class StorageExtension(Protocol):
    """An extension that gives components storage clients (`file_storage`)."""

    async def get_client(self, kind: Kind, id: ComponentID, name: str = "") -> StorageClient: ...
