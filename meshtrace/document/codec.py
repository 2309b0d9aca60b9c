"""The config document's types read from JSON, written back and described as a JSON schema,
all driven by the contract's dataclass type hints (the one place those hints are interpreted).
Sans-IO, stdlib only."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import types
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar, Union, cast, get_args, get_origin, get_type_hints

T = TypeVar("T")
# field metadata keys
_MIN, _MAX, _OMIT, _FROM = "minimum", "maximum", "omit_none", "default_from"


class DocumentError(ValueError):
    """A document that breaks the contract; `path` is the key path of the field at fault
    (`tracing.client.provider.port`), `message` what is wrong with it."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path, self.message = path, message


def number(default: Any, minimum: float | None = None, maximum: float | None = None) -> Any:
    """A numeric field with its default and allowed range."""
    return dataclasses.field(default=default, metadata={_MIN: minimum, _MAX: maximum})


def required(minimum: float | None = None, maximum: float | None = None) -> Any:
    """A field every document must carry (no default), with an optional range."""
    return dataclasses.field(metadata={_MIN: minimum, _MAX: maximum})


# `field(default=None, metadata=OMIT_NONE)`: an optional key, absent from the JSON when None
# and never required.
OMIT_NONE: Mapping[str, Any] = {_OMIT: True}


def default_from(default: Any, compute: Callable[[Mapping[str, Any]], Any]) -> Any:
    """A field whose value, when the key is missing, depends on its siblings (`compute(object)`);
    `default` is the dataclass's own default."""
    return dataclasses.field(default=default, metadata={_FROM: compute})


