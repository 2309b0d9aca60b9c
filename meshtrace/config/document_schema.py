"""The config document (docs/config-document.md) as a schema for `meshtrace.config.schema.validate`.

Producers (`effective_config`, the control plane) and consumers (the sidecar) can check a
document with `check_document(doc)`; the tests check every document explain produces.
Unknown keys are allowed at the top level only (`services` is the control plane's).
"""

from __future__ import annotations

from typing import Any

from meshtrace.config.protocol import DOCUMENT_VALUES
from meshtrace.config.schema import SchemaError, validate

_STR: dict[str, Any] = {"type": "string"}
_NULL_STR: dict[str, Any] = {"type": "string", "nullable": True}
_STR_MAP: dict[str, Any] = {"type": "object", "additionalProperties": _STR}
_BOOL: dict[str, Any] = {"type": "boolean"}


def _object(properties: dict[str, Any], optional: tuple[str, ...] = ()) -> dict[str, Any]:
    """A closed object whose keys are all required unless listed in `optional`."""
    return {
        "type": "object",
        "properties": properties,
        "required": [k for k in properties if k not in optional],
        "additionalProperties": False,
    }


_PROVIDER = _object(
    {
        "name": _STR,
        "type": {"type": "string", "enum": ["opentelemetry", "zipkin"]},
        "service": _STR,
        "port": {"type": "integer", "minimum": 0, "maximum": 65535},
        "protocol": {"type": "string", "enum": ["grpc", "http", "zipkin"]},
        "path": _NULL_STR,
        "endpoint": _NULL_STR,
        "timeout_s": {"type": "number", "minimum": 0},
        "headers": _STR_MAP,
        "max_tag_length": {"type": "integer", "minimum": 0},
        "trace_context": {"type": "string", "enum": ["w3c", "b3", "b3+w3c"]},
    }
)
_FORMATS: dict[str, Any] = {"type": "array", "items": {"type": "string", "enum": ["w3c", "b3"]}}
_TAG_BODY: dict[str, Any] = {"type": "object", "additionalProperties": _STR}
_CUSTOM_TAG: dict[str, Any] = {
    "type": "object",
    "properties": {
        "literal": _TAG_BODY,
        "environment": _TAG_BODY,
        "header": _TAG_BODY,
        "formatter": _TAG_BODY,
    },
    "additionalProperties": False,
    "maxProperties": 1,
}
_DIRECTION = _object(
    {
        "enabled": _BOOL,
        "provider": {**_PROVIDER, "nullable": True},
        "random_sampling_percentage": {"type": "number", "minimum": 0, "maximum": 100},
        "disable_span_reporting": _BOOL,
        "use_request_id_for_trace_sampling": _BOOL,
        "enable_istio_tags": _BOOL,
        "max_path_tag_length": {"type": "integer", "minimum": 0},
        "custom_tags": {"type": "object", "additionalProperties": _CUSTOM_TAG},
        "propagation": _object({"read": _FORMATS, "write": _FORMATS}),
    }
)
_TAG_OVERRIDE: dict[str, Any] = {
    "type": "object",
    "properties": {"operation": {"type": "string", "enum": ["UPSERT", "REMOVE"]}, "value": _STR},
    "required": ["operation"],
    "additionalProperties": False,
}
_METRICS = {
    "type": "object",
    "additionalProperties": _object(
        {"disabled": _BOOL, "tag_overrides": {"type": "object", "additionalProperties": _TAG_OVERRIDE}}
    ),
}
_SOURCE = _object({"resource": _STR, "file": _NULL_STR, "field": _NULL_STR})
_ENDPOINT: dict[str, Any] = {
    "type": "object",
    "properties": {"ip": _STR, "port": {"type": "integer"}, "app_port": {"type": "integer"}, "pod": _STR},
    "required": ["ip", "port"],
}
_SERVICE: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": _STR,
        "namespace": _STR,
        "ports": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["port"],
                "properties": {"protocol": {"type": "string", "enum": list(DOCUMENT_VALUES)}},
                "additionalProperties": True,
            },
        },
        "endpoints": {"type": "array", "items": _ENDPOINT},
    },
}

_MTLS_MODE: dict[str, Any] = {"type": "string", "enum": ["STRICT", "PERMISSIVE", "DISABLE"]}
_TLS_MODE: dict[str, Any] = {"type": "string", "enum": ["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"]}
_SECURITY = _object(
    {
        "identity": _STR,
        "service_account": _STR,
        "peer_authentication": _object(
            {
                "mode": _MTLS_MODE,
                "source": _STR,
                "ports": {
                    "type": "object",
                    "additionalProperties": _object({"mode": _MTLS_MODE, "source": _STR}),
                },
            }
        ),
        "authorization": {
            "type": "array",
            "items": _object(
                {
                    "name": _STR,
                    "action": {"type": "string", "enum": ["ALLOW", "DENY"]},
                    "rules": {"type": "array", "items": {"type": "object"}},
                    "scope": {"type": "string", "enum": ["mesh", "namespace", "workload"]},
                }
            ),
        },
        "destinations": {
            "type": "object",
            "additionalProperties": _object(
                {
                    "mode": {**_TLS_MODE, "nullable": True},
                    "ports": {"type": "object", "additionalProperties": _TLS_MODE},
                    "source": _STR,
                }
            ),
        },
    }
)

DOCUMENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["schema", "workload", "mesh", "tracing", "metrics"],
    "x-kubernetes-preserve-unknown-fields": True,
    "properties": {
        "schema": {"type": "integer", "enum": [1]},
        "workload": _object(
            {
                "name": _STR,
                "namespace": _STR,
                "labels": _STR_MAP,
                "service_name": _STR,
                "canonical_service": _STR,
                "canonical_revision": _STR,
            }
        ),
        "mesh": _object({"mesh_id": _STR, "cluster_id": _STR, "trust_domain": _STR, "root_namespace": _STR}),
        "telemetry": _object(
            {
                "applied": {
                    "type": "array",
                    "items": _object(
                        {
                            "scope": {"type": "string", "enum": ["root", "namespace", "workload"]},
                            "resource": _STR,
                            "file": _STR,
                        }
                    ),
                },
                "ignored": {"type": "array", "items": _object({"resource": _STR, "reason": _STR})},
            }
        ),
        "tracing": _object({"client": _DIRECTION, "server": _DIRECTION}),
        "metrics": _object(
            {
                "enabled": _BOOL,
                "client_enabled": _BOOL,
                "server_enabled": _BOOL,
                "client": _METRICS,
                "server": _METRICS,
            }
        ),
        "services": {"type": "object", "additionalProperties": _SERVICE},
        "security": _SECURITY,
        "sources": {"type": "object", "additionalProperties": _SOURCE},
        "warnings": {"type": "array", "items": _STR},
    },
}


def check_document(doc: Any) -> list[SchemaError]:
    """Every way `doc` departs from the config document contract (empty when it conforms)."""
    return validate(doc, DOCUMENT_SCHEMA, "")
