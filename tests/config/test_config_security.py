"""PeerAuthentication, AuthorizationPolicy and DestinationRule resolved as istiod does
(issue 12): layering, oldest-wins, port-level modes, selectors and DestinationRule lookup."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from meshtrace.config import Bundle
from meshtrace.config.security import authorization, destination_tls, peer_authentication
from meshtrace.document import PeerAuthentication

Manifests = Callable[..., Bundle]
WEB = {"app": "web"}


def pa(name: str, namespace: str, mode: str | None, selector: dict[str, str] | None = None,
       ports: dict[int, str] | None = None, created: str | None = None) -> str:  # fmt: skip
    spec: dict[str, Any] = {}
    if mode:
        spec["mtls"] = {"mode": mode}
    if selector is not None:
        spec["selector"] = {"matchLabels": selector}
    if ports:
        spec["portLevelMtls"] = {str(p): {"mode": m} for p, m in ports.items()}
    created_line = f"\n  creationTimestamp: '{created}'" if created else ""
    import json

    return (
        f"apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
        f"metadata:\n  name: {name}\n  namespace: {namespace}{created_line}\nspec: {json.dumps(spec)}\n"
    )


@pytest.mark.parametrize(
    ("docs", "mode", "source"),
    [
        ([], "PERMISSIVE", "Istio default"),
        ([pa("default", "istio-system", "STRICT")], "STRICT", "istio-system/default (mesh)"),
        (
            [pa("default", "istio-system", "STRICT"), pa("ns", "shop", "DISABLE")],
            "DISABLE",
            "shop/ns (namespace)",
        ),
        ([pa("default", "istio-system", "STRICT"), pa("ns", "shop", "UNSET")], "STRICT", "(mesh)"),
        ([pa("ns", "shop", "STRICT"), pa("w", "shop", "PERMISSIVE", WEB)], "PERMISSIVE", "shop/w (workload)"),
        ([pa("ns", "shop", "STRICT"), pa("w", "shop", None, WEB)], "STRICT", "(namespace)"),  # UNSET inherits
        ([pa("ns", "shop", "STRICT"), pa("w", "shop", "DISABLE", {"app": "db"})], "STRICT", "(namespace)"),
        ([pa("other", "other", "STRICT")], "PERMISSIVE", "Istio default"),
        # of two namespace policies the oldest wins
        (
            [
                pa("b", "shop", "STRICT", created="2026-01-02T00:00:00Z"),
                pa("a", "shop", "DISABLE", created="2026-01-01T00:00:00Z"),
            ],
            "DISABLE",
            "shop/a",
        ),
    ],
)
def test_peer_authentication_layers(manifests: Manifests, docs: list[str], mode: str, source: str) -> None:
    resolved = peer_authentication(manifests(*docs), "shop", WEB)
    assert resolved["mode"] == mode and source in resolved["source"]


def test_port_level_mtls_from_the_workload_policy_only(manifests: Manifests) -> None:
    bundle = manifests(
        pa("ns", "shop", "STRICT", ports={8080: "DISABLE"}),  # ignored: not a workload policy
        pa("w", "shop", None, WEB, ports={9090: "PERMISSIVE", 9091: "UNSET"}),
    )
    resolved = peer_authentication(bundle, "shop", WEB)
    typed = PeerAuthentication.from_json(resolved)  # as the document carries it
    assert typed.port_mode(8080) == "STRICT"
    assert typed.port_mode(9090) == "PERMISSIVE" and "portLevelMtls 9090" in typed.ports["9090"].source
    assert typed.port_mode(9091) == "STRICT"  # UNSET inherits the workload's mode


AP = """apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: {name}, namespace: {ns}}}
spec: {spec}
"""


def test_authorization_policies_that_apply(manifests: Manifests) -> None:
    bundle = manifests(
        AP.format(name="mesh-deny", ns="istio-system", spec='{"action": "DENY", "rules": [{}]}'),
        AP.format(name="ns-allow", ns="shop", spec='{"rules": [{}]}'),
        AP.format(name="web", ns="shop", spec='{"selector": {"matchLabels": {"app": "web"}}}'),
        AP.format(name="db", ns="shop", spec='{"selector": {"matchLabels": {"app": "db"}}}'),
        AP.format(name="elsewhere", ns="other", spec="{}"),
        AP.format(name="ext", ns="shop", spec='{"action": "CUSTOM"}'),
    )
    warnings: list[str] = []
    applied = authorization(bundle, "shop", WEB, warnings)
    assert [(p["name"], p["action"], p["scope"]) for p in applied] == [
        ("AuthorizationPolicy istio-system/mesh-deny", "DENY", "mesh"),
        ("AuthorizationPolicy shop/ns-allow", "ALLOW", "namespace"),
        ("AuthorizationPolicy shop/web", "ALLOW", "workload"),
    ]
    assert any("CUSTOM" in w for w in warnings)


DR = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}, namespace: {ns}}}
spec: {spec}
"""
SVC = """apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec: {selector: {app: api}, ports: [{port: 80}]}
"""


def test_destination_rule_lookup_order_and_port_settings(manifests: Manifests) -> None:
    api = "api.shop.svc.cluster.local"
    root = DR.format(
        name="root",
        ns="istio-system",
        spec='{"host": "*.svc.cluster.local", "trafficPolicy": {"tls": {"mode": "DISABLE"}}}',
    )
    shop = DR.format(
        name="api", ns="shop",
        spec='{"host": "api", "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"},'
        ' "portLevelSettings": [{"port": {"number": 80}, "tls": {"mode": "DISABLE"}}]}}',
    )  # fmt: skip
    client = DR.format(name="mine", ns="web", spec='{"host": "api.shop", "trafficPolicy": {}}')
    assert destination_tls(manifests(SVC, root), "web")[api]["mode"] == "DISABLE"
    found = destination_tls(manifests(SVC, root, shop), "web")[api]
    assert (
        found["mode"] == "ISTIO_MUTUAL"
        and found["ports"] == {"80": "DISABLE"}
        and "shop/api" in found["source"]
    )
    # the client's own namespace first; a rule without tls leaves auto mTLS in charge
    assert api not in destination_tls(manifests(SVC, root, shop, client), "web")
