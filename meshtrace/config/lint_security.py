"""Lint rules for mTLS and authorization (issue 12): the classic mistakes, each its own rule.

- `strict-caller-without-sidecar`: a STRICT workload that a Deployment without a sidecar calls:
  the caller speaks plaintext, and every request is refused.
- `destination-rule-disables-mtls`: a DestinationRule `tls.mode: DISABLE` for a host whose
  workloads are STRICT: the clients send plaintext, every request is refused.
- `deny-all`: a DENY AuthorizationPolicy with a rule that matches every request: nothing reaches
  the workloads it selects.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from meshtrace.config.loader import Bundle
from meshtrace.config.model import Deployment, Finding
from meshtrace.config.security import destination_tls, peer_authentication


def _strict_ports(bundle: Bundle, dep: Deployment) -> tuple[bool, str]:
    """Whether any inbound port of the Deployment is STRICT, and the policy that says so."""
    pa = peer_authentication(bundle, dep.namespace, dep.pod_labels)
    if pa["mode"] == "STRICT":
        return True, str(pa["source"])
    strict = [p for p in pa["ports"].values() if p["mode"] == "STRICT"]
    return (True, str(strict[0]["source"])) if strict else (False, "")


def strict_caller_without_sidecar(bundle: Bundle) -> Iterator[Finding]:
    from meshtrace.config.lint import _callers, _finding

    for caller, callee, var, value in _callers(bundle):
        injected, why = bundle.sidecar_injected(caller.namespace, caller.pod_labels, caller.annotations)
        strict, source = _strict_ports(bundle, callee)
        if injected is False and strict:
            yield _finding(
                "strict-caller-without-sidecar",
                "error",
                f"{callee.namespace}/{callee.name} accepts only mutual TLS ({source}), but "
                f"{caller.namespace}/{caller.name} calls it ({var}={value}) without a sidecar ({why}): "
                "its plaintext requests are refused",
                "inject a sidecar into the caller, or set the callee's PeerAuthentication to PERMISSIVE "
                "(portLevelMtls for just that port)",
                meta=caller.meta,
                path="spec.template.metadata",
            )


def destination_rule_disables_mtls(bundle: Bundle) -> Iterator[Finding]:
    from meshtrace.config.lint import _finding

    for rule in bundle.destination_rules:
        for host, tls in destination_tls(bundle, rule.namespace).items():
            if tls["source"] != rule.meta.ref or "DISABLE" not in (tls["mode"], *tls["ports"].values()):
                continue
            svc = next((s for s in bundle.services if s.host == host), None)
            if svc is None:
                continue
            for dep in bundle.selected_by(svc):
                strict, source = _strict_ports(bundle, dep)
                if strict:
                    yield _finding(
                        "destination-rule-disables-mtls",
                        "error",
                        f"tls.mode DISABLE makes clients call {host} in plaintext, but "
                        f"{dep.namespace}/{dep.name} behind it accepts only mutual TLS ({source}): "
                        "every request fails",
                        "remove the tls setting (auto mTLS) or use ISTIO_MUTUAL",
                        meta=rule.meta,
                        path="spec.trafficPolicy.tls.mode",
                    )


def deny_all(bundle: Bundle) -> Iterator[Finding]:
    from meshtrace.config.lint import _finding

    for policy in bundle.authorization_policies:
        if str(policy.spec.get("action") or "ALLOW").upper() != "DENY":
            continue
        rules = policy.spec.get("rules")
        for i, rule in enumerate(rules if isinstance(rules, list) else []):
            if isinstance(rule, dict) and not any(rule.get(k) for k in ("from", "to", "when")):
                scope = "every workload it selects" if policy.match_labels is not None else "the namespace"
                yield _finding(
                    "deny-all",
                    "warning",
                    f"DENY rule {i} has no from, to or when: it matches every request, so nothing "
                    f"reaches {scope} and no ALLOW policy can let anything through (DENY is evaluated first)",
                    "give the rule a from/to condition; to allow nothing, an ALLOW policy with `spec: {}` "
                    "is the usual form",
                    meta=policy.meta,
                    path=f"spec.rules[{i}]",
                )


SECURITY_RULES: list[Callable[[Bundle], Iterator[Finding]]] = [
    strict_caller_without_sidecar,
    destination_rule_disables_mtls,
    deny_all,
]
