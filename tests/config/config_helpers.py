"""Helpers shared by the config tests (importable because conftest.py puts this folder on sys.path)."""

from __future__ import annotations

import textwrap

MESH = """
apiVersion: install.istio.io/v1alpha1
kind: IstioOperator
metadata: {name: mesh, namespace: istio-system}
spec:
  meshConfig:
    extensionProviders:
    - name: otel
      opentelemetry: {service: otel.istio-system.svc.cluster.local, port: 4317}
"""


def telemetry(name: str, namespace: str, spec: str, stamp: str | None = None) -> str:
    """A telemetry.istio.io/v1 Telemetry document; `spec` is YAML indented by the caller or not."""
    meta = f"name: {name}, namespace: {namespace}" + (f", creationTimestamp: '{stamp}'" if stamp else "")
    body = textwrap.indent(textwrap.dedent(spec).strip(), "  ")
    return f"apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {{{meta}}}\nspec:\n{body}\n"
