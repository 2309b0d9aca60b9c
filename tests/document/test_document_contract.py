"""The config document contract (meshtrace/document/): validation table (every error names its
field), lenient and strict reading, JSON round trips over generated documents, and the committed
JSON schema."""

from __future__ import annotations

import copy
import dataclasses
import json
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import pytest
from fuzzing import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshtrace.document import Document, DocumentError, json_schema

SCHEMA_FILE = Path(__file__).parents[2] / "docs" / "config-document.schema.json"


def full() -> dict[str, Any]:
    """A complete document with every section filled (the control plane's shape)."""
    direction = {
        "enabled": True,
        "provider": {
            "name": "otel",
            "type": "opentelemetry",
            "service": "otel-collector.istio-system.svc.cluster.local",
            "port": 4317,
            "protocol": "grpc",
            "path": None,
            "endpoint": "http://127.0.0.1:4317",
            "timeout_s": 3.0,
            "headers": {"x-tenant": "a"},
            "max_tag_length": 256,
            "trace_context": "w3c",
        },
        "random_sampling_percentage": 50.0,
        "disable_span_reporting": False,
        "use_request_id_for_trace_sampling": True,
        "enable_istio_tags": True,
        "max_path_tag_length": 256,
        "custom_tags": {"env": {"literal": {"value": "prod"}}},
        "propagation": {"read": ["w3c", "b3"], "write": ["w3c", "b3"]},
    }
    metric = {
        "disabled": False,
        "tag_overrides": {
            "a": {"operation": "UPSERT", "value": "request.host"},
            "b": {"operation": "REMOVE"},
        },
    }
    return {
        "schema": 1,
        "workload": {
            "name": "web",
            "namespace": "shop",
            "labels": {"app": "web"},
            "service_name": "web.shop",
            "canonical_service": "web",
            "canonical_revision": "latest",
        },
        "mesh": {
            "mesh_id": "cluster.local",
            "cluster_id": "Kubernetes",
            "trust_domain": "cluster.local",
            "root_namespace": "istio-system",
        },
        "telemetry": {
            "applied": [{"scope": "root", "resource": "Telemetry istio-system/mesh", "file": "t.yaml"}],
            "ignored": [{"resource": "Telemetry istio-system/late", "reason": "a second one"}],
        },
        "tracing": {"client": direction, "server": copy.deepcopy(direction)},
        "metrics": {
            "enabled": True,
            "client_enabled": True,
            "server_enabled": False,
            "client": {"REQUEST_COUNT": metric},
            "server": {},
        },
        "security": {
            "identity": "spiffe://cluster.local/ns/shop/sa/default",
            "service_account": "default",
            "peer_authentication": {
                "mode": "PERMISSIVE",
                "source": "Istio default",
                "ports": {"9090": {"mode": "STRICT", "source": "PeerAuthentication shop/web"}},
            },
            "authorization": [
                {"name": "AuthorizationPolicy shop/x", "action": "DENY", "rules": [{}], "scope": "workload"}
            ],
            "destinations": {
                "api.shop.svc.cluster.local": {"mode": None, "ports": {"80": "DISABLE"}, "source": "d"}
            },
        },
        "sources": {"workload.labels": {"resource": "given labels", "file": None, "field": None}},
        "warnings": ["a note"],
        "services": {
            "api.shop.svc.cluster.local": {
                "name": "api",
                "namespace": "shop",
                "ports": [
                    {
                        "name": "http",
                        "port": 80,
                        "target_port": 8080,
                        "app_protocol": None,
                        "protocol": "http",
                    }
                ],
                "endpoints": [
                    {
                        "ip": "127.0.1.3",
                        "port": 15006,
                        "app_port": 8080,
                        "pod": "api-0",
                        "identity": "i",
                        "mtls": True,
                    }
                ],
            },
            "db.example": {
                "name": "db",
                "namespace": "example",
                "ports": [
                    {"name": "", "port": 5432, "target_port": 5432, "app_protocol": None, "protocol": "auto"}
                ],
                "endpoints": [{"ip": "127.0.0.9", "port": 5432, "app_port": 5432, "pod": None}],
                "static": True,
            },
        },
    }


