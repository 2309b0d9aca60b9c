"""Istio's sidecar injection decision (`Bundle.sidecar_injected`): its webhooks' namespace and
object selectors (labels only), then the injector's reading of `sidecar.istio.io/inject`."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshtrace.config import load

DEPLOYMENT = """apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata:
      labels: {app: web%s}
      annotations: {%s}
    spec:
      containers: [{name: web, image: example/web:1}]
"""


@pytest.mark.parametrize(
    ("namespace_labels", "pod_labels", "pod_annotations", "injected"),
    [
        ("{istio-injection: enabled}", "", "", True),
        ("{istio-injection: enabled}", ", sidecar.istio.io/inject: 'false'", "", False),
        ("{istio-injection: enabled}", "", "sidecar.istio.io/inject: 'false'", False),
        # the label is the newer API and wins over the annotation
        (
            "{istio-injection: enabled}",
            ", sidecar.istio.io/inject: 'true'",
            "sidecar.istio.io/inject: 'false'",
            True,
        ),
        ("{istio.io/rev: stable}", "", "", True),
        ("{istio.io/rev: stable}", ", sidecar.istio.io/inject: 'false'", "", False),
        # istio-injection wins over istio.io/rev; any value but "enabled" turns every webhook off
        ("{istio-injection: disabled, istio.io/rev: stable}", "", "", False),
        ("{istio-injection: disabled}", ", sidecar.istio.io/inject: 'true'", "", False),
        # a namespace with neither label: only a pod *label* selects the pod
        ("{}", "", "", False),
        ("{}", ", sidecar.istio.io/inject: 'true'", "", True),
        ("{}", "", "sidecar.istio.io/inject: 'true'", False),
        ("{}", ", istio.io/rev: stable", "", True),
    ],
)
def test_injection_follows_istios_webhooks_and_injector(
    tmp_path: Path, namespace_labels: str, pod_labels: str, pod_annotations: str, injected: bool
) -> None:
    namespace = f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: shop, labels: {namespace_labels}}}\n"
    (tmp_path / "m.yaml").write_text(namespace + "---\n" + DEPLOYMENT % (pod_labels, pod_annotations))
    bundle = load([tmp_path])
    dep = bundle.deployments[0]
    decision, why = bundle.sidecar_injected(dep.namespace, dep.pod_labels, dep.annotations)
    assert decision is injected, why


def test_a_namespace_the_manifests_do_not_define_cannot_be_decided(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text(DEPLOYMENT % ("", ""))
    bundle = load([tmp_path])
    dep = bundle.deployments[0]
    assert bundle.sidecar_injected(dep.namespace, dep.pod_labels, dep.annotations)[0] is None


def test_lint_explains_an_annotation_that_injects_nothing(tmp_path: Path) -> None:
    from meshtrace.config.lint import lint

    namespace = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n"
    (tmp_path / "m.yaml").write_text(
        namespace + "---\n" + DEPLOYMENT % ("", "sidecar.istio.io/inject: 'true'")
    )
    [finding] = [f for f in lint(load([tmp_path])) if f.code == "no-sidecar-injection"]
    assert finding.severity == "warning"
    assert "neither istio-injection=enabled nor istio.io/rev" in finding.message
    assert "the annotation alone injects nothing here" in finding.fix


@pytest.mark.parametrize(
    ("namespace_labels", "pod_labels", "pod_annotations", "code"),
    [
        ("{istio-injection: enabled}", "", "", "namespace-labelled"),
        ("{istio-injection: enabled}", "", "sidecar.istio.io/inject: 'false'", "pod-opt-out"),
        ("{istio-injection: off}", ", sidecar.istio.io/inject: 'true'", "", "namespace-injection-disabled"),
        ("{}", "", "", "namespace-unlabelled"),
        ("{}", ", istio.io/rev: stable", "", "pod-opt-in"),
    ],
)
def test_each_reason_has_a_stable_code(
    tmp_path: Path, namespace_labels: str, pod_labels: str, pod_annotations: str, code: str
) -> None:
    """Lint acts on the reason's code (docs/lint.md, "Injection reasons"), never on its text."""
    namespace = f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: shop, labels: {namespace_labels}}}\n"
    (tmp_path / "m.yaml").write_text(namespace + "---\n" + DEPLOYMENT % (pod_labels, pod_annotations))
    dep = (bundle := load([tmp_path])).deployments[0]
    _, why = bundle.sidecar_injected(dep.namespace, dep.pod_labels, dep.annotations)
    assert why.code == code and str(why) == why.text and why.text in f"({why})"
