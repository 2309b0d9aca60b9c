"""The sidecar reads the config document through the shared contract (meshtrace.document): what
the control plane's resolution writes is what the request path runs."""

from __future__ import annotations

from pathlib import Path

from meshtrace.config import effective_config, load
from meshtrace.sidecar.config import SidecarConfig, parse

MANIFESTS = """
apiVersion: install.istio.io/v1alpha1
kind: IstioOperator
metadata: {name: mesh, namespace: istio-system}
spec:
  meshConfig:
    extensionProviders:
    - name: otel
      opentelemetry: {service: 127.0.0.1, port: 4317}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh, namespace: istio-system}
spec:
  tracing:
  - providers: [{name: otel}]
    disableContextPropagation: true
    customTags: {env: {literal: {value: prod}}}
"""


def _resolved(tmp_path: Path) -> SidecarConfig:
    (tmp_path / "mesh.yaml").write_text(MANIFESTS)
    doc = effective_config(load([tmp_path]), "web", "shop", labels={"app": "web"})
    return parse(doc, "1", "web", "shop", {})


def test_disable_context_propagation_writes_no_trace_headers(tmp_path: Path) -> None:
    # The document says `write: []` for Telemetry disableContextPropagation; the sidecar's hand
    # parser read an empty list as "unset" and wrote both formats anyway.
    cfg = _resolved(tmp_path)
    assert cfg.client.write == () and cfg.server.write == ()
    assert cfg.client.read == ("w3c", "b3")


def test_resolved_document_runs_as_resolved(tmp_path: Path) -> None:
    cfg = _resolved(tmp_path)
    assert cfg.client.reports and cfg.client.provider is not None
    assert cfg.client.provider.endpoint == "http://127.0.0.1:4317"
    assert cfg.client.spec.custom_tags["env"].literal == {"value": "prod"}
    assert cfg.workload.service_name == "web.shop"
    assert cfg.spec.to_json()["tracing"]["client"]["propagation"] == {"read": ["w3c", "b3"], "write": []}
