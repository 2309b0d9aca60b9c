"""Lint rules for mTLS and authorization (issue 12): each fires, and its near miss stays silent."""

from __future__ import annotations

from collections.abc import Callable

from meshtrace.config import Bundle
from meshtrace.config.lint import lint

Manifests = Callable[..., Bundle]


def deployment(name: str, inject: bool = True, env: str = "") -> str:
    annotation = "" if inject else "\n      annotations: {sidecar.istio.io/inject: 'false'}"
    env_block = f"\n        env: [{{name: API_URL, value: '{env}'}}]" if env else ""
    return f"""apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: shop}}
spec:
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata:
      labels: {{app: {name}}}{annotation}
    spec:
      containers:
      - name: {name}
        image: {name}:1{env_block}
"""


API_SERVICE = """apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec: {selector: {app: api}, ports: [{port: 80}]}
"""
STRICT = """apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: shop}
spec: {mtls: {mode: STRICT}}
"""
DR_DISABLE = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api, namespace: shop}
spec: {host: api, trafficPolicy: {tls: {mode: DISABLE}}}
"""


def codes(bundle: Bundle) -> set[str]:
    return {f.code for f in lint(bundle)}


def test_strict_with_a_caller_without_sidecar(manifests: Manifests) -> None:
    found = lint(
        manifests(API_SERVICE, STRICT, deployment("api"), deployment("cron", False, "http://api:80"))
    )
    rule = [f for f in found if f.code == "strict-caller-without-sidecar"]
    assert len(rule) == 1 and "shop/cron" in rule[0].message and rule[0].severity == "error"
    # near misses: the caller has a sidecar; the callee is PERMISSIVE
    assert "strict-caller-without-sidecar" not in codes(
        manifests(API_SERVICE, STRICT, deployment("api"), deployment("cron", True, "http://api:80"))
    )
    assert "strict-caller-without-sidecar" not in codes(
        manifests(API_SERVICE, deployment("api"), deployment("cron", False, "http://api:80"))
    )


def test_destination_rule_disable_against_strict(manifests: Manifests) -> None:
    found = [
        f
        for f in lint(manifests(API_SERVICE, STRICT, DR_DISABLE, deployment("api")))
        if f.code == "destination-rule-disables-mtls"
    ]
    assert len(found) == 1 and found[0].resource == "DestinationRule shop/api"
    assert "destination-rule-disables-mtls" not in codes(
        manifests(API_SERVICE, DR_DISABLE, deployment("api"))
    )


def test_deny_that_shadows_everything(manifests: Manifests) -> None:
    deny = """apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: lockdown, namespace: shop}
spec:
  action: DENY
  rules: [%s]
"""
    found = [f for f in lint(manifests(deny % "{}")) if f.code == "deny-all"]
    assert len(found) == 1 and found[0].path == "spec.rules[0]"
    assert "deny-all" not in codes(manifests(deny % "{to: [{operation: {paths: ['/admin*']}}]}"))
