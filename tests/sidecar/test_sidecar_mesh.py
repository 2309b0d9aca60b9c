"""Two apps behind two sidecars: client -> frontend sidecar inbound -> frontend app -> frontend
sidecar outbound -> backend sidecar inbound -> backend app. Apps forward context with the
OpenTelemetry SDK propagators (W3C or B3), as docs/upstream-behaviour.md §2 says apps must."""

from __future__ import annotations

import json
from typing import Any

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

BACKEND_FQDN = "backend.default.svc.cluster.local"
Mesh = Any


def attrs(span: Span) -> dict[str, str]:
    return {a.key: a.value.string_value for a in span.attributes}


@pytest.mark.parametrize("fmt", ["w3c", "b3"])
def test_joined_trace_through_two_sidecars(mesh: Mesh, fmt: str) -> None:
    status, body = mesh.call(f"/call?fmt={fmt}", {"user-agent": "pytest-agent"})
    assert status == 200, body
    seen = json.loads(body)
    spans = mesh.received.wait(3)
    assert len(spans) == 3
    by_kind = {(svc, s.kind): s for svc, s in spans}
    fe_server = by_kind[("frontend.default", Span.SPAN_KIND_SERVER)]
    fe_client = by_kind[("frontend.default", Span.SPAN_KIND_CLIENT)]
    be_server = by_kind[("backend.default", Span.SPAN_KIND_SERVER)]
    # one trace, parented server -> client -> server
    assert fe_server.trace_id == fe_client.trace_id == be_server.trace_id
    assert fe_server.parent_span_id == b""
    assert fe_client.parent_span_id == fe_server.span_id
    assert be_server.parent_span_id == fe_client.span_id
    # the decorator names both sides of the hop
    assert fe_client.name == be_server.name == f"{BACKEND_FQDN}:8080/*"
    # what the backend app saw: the backend sidecar's SERVER span as parent
    assert seen["traceparent"] == f"00-{be_server.trace_id.hex()}-{be_server.span_id.hex()}-01"
    assert seen["x-b3-spanid"] == be_server.span_id.hex()
    assert seen["x-request-id"][14] == "9"  # Envoy's trace reason: sampled
    assert "x-envoy-peer-metadata" not in seen
    a = attrs(fe_client)
    assert a["guid:x-request-id"] == seen["x-request-id"]
    assert a["upstream_cluster"] == f"outbound|8080||{BACKEND_FQDN}"
    assert a["upstream_cluster.name"] == f"outbound|8080||{BACKEND_FQDN}"
    assert a["http.url"] == "http://backend:8080/echo?status=200"
    assert a["http.method"] == "GET"
    assert a["http.status_code"] == "200"
    assert a["http.protocol"] == "HTTP/1.1"
    assert a["response_flags"] == "-"
    assert a["component"] == "proxy"
    assert a["istio.canonical_service"] == "frontend"
    assert a["istio.namespace"] == "default"
    assert a["istio.mesh_id"] == "cluster.local"
    assert a["node_id"].startswith("sidecar~")
    b = attrs(be_server)
    assert b["upstream_cluster"].startswith("inbound|")
    assert b["istio.canonical_service"] == "backend"
    assert attrs(fe_server)["user_agent"] == "pytest-agent"
    assert int(b["response_size"]) == len(body)


def test_metrics_source_and_destination(mesh: Mesh) -> None:
    for _ in range(3):
        assert mesh.call("/call")[0] == 200
    assert mesh.call("/call?status=503")[0] == 503
    fe = mesh.metrics(mesh.frontend)
    be = mesh.metrics(mesh.backend)
    src = [s for s in fe["istio_requests"] if s.labels["reporter"] == "source"]
    ok = [s for s in src if s.labels["response_code"] == "200"]
    assert ok and ok[0].value == 3
    labels = ok[0].labels
    assert labels["source_workload"] == "frontend"
    assert labels["destination_workload"] == "backend"
    assert labels["destination_service"] == BACKEND_FQDN
    assert labels["destination_service_name"] == "backend"
    assert labels["destination_app"] == "backend"
    assert labels["connection_security_policy"] == "unknown"
    assert labels["source_principal"] == "unknown"
    dst = [s for s in be["istio_requests"] if s.labels["reporter"] == "destination"]
    assert {s.labels["response_code"] for s in dst} == {"200", "503"}
    d = dst[0].labels
    assert d["source_workload"] == "frontend"
    assert d["destination_workload"] == "backend"
    assert d["connection_security_policy"] == "none"
    buckets = [s for s in fe["istio_request_duration_milliseconds"] if s.name.endswith("_bucket")]
    les = sorted({float(s.labels["le"]) for s in buckets})
    assert les[:3] == [0.5, 1.0, 5.0] and les[-2] == 3600000.0
    # 503 was retried by the client sidecar (Istio's default policy) and then flagged URX
    failed = [s for s in src if s.labels["response_code"] == "503"]
    assert failed[0].labels["response_flags"] == "URX"
