"""Typed component configs: dataclasses decoded from the Collector's YAML, with key paths in errors.

A component's config is a dataclass whose field defaults are the Collector's defaults. `decode`
turns a YAML mapping into it and reports every problem with its key path (unknown key, wrong
type, bad value). Supported field types: str, int, float, bool, `Duration` (float seconds,
written "5s", "200ms"), `Literal[...]`, nested dataclasses, `X | None`, `list[X]`, `dict[str, X]`.

- A nested dataclass field whose YAML value is null takes that dataclass's defaults (the
  Collector's `grpc:` with no value enables gRPC with defaults).
- `__post_init__` may raise ValueError: it is reported at the dataclass's path.
- A `${...}` environment reference still in a non-string value is not type-checked (it is only
  there when a raw config is checked without loading it).
- `field(metadata={"warning": "why / what to use"})` makes setting the key a warning
  (deprecated or accepted-but-ignored keys).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar, get_args, get_origin

from meshtrace.durations import collector_seconds

T = TypeVar("T")

ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True)
class Problem:
    """One finding about a config: `severity` is "error" or "warning"; `path` is dotted; `code` is
    stable (docs/collector.md lists them) so tools match on it, never on the message."""

    severity: str
    path: str
    message: str
    code: str = ""

    def __str__(self) -> str:
        text = (
            f"{self.severity}: {self.path}: {self.message}"
            if self.path
            else f"{self.severity}: {self.message}"
        )
        return f"{text} [{self.code}]" if self.code else text


# Stable problem codes (docs/collector.md, "Problem codes").
UNKNOWN_COMPONENT = "COL001"  # unknown-component: no such type upstream
REMOVED_COMPONENT = "COL002"  # removed-component: upstream removed it; the message says what to do
UNKNOWN_FIELD = "COL003"  # unknown-field
REMOVED_FIELD = "COL004"  # removed-field
INVALID_VALUE = "COL005"  # invalid-value: wrong type or not one of the allowed values
NOT_RUN_LOCALLY = "COL006"  # not-run-locally: upstream has it, meshtrace does not run it
DEPRECATED_NAME = "COL007"  # deprecated-name: an alias upstream still accepts
NOT_APPLIED_LOCALLY = "COL008"  # not-applied-locally: an upstream field meshtrace accepts and ignores
UNDEFINED_REFERENCE = "COL009"  # undefined-reference: a pipeline names an undefined component
TLS_BY_DEFAULT = "COL010"  # tls-by-default: a gRPC exporter to a plaintext endpoint without tls.insecure
UNKNOWN_HOST = "COL011"  # unknown-host: an exporter's host no rendered manifest defines
DEBUG_ONLY = "COL012"  # debug-only: a traces pipeline's only exporter is debug (spans go nowhere)
ALL_INTERFACES = "COL013"  # all-interfaces: a listener on 0.0.0.0/:: is reachable from other hosts

DURATION = "duration"
# Seconds, written in YAML as a Go duration: "200ms", "5s", "1m30s", "1h".
Duration = Annotated[float, DURATION]


def _is_duration(tp: Any) -> bool:
    return get_origin(tp) is Annotated and DURATION in getattr(tp, "__metadata__", ())


def _describe(tp: Any) -> str:
    if _is_duration(tp):
        return "duration"
    if get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


class _Decoder:
    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def error(self, path: str, message: str) -> None:
        self.problems.append(Problem(ERROR, path, message))

    def value(self, tp: Any, data: Any, path: str) -> Any:
        origin = get_origin(tp)
        if origin in (types.UnionType, typing.Union):
            options = [a for a in get_args(tp) if a is not type(None)]
            if data is None:
                if len(options) == 1 and dataclasses.is_dataclass(options[0]):
                    return self.dataclass(options[0], {}, path)
                return None
            return self.value(options[0], data, path)
        if origin is Literal:
            if data not in get_args(tp):
                self.error(path, f"invalid value {data!r}: expected one of {_describe(tp)}")
                return get_args(tp)[0]
            return data
        if origin is list:
            (item,) = get_args(tp)
            if data is None:
                return []
            if not isinstance(data, list):
                self.error(path, f"expected a list, got {type(data).__name__}")
                return []
            return [self.value(item, v, f"{path}[{i}]") for i, v in enumerate(data)]
        if origin is dict:
            _, item = get_args(tp)
            if data is None:
                return {}
            if not isinstance(data, dict):
                self.error(path, f"expected a mapping, got {type(data).__name__}")
                return {}
            return {str(k): self.value(item, v, f"{path}.{k}") for k, v in data.items()}
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            return self.dataclass(tp, data, path)
        return self.scalar(tp, data, path)

    def scalar(self, tp: Any, data: Any, path: str) -> Any:
        if tp is Any:
            return data
        if _is_duration(tp):
            try:
                return collector_seconds(data)
            except ValueError as exc:
                self.error(path, str(exc))
                return 0.0
        number = isinstance(data, int | float) and not isinstance(data, bool)
        if tp is bool and isinstance(data, bool):
            return data
        if tp is int and number and isinstance(data, int):
            return data
        if tp is float and number:
            return float(data)
        if tp is str and (number or isinstance(data, str)):
            return str(data)
        self.error(path, f"expected {_describe(tp)}, got {data!r}")
        return tp()

    def dataclass(self, cls: Any, data: Any, path: str) -> Any:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            self.error(path, f"expected a mapping, got {data!r}")
            data = {}
        hints = typing.get_type_hints(cls, include_extras=True)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        kwargs: dict[str, Any] = {}
        for key, raw in data.items():
            sub = f"{path}.{key}" if path else str(key)
            f = fields.get(str(key))
            if f is None:
                known = ", ".join(sorted(fields)) or "none"
                self.problems.append(
                    Problem(ERROR, sub, f"unknown key {key!r} (known keys: {known})", UNKNOWN_FIELD)
                )
                continue
            if "warning" in f.metadata:
                self.problems.append(Problem(WARNING, sub, f.metadata["warning"]))
            if isinstance(raw, str) and "${" in raw and hints[f.name] is not str:
                # An environment reference left unexpanded (check() on a raw ConfigMap): its
                # type is only known at run time, so the default stands in for it.
                continue
            kwargs[f.name] = self.value(hints[f.name], raw, sub)
        try:
            return cls(**kwargs)
        except ValueError as exc:
            self.error(path, str(exc))
            try:
                return cls()
            except ValueError:
                return None


def decode(cls: type[T], data: Any, path: str = "") -> tuple[T, list[Problem]]:
    """The dataclass `cls` built from `data`, and every problem found (at `path`-prefixed keys)."""
    decoder = _Decoder()
    result = decoder.dataclass(cls, data, path)
    return result, decoder.problems


def host_port(endpoint: str, what: str = "endpoint") -> tuple[str, int]:
    """("127.0.0.1", 4317) from "127.0.0.1:4317" or "[::1]:4317"; ValueError naming `what`."""
    host, sep, port = endpoint.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{what} {endpoint!r} must be host:port")
    return host.strip("[]") or "0.0.0.0", int(port)
