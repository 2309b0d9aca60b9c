"""A small OpenAPI v3 (Kubernetes structural schema) validator for CRD-backed resources.

Enough of the dialect Istio's CRDs use: type, nullable, properties, additionalProperties,
x-kubernetes-preserve-unknown-fields, enum, required, oneOf/anyOf/not (the `required`-only forms
used for one-of fields), minimum/maximum, minLength/maxLength, maxItems, maxProperties, pattern.
`x-kubernetes-validations` (CEL) rules are not evaluated here; the few that matter are checked
by hand in `loader.py`.

Unknown fields are reported separately from invalid values: the API server prunes unknown
fields (`kubectl --validate=strict`, the default, rejects them) but rejects invalid values.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "boolean": (bool,),
    "integer": (int,),
    "number": (int, float),
}


@dataclass(frozen=True)
class SchemaError:
    path: str
    message: str
    unknown_field: bool = False  # pruned by the API server rather than rejected


@functools.cache
def crd_schema(file_name: str) -> dict[str, Any]:
    """A packaged schema file (see extract_schemas.py): {"group", "kind", "versions": {...}}."""
    text = resources.files("meshtrace.config").joinpath("schemas", file_name).read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def version_schema(file_name: str, version: str) -> dict[str, Any] | None:
    schema: dict[str, Any] | None = crd_schema(file_name)["versions"].get(version)
    return schema


def _type_ok(value: Any, type_name: str) -> bool:
    if isinstance(value, bool) and type_name in ("integer", "number"):
        return False
    return isinstance(value, _TYPES.get(type_name, (object,)))


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _matches(value: Any, schema: dict[str, Any]) -> bool:
    return not validate(value, schema, "")


def validate(value: Any, schema: dict[str, Any], path: str = "") -> list[SchemaError]:
    """All problems of `value` against `schema`, each with the key path where it is."""
    errors: list[SchemaError] = []
    if value is None:
        if not schema.get("nullable") and "type" in schema:
            errors.append(SchemaError(path, f"must be of type {schema['type']}, not null"))
        return errors
    type_name = schema.get("type")
    if type_name and not _type_ok(value, type_name):
        errors.append(SchemaError(path, f"must be of type {type_name}, got {type(value).__name__}"))
        return errors
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(str(v) for v in schema["enum"])
        errors.append(SchemaError(path, f"unsupported value {value!r}: must be one of {allowed}"))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(SchemaError(path, f"{value} is below the minimum {schema['minimum']}"))
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(SchemaError(path, f"{value} is above the maximum {schema['maximum']}"))
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            errors.append(SchemaError(path, f"must be at least {schema['minLength']} characters"))
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(SchemaError(path, f"must be at most {schema['maxLength']} characters"))
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(SchemaError(path, f"{value!r} does not match {schema['pattern']}"))
    if isinstance(value, list):
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(SchemaError(path, f"at most {schema['maxItems']} items allowed"))
        items = schema.get("items")
        if isinstance(items, dict):
            for i, item in enumerate(value):
                errors.extend(validate(item, items, _join(path, i)))
    if isinstance(value, dict):
        errors.extend(_validate_object(value, schema, path))
    errors.extend(_validate_combinators(value, schema, path))
    return errors


def _validate_object(value: dict[str, Any], schema: dict[str, Any], path: str) -> list[SchemaError]:
    errors: list[SchemaError] = []
    for key in schema.get("required", []):
        if key not in value:
            errors.append(SchemaError(_join(path, key), "required field is missing"))
    if "maxProperties" in schema and len(value) > schema["maxProperties"]:
        errors.append(SchemaError(path, f"at most {schema['maxProperties']} keys allowed"))
    props: dict[str, Any] = schema.get("properties", {})
    extra = schema.get("additionalProperties")
    preserve = schema.get("x-kubernetes-preserve-unknown-fields", False)
    for key, item in value.items():
        key_path = _join(path, str(key))
        if key in props:
            errors.extend(validate(item, props[key], key_path))
        elif isinstance(extra, dict):
            errors.extend(validate(item, extra, key_path))
        elif extra is True or preserve:
            continue
        elif props or extra is False:
            known = ", ".join(sorted(props))
            errors.append(SchemaError(key_path, f"unknown field {key!r} (known: {known})", True))
    return errors


def _validate_combinators(value: Any, schema: dict[str, Any], path: str) -> list[SchemaError]:
    errors: list[SchemaError] = []
    if "oneOf" in schema:
        matched = [s for s in schema["oneOf"] if _matches(value, s)]
        if len(matched) != 1:
            options = [s["required"] for s in schema["oneOf"] if "required" in s]
            names = ", ".join("/".join(o) for o in options)
            errors.append(SchemaError(path, f"exactly one of {names} may be set"))
    if "anyOf" in schema and not any(_matches(value, s) for s in schema["anyOf"]):
        errors.append(SchemaError(path, "matches none of the allowed forms"))
    if "not" in schema and _matches(value, schema["not"]):
        errors.append(SchemaError(path, "matches a forbidden form"))
    return errors