class Record:
    """Base of the contract's dataclasses: JSON in (validated) and out."""

    __slots__ = ()

    @classmethod
    def from_json(cls: type[T], obj: Any, *, strict: bool = False) -> T:
        """Validate and build. Lenient (the sidecar's reading): a missing key takes its default
        and unknown keys are ignored, so older and newer documents still load. `strict` (the
        producers' check): every key present, no unknown key."""
        return _decode(cls, obj, "", strict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = _encode(self)
        return out

    def problem(self) -> tuple[str, str] | None:
        """Cross-field validation, like the Collector's `Validate()`: (field or "", message)."""
        return None


@functools.cache
def _hints(cls: Any) -> dict[str, Any]:
    return get_type_hints(cls)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path and key else path or key


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


# A decoder takes (value, its key path, strict) and returns the typed value or raises
# DocumentError. One is built per type and cached: a push is decoded on the sidecar's event loop.
Decoder = Callable[[Any, str, bool], Any]


def _decode(cls: type[T], obj: Any, path: str, strict: bool) -> T:
    out: T = _decoder(cast(Any, cls))(obj, path, strict)
    return out


def _arms(tp: Any) -> tuple[Any, ...]:
    """The types of a union (`int | str | None`), else ()."""
    return get_args(tp) if get_origin(tp) in (Union, types.UnionType) else ()


@functools.cache
def _decoder(tp: Any) -> Decoder:
    arms = _arms(tp)
    if arms:
        return _union_decoder(arms)
    origin = get_origin(tp)
    if tp is Any:
        return lambda value, where, strict: value
    if origin is Literal:
        return _literal_decoder(get_args(tp))
    if origin is tuple:
        item = _decoder(get_args(tp)[0])

        def tuple_of(value: Any, where: str, strict: bool) -> Any:
            if not isinstance(value, list | tuple):
                raise DocumentError(where, f"must be a list, got {_kind(value)}")
            return tuple(item(v, f"{where}[{i}]", strict) for i, v in enumerate(value))

        return tuple_of
    if origin is dict:
        entry = _decoder(get_args(tp)[1])

        def dict_of(value: Any, where: str, strict: bool) -> Any:
            if not isinstance(value, Mapping):
                raise DocumentError(where, f"must be an object, got {_kind(value)}")
            # YAML files may write numeric keys (ports); JSON keys are always strings
            return {str(k): entry(v, f"{where}.{k}", strict) for k, v in value.items()}

        return dict_of
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _record_decoder(tp)
    return _SCALARS[tp]


def _union_decoder(arms: tuple[Any, ...]) -> Decoder:
    nullable = type(None) in arms
    decoders = [_decoder(a) for a in arms if a is not type(None)]
    names = " or ".join(
        _PRIMITIVES.get(a, "null" if a is type(None) else getattr(a, "__name__", "?")) for a in arms
    )

    def union(value: Any, where: str, strict: bool) -> Any:
        if value is None and nullable:
            return None
        if len(decoders) == 1:
            return decoders[0](value, where, strict)
        for decode in decoders:
            try:
                return decode(value, where, strict)
            except DocumentError:
                continue
        raise DocumentError(where, f"must be {names}, got {value!r}")

    return union


def _literal_decoder(allowed: tuple[Any, ...]) -> Decoder:
    text = ", ".join(json.dumps(a) for a in allowed)

    def literal(value: Any, where: str, strict: bool) -> Any:
        if not any(value == a and type(value) is type(a) for a in allowed):
            raise DocumentError(where, f"must be one of {text}, got {value!r}")
        return value

    return literal


@dataclasses.dataclass(frozen=True)
class _FieldPlan:
    name: str
    decode: Decoder
    minimum: float | None
    maximum: float | None
    compute: Callable[[Mapping[str, Any]], Any] | None  # default_from
    omit: bool
    has_default: bool


def _record_decoder(cls: type) -> Decoder:
    hints = _hints(cls)
    plans = [
        _FieldPlan(
            f.name,
            _decoder(hints[f.name]),
            f.metadata.get(_MIN),
            f.metadata.get(_MAX),
            f.metadata.get(_FROM),
            bool(f.metadata.get(_OMIT)),
            not _no_default(f),
        )
        for f in dataclasses.fields(cls)
    ]
    names = {p.name for p in plans}

    def record(obj: Any, path: str, strict: bool) -> Any:
        if not isinstance(obj, Mapping):
            raise DocumentError(path, f"must be an object, got {_kind(obj)}")
        values: dict[str, Any] = {}
        for p in plans:
            if p.name in obj:
                where = _join(path, p.name)
                value = values[p.name] = p.decode(obj[p.name], where, strict)
                if p.minimum is not None or p.maximum is not None:
                    _check_range(p.minimum, p.maximum, value, where)
            elif p.compute is not None and not strict:
                values[p.name] = p.compute(obj)
            elif (strict and not p.omit) or not p.has_default:
                raise DocumentError(_join(path, p.name), "is required")
        if strict:
            unknown = sorted(str(k) for k in obj if k not in names)
            if unknown:
                raise DocumentError(_join(path, unknown[0]), "is not a field of the config document")
        built = cls(**values)
        found = built.problem() if isinstance(built, Record) else None
        if found is not None:
            raise DocumentError(_join(path, found[0]), found[1])
        return built

    return record


def _no_default(f: dataclasses.Field[Any]) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _check_range(lo: float | None, hi: float | None, value: Any, where: str) -> None:
    if value is None:
        return
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = (
            f"{lo}..{hi}" if lo is not None and hi is not None else f">= {lo}" if hi is None else f"<= {hi}"
        )
        raise DocumentError(where, f"must be {bounds}, got {value!r}")


def _boolean(value: Any, where: str, strict: bool) -> bool:
    if not isinstance(value, bool):
        raise DocumentError(where, f"must be true or false, got {value!r}")
    return value


def _string(value: Any, where: str, strict: bool) -> str:
    if not isinstance(value, str):
        raise DocumentError(where, f"must be a string, got {_kind(value)}")
    return value


def _integer(value: Any, where: str, strict: bool) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DocumentError(where, f"must be a number, got {value!r}")
    if not isinstance(value, int):
        raise DocumentError(where, f"must be a whole number, got {value!r}")
    return value


def _number(value: Any, where: str, strict: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DocumentError(where, f"must be a number, got {value!r}")
    if not math.isfinite(value):
        raise DocumentError(where, f"must be a finite number, got {value!r}")
    return float(value)


_SCALARS: dict[Any, Decoder] = {bool: _boolean, str: _string, int: _integer, float: _number}


def _encode(value: Any) -> Any:
    if isinstance(value, Record):
        out = {}
        for f in dataclasses.fields(value):  # type: ignore[arg-type]
            v = getattr(value, f.name)
            if v is None and f.metadata.get(_OMIT):
                continue
            out[f.name] = _encode(v)
        return out
    if isinstance(value, list | tuple):
        return [_encode(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _encode(v) for k, v in value.items()}
    return value


# -- JSON schema -------------------------------------------------------------------------------


def json_schema(cls: type) -> dict[str, Any]:
    """The JSON schema (draft 2020-12) of `cls` as a producer must write it (strict: every key
    but the optional ones required, no unknown key); each dataclass is one entry of `$defs`."""
    defs: dict[str, Any] = {}
    root = _type_schema(cls, defs)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **root,
        "$defs": dict(sorted(defs.items())),
    }


def _object_schema(cls: type, defs: dict[str, Any]) -> dict[str, Any]:
    hints = _hints(cls)
    properties: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        prop = _type_schema(hints[f.name], defs)
        for key in (_MIN, _MAX):
            if f.metadata.get(key) is not None:
                prop[key] = f.metadata[key]
        if f.default is not dataclasses.MISSING and f.default is not None and _FROM not in f.metadata:
            prop["default"] = _encode(f.default)
        properties[f.name] = prop
    return {
        "type": "object",
        "description": " ".join((cls.__doc__ or "").split()),
        "properties": properties,
        "required": [f.name for f in dataclasses.fields(cls) if not f.metadata.get(_OMIT)],
        "additionalProperties": False,
    }


_PRIMITIVES = {str: "string", bool: "boolean", int: "integer", float: "number"}


def _type_schema(tp: Any, defs: dict[str, Any]) -> dict[str, Any]:
    arms = _arms(tp)
    if arms:
        return {"anyOf": [_type_schema(a, defs) if a is not type(None) else {"type": "null"} for a in arms]}
    origin = get_origin(tp)
    if tp is Any:
        return {}
    if origin is Literal:
        return {"enum": list(get_args(tp))}
    if origin is tuple:
        return {"type": "array", "items": _type_schema(get_args(tp)[0], defs)}
    if origin is dict:
        return {"type": "object", "additionalProperties": _type_schema(get_args(tp)[1], defs)}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        name = tp.__name__
        if name not in defs:
            defs[name] = {}  # placeholder: a recursive reference finds it
            defs[name] = _object_schema(tp, defs)
        return {"$ref": f"#/$defs/{name}"}
    return {"type": _PRIMITIVES[tp]}
