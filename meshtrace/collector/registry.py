"""Every component type the collector knows, by kind and type name.

A plain table: to add a component, add one line `"type": "module:attribute"`, where the attribute
is its `Factory` (meshtrace/collector/component.py). Modules are imported only when a config uses
the type, so `validate` and a collector without gRPC exporters stay light.
"""

from __future__ import annotations

import importlib
from typing import Any

from meshtrace.collector.component import Factory, Kind

RECEIVERS: dict[str, str] = {
    "otlp": "meshtrace.collector.receivers.otlp:factory",
    "zipkin": "meshtrace.collector.receivers.zipkin:factory",
}

PROCESSORS: dict[str, str] = {
    "batch": "meshtrace.collector.processors.batch:factory",
    "memory_limiter": "meshtrace.collector.processors.memory_limiter:factory",
    "probabilistic_sampler": "meshtrace.collector.processors.probabilistic_sampler:factory",
    "tail_sampling": "meshtrace.collector.processors.tail_sampling:factory",
}

EXPORTERS: dict[str, str] = {
    "otlp_grpc": "meshtrace.collector.exporters.otlp_grpc:factory",
    "otlp_http": "meshtrace.collector.exporters.otlp_http:factory",
    "debug": "meshtrace.collector.exporters.debug:factory",
    "file": "meshtrace.collector.exporters.file:factory",
    "store": "meshtrace.store.exporter:factory",
}

EXTENSIONS: dict[str, str] = {
    "file_storage": "meshtrace.collector.extensions.file_storage:factory",
    "health_check": "meshtrace.collector.extensions.health_check:factory",
    "query": "meshtrace.query.extension:factory",
}

CONNECTORS: dict[str, str] = {}

# What extension types can be used for: a config field with metadata {"extension": "storage"}
# (exporters' `sending_queue.storage`) must name an enabled extension with that capability.
CAPABILITIES: dict[str, frozenset[str]] = {"file_storage": frozenset({"storage"})}

# Old names a current Collector still accepts (or the seed still uses): old -> (new, warning).
ALIASES: dict[tuple[Kind, str], tuple[str, str]] = {
    (Kind.EXPORTER, "otlp"): ("otlp_grpc", "exporter type 'otlp' is a deprecated alias of 'otlp_grpc'"),
    (Kind.EXPORTER, "otlphttp"): (
        "otlp_http",
        "exporter type 'otlphttp' is a deprecated alias of 'otlp_http'",
    ),
    (Kind.EXPORTER, "logging"): (
        "debug",
        "the 'logging' exporter was removed in Collector v0.111 (a current collector rejects it); "
        "running it as 'debug'",
    ),
}

TABLES: dict[Kind, dict[str, str]] = {
    Kind.RECEIVER: RECEIVERS,
    Kind.PROCESSOR: PROCESSORS,
    Kind.EXPORTER: EXPORTERS,
    Kind.EXTENSION: EXTENSIONS,
    Kind.CONNECTOR: CONNECTORS,
}


def known(kind: Kind) -> list[str]:
    """The type names of `kind`, sorted (error messages list them)."""
    return sorted(TABLES[kind])


def canonical(kind: Kind, type_: str) -> tuple[str, str | None]:
    """(the registered type name, a deprecation warning or None) for a type name from a config."""
    alias = ALIASES.get((kind, type_))
    if alias is not None:
        return alias
    return type_, None


def factory(kind: Kind, type_: str) -> Factory:
    """The factory of a registered (canonical) type; KeyError if unknown."""
    module_name, attr = TABLES[kind][type_].split(":", 1)
    found: Any = getattr(importlib.import_module(module_name), attr)
    return found