def test_full_document_round_trips_exactly() -> None:
    doc = full()
    assert Document.from_json(doc, strict=True).to_json() == doc
    assert json.dumps(Document.from_json(doc).to_json()) == json.dumps(doc)  # key order too


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A mutation setting `value` at a key path as errors name it (`a.b[0].c`; a key may hold
    dots, like a host name: the longest key present wins); `DELETE` removes the key."""

    def apply(doc: dict[str, Any]) -> None:
        parts = path.replace("[", ".").replace("]", "").split(".")
        node: Any = doc
        while True:
            if isinstance(node, list):
                key: Any = int(parts[0])
                parts = parts[1:]
            else:
                n = next((n for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in node), 1)
                key, parts = ".".join(parts[:n]), parts[n:]
            if not parts:
                break
            node = node[key]
        if value is DELETE:
            del node[key]
        else:
            node[key] = value

    return apply


DELETE = object()
P, C = "tracing.client.provider", "tracing.client"
TAGS, DEST = "metrics.client.REQUEST_COUNT.tag_overrides", "security.destinations.api.shop.svc.cluster.local"
EP, PORTS = "services.api.shop.svc.cluster.local.endpoints[0]", "services.api.shop.svc.cluster.local.ports[0]"
# (id, key path set, value set there, words of the message, the path the error names when not that)
CASES: list[tuple[str, str, Any, str, str | None]] = [
    ("port range", f"{P}.port", 70000, "0..65535", None),
    ("port type", f"{P}.port", "4317", "number", None),
    ("port bool", f"{P}.port", True, "number", None),
    ("port float", f"{P}.port", 4317.5, "whole", None),
    ("protocol", f"{P}.protocol", "thrift", "one of", None),
    ("type", "tracing.server.provider.type", "datadog", "one of", None),
    ("http path", f"{P}.protocol", "http", "needs a path", f"{P}.path"),
    ("timeout", f"{P}.timeout_s", -1, ">= 0", None),
    ("headers", f"{P}.headers", {"a": 1}, "string", f"{P}.headers.a"),
    ("sampling range", f"{C}.random_sampling_percentage", 101, "0..100", None),
    ("sampling nan", f"{C}.random_sampling_percentage", float("nan"), "finite", None),
    ("sampling text", f"{C}.random_sampling_percentage", "x", "number", None),
    ("flag", "tracing.server.enabled", "yes", "true or false", None),
    ("format", f"{C}.propagation.write", ["jaeger"], "one of", f"{C}.propagation.write[0]"),
    ("formats list", f"{C}.propagation.read", "w3c", "list", None),
    ("tag kinds", f"{C}.custom_tags.env", {"literal": {}, "header": {}}, "exactly one", None),
    ("tag none", f"{C}.custom_tags.env", {}, "exactly one", None),
    ("tag body", f"{C}.custom_tags.env.literal.value", 3, "string", None),
    ("upsert", f"{TAGS}.a.value", DELETE, "expression", None),
    ("operation", f"{TAGS}.b.operation", "DELETE", "one of", None),
    ("metrics", "metrics.server", [], "object", None),
    ("mtls mode", "security.peer_authentication.mode", "ON", "one of", None),
    ("port mode", "security.peer_authentication.ports.9090.mode", DELETE, "required", None),
    ("action", "security.authorization[0].action", "AUDIT", "one of", None),
    ("tls mode", f"{DEST}.ports.80", "PLAIN", "one of", None),
    ("endpoint ip", f"{EP}.ip", DELETE, "required", None),
    ("endpoint port", f"{EP}.port", 0, "1..65535", None),
    ("service port", f"{PORTS}.port", DELETE, "required", None),
    ("target port", f"{PORTS}.target_port", 8080.5, "integer or string or null", None),
    ("scope", "telemetry.applied[0].scope", "cluster", "one of", None),
    ("schema", "schema", 2, "one of", None),
    ("section", "tracing", None, "object", None),
    ("source", "sources.workload.labels.resource", DELETE, "required", None),
    ("warnings", "warnings[0]", 1, "string", None),
]
CROSS_FIELD = {"http path", "tag kinds", "tag none", "upsert"}  # `problem()` rules


@pytest.mark.parametrize(
    ("where", "value", "words", "path"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_each_error_names_its_field(where: str, value: Any, words: str, path: str | None) -> None:
    doc = full()
    _set(where, value)(doc)
    for strict in (False, True):
        with pytest.raises(DocumentError) as err:
            Document.from_json(doc, strict=strict)
        assert err.value.path == (path or where)
        assert words in err.value.message
        assert str(err.value).startswith(f"{path or where}: ")


def test_not_an_object() -> None:
    with pytest.raises(DocumentError, match="must be an object, got list"):
        Document.from_json([])


def test_lenient_reading_fills_defaults_and_ignores_unknown_keys() -> None:
    doc = Document.from_json(
        {"tracing": {"client": {"provider": {"type": "zipkin"}, "future_key": 1}}, "metrics": {}, "later": {}}
    )
    provider = doc.tracing.client.provider
    assert provider is not None and (provider.protocol, provider.path) == ("zipkin", "/api/v2/spans")
    http = Document.from_json(
        {"tracing": {"client": {"provider": {"protocol": "http"}}}}
    ).tracing.client.provider
    assert http is not None and http.path == "/v1/traces"
    assert doc.tracing.server.random_sampling_percentage == 1.0
    assert doc.metrics.client_enabled and doc.metrics.server_enabled  # documents before these keys
    assert doc.services is None and "services" not in doc.to_json()
    yaml_keys = {"security": {"peer_authentication": {"ports": {9090: {"mode": "STRICT"}}}}}
    assert Document.from_json(yaml_keys).security.peer_authentication.port_mode(9090) == "STRICT"


def test_strict_reading_refuses_unknown_and_missing_keys() -> None:
    doc = full()
    doc["tracing"]["client"]["sampling"] = 5
    with pytest.raises(DocumentError) as err:
        Document.from_json(doc, strict=True)
    assert err.value.path == "tracing.client.sampling"
    doc = full()
    del doc["workload"]["service_name"]
    with pytest.raises(DocumentError, match=r"^workload\.service_name: is required$"):
        Document.from_json(doc, strict=True)
    assert Document.from_json(doc).workload.service_name == ""  # lenient: the default


# -- generated documents ----------------------------------------------------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=4), inner, max_size=2),
    max_leaves=4,
)


def _strategy(tp: Any, meta: Any = None) -> st.SearchStrategy[Any]:
    """Values of a contract type, within its field's range."""
    meta = meta or {}
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        return st.one_of(*(st.none() if a is type(None) else _strategy(a, meta) for a in get_args(tp)))
    if tp is Any:
        return _JSON
    if origin is Literal:
        return st.sampled_from(get_args(tp))
    if origin is tuple:
        return st.lists(_strategy(get_args(tp)[0]), max_size=2).map(tuple)
    if origin is dict:
        return st.dictionaries(st.text(max_size=6), _strategy(get_args(tp)[1]), max_size=2)
    if dataclasses.is_dataclass(tp):
        return _records(tp)
    lo, hi = meta.get("minimum"), meta.get("maximum")
    if tp is bool:
        return st.booleans()
    if tp is int:
        return st.integers(lo if lo is not None else -(2**40), hi if hi is not None else 2**40)
    if tp is float:
        return st.floats(lo, hi, allow_nan=False, allow_infinity=False)
    return st.text(max_size=8)


