"""Security configuration resolved as istiod does, pure: the effective PeerAuthentication of a
workload (mTLS mode per port), the AuthorizationPolicies that apply to it, and the
DestinationRule TLS mode a client uses per destination host. Each value names its source.

Rules (Istio's):
- PeerAuthentication: the mesh policy (root namespace, no selector), the namespace policy (no
  selector) and the workload policy (selector matching the pod labels) are layered in that order;
  of several at one level the oldest wins (creationTimestamp, then name). A layer whose mode is
  UNSET inherits the one below; nothing at all is PERMISSIVE. `portLevelMtls` is read from the
  workload policy only, a port whose mode is UNSET inheriting the workload's mode.
- AuthorizationPolicy: root-namespace policies apply to every workload their selector matches,
  namespace policies to the workloads of their namespace their selector matches (no selector:
  all). CUSTOM and AUDIT actions are not enforced here (a warning says so).
- DestinationRule: for a host, the rule in the client's namespace, then the Service's, then the
  root namespace; `trafficPolicy.portLevelSettings[].tls` wins over `trafficPolicy.tls`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from meshtrace.config.loader import Bundle
from meshtrace.config.model import SecurityResource
from meshtrace.document import Security

MTLS_MODES = ("UNSET", "DISABLE", "PERMISSIVE", "STRICT")
TLS_MODES = ("DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL")
CLUSTER_DOMAIN = "svc.cluster.local"
DEFAULT_SOURCE = "Istio default (no PeerAuthentication)"


def _age(r: SecurityResource) -> tuple[str, str, str]:
    # no creationTimestamp (a file not yet applied) sorts last, in name order
    return (r.meta.creation_timestamp or "~", r.namespace, r.name)


def _matches(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _mode(value: Any) -> str:
    mode = str((value or {}).get("mode") or "UNSET").upper() if isinstance(value, dict) else "UNSET"
    return mode if mode in MTLS_MODES else "UNSET"


def peer_authentication(bundle: Bundle, namespace: str, labels: Mapping[str, str]) -> dict[str, Any]:
    """{"mode", "source", "ports": {port: {"mode", "source"}}} for a workload's inbound."""
    root = bundle.mesh.root_namespace
    policies = sorted(bundle.peer_authentications, key=_age)
    mesh = next((p for p in policies if p.namespace == root and p.match_labels is None), None)
    ns = next((p for p in policies if p.namespace == namespace and p.match_labels is None), None)
    workload = next(
        (
            p
            for p in policies
            if p.namespace == namespace and p.match_labels is not None and _matches(p.match_labels, labels)
        ),
        None,
    )
    mode, source = "PERMISSIVE", DEFAULT_SOURCE
    for scope, policy in (("mesh", mesh), ("namespace", ns), ("workload", workload)):
        layer = _mode(policy.spec.get("mtls")) if policy is not None else "UNSET"
        if policy is not None and layer != "UNSET":
            mode, source = layer, f"{policy.meta.ref} ({scope})"
    ports: dict[str, dict[str, str]] = {}
    if workload is not None:
        port_level = workload.spec.get("portLevelMtls")
        for port, value in port_level.items() if isinstance(port_level, dict) else []:
            layer = _mode(value)
            ports[str(port)] = (
                {"mode": mode, "source": source}
                if layer == "UNSET"
                else {"mode": layer, "source": f"{workload.meta.ref} portLevelMtls {port}"}
            )
    return {"mode": mode, "source": source, "ports": ports}


def authorization(
    bundle: Bundle, namespace: str, labels: Mapping[str, str], warnings: list[str]
) -> list[dict[str, Any]]:
    """The AuthorizationPolicies that apply to a workload, as {"name", "action", "rules",
    "scope"}, oldest first."""
    root = bundle.mesh.root_namespace
    out = []
    for policy in sorted(bundle.authorization_policies, key=_age):
        if policy.namespace not in (root, namespace):
            continue
        selector = policy.match_labels
        if selector is not None and not _matches(selector, labels):
            continue
        action = str(policy.spec.get("action") or "ALLOW").upper()
        if action not in ("ALLOW", "DENY"):
            warnings.append(f"{policy.meta.ref}: action {action} is not enforced by meshtrace")
            continue
        rules = policy.spec.get("rules")
        scope = "mesh" if policy.namespace == root else "namespace" if selector is None else "workload"
        out.append(
            {
                "name": policy.meta.ref,
                "action": action,
                "rules": [r for r in rules if isinstance(r, dict)] if isinstance(rules, list) else [],
                "scope": scope,
            }
        )
    return out


def _host_matches(rule_host: str, rule_namespace: str, fqdn: str) -> bool:
    host = rule_host.rstrip(".")
    if host == "*":
        return True
    if host.startswith("*."):
        return fqdn.endswith(host[1:])
    labels = host.split(".")
    if len(labels) == 1:
        host = f"{host}.{rule_namespace}.{CLUSTER_DOMAIN}"
    elif len(labels) == 2:
        host = f"{host}.{CLUSTER_DOMAIN}"
    elif len(labels) == 3 and labels[2] == "svc":
        host = f"{host}.cluster.local"
    return host == fqdn


def _tls_mode(value: Any) -> str | None:
    if not isinstance(value, dict):
        return None
    mode = str(value.get("mode") or "").upper()
    return mode if mode in TLS_MODES else None


def destination_tls(bundle: Bundle, client_namespace: str) -> dict[str, dict[str, Any]]:
    """Per Service host, the TLS mode the client's DestinationRule sets (hosts without one are
    left out: auto mTLS decides)."""
    root = bundle.mesh.root_namespace
    rules = sorted(bundle.destination_rules, key=_age)
    out: dict[str, dict[str, Any]] = {}
    for svc in bundle.services:
        fqdn = svc.host
        for ns in dict.fromkeys((client_namespace, svc.namespace, root)):
            rule = next(
                (
                    r
                    for r in rules
                    if r.namespace == ns and _host_matches(str(r.spec.get("host") or ""), ns, fqdn)
                ),
                None,
            )
            if rule is None:
                continue
            policy = (
                rule.spec.get("trafficPolicy") if isinstance(rule.spec.get("trafficPolicy"), dict) else {}
            )
            assert isinstance(policy, dict)
            ports = {}
            for setting in policy.get("portLevelSettings") or []:
                number = (setting.get("port") or {}).get("number") if isinstance(setting, dict) else None
                mode = _tls_mode(setting.get("tls")) if isinstance(setting, dict) else None
                if number is not None and mode:
                    ports[str(number)] = mode
            mode = _tls_mode(policy.get("tls"))
            if mode or ports:
                out[fqdn] = {"mode": mode, "ports": ports, "source": rule.meta.ref}
            break  # the first DestinationRule found for the host is the one, with or without tls
    return out


def security_document(
    bundle: Bundle, namespace: str, labels: Mapping[str, str], service_account: str, warnings: list[str]
) -> Security:
    """The `security` section of a workload's config document (the resolvers above write the
    document's JSON shape, which lint and tests read; the contract checks it here)."""
    trust_domain = str(bundle.mesh.get("trustDomain") or "cluster.local")
    section = {
        "identity": f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}",
        "service_account": service_account,
        "peer_authentication": peer_authentication(bundle, namespace, labels),
        "authorization": authorization(bundle, namespace, labels, warnings),
        "destinations": destination_tls(bundle, namespace),
    }
    return Security.from_json(section, strict=True)
