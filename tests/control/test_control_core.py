"""The control plane's sans-IO core: registry, services, provider endpoints, versions, ACK/NACK,
heartbeat expiry. Resolution itself belongs to meshtrace.config; here a stub stands in for it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from fuzzing import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from meshtrace.control.core import (
    Ack,
    BadRequest,
    ControlPlane,
    ServicePort,
    ServiceSpec,
    Snapshot,
    StaticEndpoint,
    UnknownNode,
    new_errors,
    normalize_host,
    parse_ack,
    parse_registration,
    parse_static_endpoint,
)
from meshtrace.document import Document

COLLECTOR = "otel-collector.istio-system.svc.cluster.local"

SIDECAR_DEFAULTS = {"identity": "spiffe://cluster.local/ns/default/sa/default", "mtls": True}


def _doc(workload: str, namespace: str, labels: Mapping[str, str], sampling: float = 1.0) -> dict[str, Any]:
    provider = {"name": "otel", "type": "opentelemetry", "service": COLLECTOR, "port": 4317, "endpoint": None}
    direction = {"enabled": True, "provider": provider, "random_sampling_percentage": sampling}
    return {
        "schema": 1,
        "workload": {"name": workload, "namespace": namespace, "labels": dict(labels)},
        "mesh": {"root_namespace": "istio-system"},
        "tracing": {"client": direction, "server": {**direction, "provider": dict(provider)}},
        "warnings": [],
    }


SERVICES = [
    ServiceSpec("backend", "default", {"app": "backend"}, (ServicePort("http", 8080, 8080, "http", "http"),)),
    ServiceSpec("frontend", "default", {"app": "frontend"}, (ServicePort("http", 80, "http", None),)),
    ServiceSpec(
        "otel-collector", "istio-system", {"app": "otel"}, (ServicePort("grpc-otlp", 4317, 14317, "grpc"),)
    ),
]


def snapshot(
    sampling: dict[str, float] | None = None, pod_labels: dict[tuple[str, str], dict[str, str]] | None = None
) -> Snapshot:
    rates = sampling or {}
    return Snapshot(
        services=SERVICES,
        pod_labels=pod_labels or {},
        effective=lambda w, ns, labels: Document.from_json(_doc(w, ns, labels, rates.get(w, 1.0))),
    )


def reg(workload: str, pod: str, ip: str, namespace: str = "default", **labels: str) -> dict[str, Any]:
    return {
        "workload": workload,
        "namespace": namespace,
        "pod": pod,
        "ip": ip,
        "labels": {"app": workload, **labels},
        "ports": {"inbound": 15006, "outbound": 15001, "admin": 15000, "app": 8080},
        "mode": "sidecar",
    }


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("nope", "body"),
        ({**reg("a", "a-0", "127.0.1.1"), "workload": None}, "'workload'"),
        ({**reg("a", "a-0", "127.0.1.1"), "workload": 3}, "'workload'"),
        ({**reg("a", "a-0", "127.0.1.1"), "pod": ""}, "'pod'"),
        ({k: v for k, v in reg("a", "a-0", "127.0.1.1").items() if k != "ip"}, "'ip'"),
        ({**reg("a", "a-0", "127.0.1.1"), "labels": {"app": 1}}, "'labels.app'"),
        ({**reg("a", "a-0", "127.0.1.1"), "labels": []}, "'labels'"),
        ({**reg("a", "a-0", "127.0.1.1"), "ports": {"inbound": "x"}}, "'ports.inbound'"),
        ({**reg("a", "a-0", "127.0.1.1"), "ports": {"inbound": True}}, "'ports.inbound'"),
        ({**reg("a", "a-0", "127.0.1.1"), "ports": {"app": 8080}}, "'ports.inbound'"),
        ({**reg("a", "a-0", "127.0.1.1"), "ports": {"inbound": 15006, "app": 70000}}, "'ports.app'"),
        ({**reg("a", "a-0", "127.0.1.1"), "mode": "ambient"}, "'mode'"),
    ],
)
def test_bad_registration_names_the_field(body: Any, field: str) -> None:
    with pytest.raises(BadRequest, match=field):
        parse_registration(body)


def test_registration_node_id_is_istio_shaped() -> None:
    r = parse_registration(reg("backend", "backend-0", "127.0.1.3"))
    assert r.node_id == "sidecar~127.0.1.3~backend-0.default~default.svc.cluster.local"
    gw = parse_registration({**reg("gw", "gw-0", "127.0.0.1"), "mode": "gateway"})
    assert gw.node_id.startswith("router~")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"version": "v1", "status": "MAYBE"}, "'status'"),
        ({"status": "ACK"}, "'version'"),
        ({"version": "v1", "status": "NACK", "error": 5}, "'error'"),
        ([], "body"),
    ],
)
def test_bad_ack(body: Any, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        parse_ack(body)


def test_services_select_healthy_sidecars_by_labels_and_namespace() -> None:
    plane = ControlPlane(snapshot(), [])
    plane.register(parse_registration(reg("backend", "backend-0", "127.0.1.3")), 0.0)
    plane.register(parse_registration(reg("backend", "backend-1", "127.0.1.4")), 0.0)
    plane.register(parse_registration(reg("backend", "backend-x", "127.0.1.9", namespace="other")), 0.0)
    plane.register(parse_registration(reg("frontend", "frontend-0", "127.0.1.1")), 0.0)
    services = plane.services()
    backend = services["backend.default.svc.cluster.local"]
    assert backend["endpoints"] == [
        {"ip": "127.0.1.3", "port": 15006, "app_port": 8080, "pod": "backend-0", **SIDECAR_DEFAULTS},
        {"ip": "127.0.1.4", "port": 15006, "app_port": 8080, "pod": "backend-1", **SIDECAR_DEFAULTS},
    ]
    assert backend["ports"] == [
        {"name": "http", "port": 8080, "target_port": 8080, "app_protocol": "http", "protocol": "http"}
    ]
    assert [e["pod"] for e in services["frontend.default.svc.cluster.local"]["endpoints"]] == ["frontend-0"]
    assert services["frontend.default.svc.cluster.local"]["ports"][0]["target_port"] == "http"
    # every node's config carries the registry
    for node in plane.nodes.values():
        assert node.config["services"] == services


@pytest.mark.parametrize(
    ("peer_authentication", "mtls"),
    [
        ({}, True),  # no PeerAuthentication: PERMISSIVE
        ({"mode": "DISABLE", "ports": {}}, False),
        ({"mode": "STRICT", "ports": {"8080": {"mode": "DISABLE"}}}, False),  # the app port's own
        ({"mode": "DISABLE", "ports": {"8080": {"mode": "PERMISSIVE"}}}, True),
        ({"mode": "STRICT", "ports": {"9090": {"mode": "DISABLE"}}}, True),  # another port's
    ],
)
def test_auto_mtls_marks_endpoints_by_the_app_ports_peer_authentication(
    peer_authentication: dict[str, Any], mtls: bool
) -> None:
    def effective(w: str, ns: str, labels: Mapping[str, str]) -> Document:
        return Document.from_json(
            {**_doc(w, ns, labels), "security": {"peer_authentication": peer_authentication}}
        )

    plane = ControlPlane(Snapshot(services=SERVICES, pod_labels={}, effective=effective), [])
    plane.register(parse_registration(reg("backend", "backend-0", "127.0.1.3")), 0.0)
    [endpoint] = plane.services()["backend.default.svc.cluster.local"]["endpoints"]
    assert endpoint["mtls"] is mtls


def test_deployment_pod_labels_complete_registration() -> None:
    plane = ControlPlane(
        snapshot(pod_labels={("default", "backend"): {"app": "backend", "version": "v1"}}), []
    )
    body = reg("backend", "backend-0", "127.0.1.3")
    body["labels"] = {}
    node, _ = plane.register(parse_registration(body), 0.0)
    assert node.labels == {"app": "backend", "version": "v1"}
    assert plane.services()["backend.default.svc.cluster.local"]["endpoints"][0]["pod"] == "backend-0"


def test_missed_heartbeats_remove_endpoint_and_heartbeat_restores_it() -> None:
    plane = ControlPlane(snapshot(), [], heartbeat_s=2.0)
    backend, _ = plane.register(parse_registration(reg("backend", "backend-0", "127.0.1.3")), 0.0)
    frontend, _ = plane.register(parse_registration(reg("frontend", "frontend-0", "127.0.1.1")), 0.0)
    plane.heartbeat(frontend.reg.node_id, 5.0)
    assert plane.expire(5.9) == ([], set())  # 3 heartbeats of 2 s not yet missed
    before = frontend.version
    expired, changed = plane.expire(6.1)
    assert expired == [backend.reg.node_id]
    assert frontend.reg.node_id in changed and frontend.version != before
    assert frontend.config["services"]["backend.default.svc.cluster.local"]["endpoints"] == []
    rows = {row["node_id"]: row for row in plane.status(6.1)}
    assert rows[backend.reg.node_id]["healthy"] is False  # still listed in status
    assert plane.heartbeat(backend.reg.node_id, 7.0)
    assert (
        frontend.config["services"]["backend.default.svc.cluster.local"]["endpoints"][0]["pod"] == "backend-0"
    )
    with pytest.raises(UnknownNode):
        plane.heartbeat("sidecar~nobody", 1.0)


def test_nack_keeps_the_acked_version() -> None:
    plane = ControlPlane(snapshot(), [])
    node, _ = plane.register(parse_registration(reg("backend", "backend-0", "127.0.1.3")), 0.0)
    plane.ack(node.reg.node_id, Ack(node.version, "ACK", None), 1.0)
    plane.ack(node.reg.node_id, Ack("v2", "NACK", "bad sampling"), 2.0)
    row = plane.status(3.0)[0]
    assert row["acked_version"] == node.version
    assert row["last_nack"] == {"version": "v2", "error": "bad sampling", "at": 2.0}
    assert row["heartbeat_age_s"] == 3.0


def test_new_snapshot_bumps_only_affected_nodes() -> None:
    plane = ControlPlane(snapshot(), [])
    backend, _ = plane.register(parse_registration(reg("backend", "backend-0", "127.0.1.3")), 0.0)
    frontend, _ = plane.register(parse_registration(reg("frontend", "frontend-0", "127.0.1.1")), 0.0)
    b_version, f_version = backend.version, frontend.version
    changed = plane.set_snapshot(snapshot({"frontend": 50.0}))
    assert changed == {frontend.reg.node_id}
    assert backend.version == b_version and frontend.version != f_version
    assert frontend.config["tracing"]["client"]["random_sampling_percentage"] == 50.0
    assert plane.set_snapshot(snapshot({"frontend": 50.0})) == set()  # same content, same version


def test_failing_resolution_changes_nothing() -> None:
    plane = ControlPlane(snapshot(), [])
    node, _ = plane.register(parse_registration(reg("backend", "backend-0", "127.0.1.3")), 0.0)
    version = node.version

    def broken(w: str, ns: str, labels: Mapping[str, str]) -> dict[str, Any]:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        plane.set_snapshot(Snapshot(SERVICES, {}, broken))
    assert node.version == version
    assert plane.register(parse_registration(reg("backend", "backend-1", "127.0.1.4")), 0.0)[0].version


def test_provider_endpoint_resolution() -> None:
    plane = ControlPlane(snapshot(), [])
    node, _ = plane.register(parse_registration(reg("backend", "backend-0", "127.0.1.3")), 0.0)
    provider = node.config["tracing"]["client"]["provider"]
    assert provider["endpoint"] is None
    assert any("otel" in w and "not sent" in w for w in node.config["warnings"])
    # a registered collector: its app's target port, not its sidecar's inbound
    plane.register(parse_registration(reg("otel", "otel-0", "127.0.2.1", namespace="istio-system")), 0.0)
    assert node.config["tracing"]["client"]["provider"]["endpoint"] == "http://127.0.2.1:14317"
    assert node.config["tracing"]["server"]["provider"]["endpoint"] == "http://127.0.2.1:14317"
    assert node.config["warnings"] == []
    # a static --endpoint wins
    static = ControlPlane(snapshot(), [parse_static_endpoint(f"{COLLECTOR}=127.0.0.1:4317")])
    node, _ = static.register(parse_registration(reg("backend", "backend-0", "127.0.1.3")), 0.0)
    assert node.config["tracing"]["client"]["provider"]["endpoint"] == "http://127.0.0.1:4317"
    assert node.config["services"][COLLECTOR]["endpoints"][-1] == {
        "ip": "127.0.0.1",
        "port": 4317,
        "app_port": 4317,
        "pod": None,
    }


def test_static_endpoint_with_the_providers_port_wins() -> None:
    # `meshtrace up` names each of the collector's ports; the provider's port picks one.
    entries = [f"{COLLECTOR}=127.0.0.1:{port}" for port in (9411, 4318, 4317)]
    plane = ControlPlane(snapshot(), [parse_static_endpoint(e) for e in entries])
    node, _ = plane.register(parse_registration(reg("backend", "backend-0", "127.0.1.3")), 0.0)
    provider = node.config["tracing"]["client"]["provider"]
    assert provider["port"] == 4317
    assert provider["endpoint"] == "http://127.0.0.1:4317"


def test_static_endpoint_outside_the_mesh_is_a_service() -> None:
    plane = ControlPlane(snapshot(), [StaticEndpoint("api.example.com", "127.0.0.9", 8443)])
    services = plane.services()
    assert services["api.example.com"]["endpoints"] == [
        {"ip": "127.0.0.9", "port": 8443, "app_port": 8443, "pod": None}
    ]
    assert services["api.example.com"]["static"] is True


@pytest.mark.parametrize("text", ["nohost", "=1.2.3.4:5", "h=1.2.3.4", "h=1.2.3.4:x", "h=:80", "h=1.2.3.4:0"])
def test_bad_static_endpoint(text: str) -> None:
    with pytest.raises(BadRequest, match="HOST=ADDR:PORT"):
        parse_static_endpoint(text)


@pytest.mark.parametrize(
    ("host", "namespace", "first"),
    [
        (COLLECTOR, "default", COLLECTOR),
        ("otel-collector.istio-system", "default", COLLECTOR),
        ("otel-collector.istio-system.svc", "default", COLLECTOR),
        ("istio-system/otel-collector", "default", COLLECTOR),
        ("otel-collector", "istio-system", COLLECTOR),
        ("otel-collector", "default", "otel-collector.default.svc.cluster.local"),
        ("zipkin.example.com", "default", "zipkin.example.com"),
    ],
)
def test_normalize_host(host: str, namespace: str, first: str) -> None:
    candidates = normalize_host(host, namespace)
    assert candidates[0] == first
    if host == "otel-collector" and namespace == "default":
        assert COLLECTOR in candidates  # bare names also try the root namespace


def test_new_errors_only_blocks_errors_the_running_config_lacks() -> None:
    old = Snapshot([], {}, _doc, errors={("dup", "a.yaml", "T x/y", ""): "old"})
    new = Snapshot(
        [], {}, _doc, errors={("dup", "a.yaml", "T x/y", ""): "old", ("yaml", "b.yaml", "", ""): "bad"}
    )
    assert new_errors(old, new) == ["bad"]
    assert new_errors(new, old) == []


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
bodies = st.fixed_dictionaries(
    {},
    optional={
        k: json_values
        for k in (
            "workload",
            "namespace",
            "pod",
            "ip",
            "labels",
            "ports",
            "mode",
            "version",
            "status",
            "error",
        )
    },
)


@settings(max_examples=examples(200), deadline=None)
@given(st.one_of(json_values, bodies))
def test_request_parsers_only_raise_bad_request(body: Any) -> None:
    for parser in (parse_registration, parse_ack):
        try:
            parser(body)
        except BadRequest as exc:
            assert "'" in str(exc) or "body" in str(exc)  # the message names the field