def _records(cls: Any) -> st.SearchStrategy[Any]:
    hints = get_type_hints(cls)
    fields = {f.name: _strategy(hints[f.name], f.metadata) for f in dataclasses.fields(cls)}
    return st.builds(cls, **fields).filter(lambda r: r.problem() is None)


@settings(
    max_examples=examples(60),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(_records(Document))
def test_round_trip(doc: Document) -> None:
    wire = json.loads(json.dumps(doc.to_json()))
    assert Document.from_json(wire) == doc
    assert Document.from_json(wire, strict=True) == doc


@settings(
    max_examples=examples(25),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(_records(Document))
def test_generated_documents_follow_the_json_schema(doc: Document) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator(json_schema(Document)).validate(doc.to_json())


def test_schema_refuses_what_the_contract_refuses() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(json_schema(Document))
    assert list(validator.iter_errors(full())) == []
    for name, where, value, _words, _path in CASES:
        if name in CROSS_FIELD or name == "sampling nan":
            continue  # the schema states fields one by one; JSON has no NaN
        doc = full()
        _set(where, value)(doc)
        assert list(validator.iter_errors(doc)), name


def test_committed_schema_is_the_generated_one() -> None:
    """docs/config-document.schema.json is regenerated with `python -m meshtrace.document`."""
    assert json.loads(SCHEMA_FILE.read_text()) == json_schema(Document)


def _paths(node: Any, path: str = "") -> list[str]:
    """Every key path of a JSON value, as errors name them."""
    out = [path] if path else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, f"{path}.{k}" if path else k)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, f"{path}[{i}]")
    return out


@settings(max_examples=examples(300), deadline=None)
@given(
    st.sampled_from(_paths(full())), _JSON | st.floats() | st.dictionaries(st.integers(), _JSON, max_size=2)
)
def test_any_value_anywhere_is_a_document_or_a_named_error(where: str, value: Any) -> None:
    doc = full()
    _set(where, value)(doc)
    try:
        parsed = Document.from_json(doc)
    except DocumentError as e:
        assert e.path  # every refusal names a field
    else:
        assert Document.from_json(parsed.to_json()) == parsed
