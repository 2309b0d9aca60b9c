"""AuthorizationPolicy evaluation tables (issue 12): Istio's matching rules and DENY-then-ALLOW
order, and the SPIFFE checks of peer certificates."""

from __future__ import annotations

from typing import Any

import pytest

from meshtrace.sidecar.certs import PeerRejected, peer_principal
from meshtrace.sidecar.rbac import Authorizer, Request, match_value

SLEEP = "spiffe://cluster.local/ns/foo/sa/sleep"
INGRESS = "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"


@pytest.mark.parametrize(
    ("pattern", "value", "presence", "expected"),
    [
        ("GET", "GET", False, True),
        ("GET", "get", False, False),
        ("/api/*", "/api/v1", False, True),
        ("/api/*", "/apiv1", False, False),
        ("*/admin", "/x/admin", False, True),
        ("*/admin", "/x/admin/y", False, False),
        ("*", "", False, True),
        ("*", "", True, False),  # principals "*": any authenticated peer
        ("*", "cluster.local/ns/a/sa/b", True, True),
    ],
)
def test_istio_string_matching(pattern: str, value: str, presence: bool, expected: bool) -> None:
    assert match_value(pattern, value, presence) is expected


def policy(name: str, action: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {"name": name, "action": action, "rules": rules}


ALLOW_FOO = policy("ns/allow-foo", "ALLOW", [{"from": [{"source": {"namespaces": ["foo"]}}]}])
ALLOW_GET_API = policy(
    "ns/allow-get", "ALLOW", [{"to": [{"operation": {"methods": ["GET"], "paths": ["/api/*"]}}]}]
)
DENY_ADMIN = policy("ns/deny-admin", "DENY", [{"to": [{"operation": {"paths": ["*/admin"]}}]}])
DENY_NOT_INGRESS = policy(
    "ns/only-ingress",
    "DENY",
    [{"from": [{"source": {"notPrincipals": ["cluster.local/ns/istio-system/sa/*"]}}]}],
)
ALLOW_NOTHING = {"name": "ns/allow-nothing", "action": "ALLOW"}  # spec: {} denies everything
ALLOW_ALL = policy("ns/allow-all", "ALLOW", [{}])
DENY_PORT = policy("ns/deny-9000", "DENY", [{"to": [{"operation": {"ports": ["9000"]}}]}])
ALLOW_JWT = policy("ns/jwt", "ALLOW", [{"from": [{"source": {"requestPrincipals": ["*"]}}]}])
DENY_JWT = policy("ns/jwt-deny", "DENY", [{"from": [{"source": {"requestPrincipals": ["*"]}}]}])


@pytest.mark.parametrize(
    ("policies", "principal", "method", "path", "port", "allowed"),
    [
        ([], "", "GET", "/", 8080, True),  # no policy: allowed
        ([ALLOW_FOO], SLEEP, "GET", "/", 8080, True),
        ([ALLOW_FOO], INGRESS, "GET", "/", 8080, False),  # an ALLOW applies and none matches
        ([ALLOW_FOO], "", "GET", "/", 8080, False),  # plaintext: no namespace
        ([ALLOW_FOO, ALLOW_GET_API], INGRESS, "GET", "/api/x", 8080, True),  # any ALLOW
        ([ALLOW_GET_API], "", "POST", "/api/x", 8080, False),  # all fields of an entry
        ([ALLOW_FOO, DENY_ADMIN], SLEEP, "GET", "/x/admin", 8080, False),  # DENY first
        ([DENY_ADMIN], SLEEP, "GET", "/x/admins", 8080, True),
        ([DENY_NOT_INGRESS], INGRESS, "GET", "/", 8080, True),
        ([DENY_NOT_INGRESS], SLEEP, "GET", "/", 8080, False),
        ([DENY_NOT_INGRESS], "", "GET", "/", 8080, False),  # no principal matches none
        ([ALLOW_NOTHING], INGRESS, "GET", "/", 8080, False),
        ([ALLOW_ALL], "", "DELETE", "/x", 8080, True),
        ([ALLOW_ALL, DENY_PORT], "", "GET", "/", 9000, False),
        ([ALLOW_ALL, DENY_PORT], "", "GET", "/", 8080, True),
        ([ALLOW_JWT], SLEEP, "GET", "/", 8080, False),  # unsupported field: ALLOW never matches
        ([DENY_JWT], SLEEP, "GET", "/", 8080, False),  # unsupported field: DENY always matches
    ],
)
def test_allow_deny_table(
    policies: list[dict[str, Any]], principal: str, method: str, path: str, port: int, allowed: bool
) -> None:
    decision = Authorizer.build(policies).decide(Request(principal, method, path, port))
    assert (decision is None) is allowed, decision


def test_denial_names_the_policy() -> None:
    authorizer = Authorizer.build([ALLOW_ALL, DENY_ADMIN])
    assert authorizer.decide(Request(SLEEP, "GET", "/a/admin", 80)) == "denied by ns/deny-admin"
    assert Authorizer.build([ALLOW_FOO]).decide(Request("", "GET", "/", 80)) == "no ALLOW policy matched"


def _cert(*uris: str) -> dict[str, Any]:
    return {"subjectAltName": (*(("URI", u) for u in uris), ("DNS", "x"))}


def test_peer_principal_checks_trust_domain_and_expected_identity() -> None:
    assert peer_principal(_cert(SLEEP), "cluster.local") == SLEEP
    assert peer_principal(_cert(SLEEP), "cluster.local", SLEEP) == SLEEP
    for cert, expect, why in [
        (_cert("spiffe://evil.local/ns/foo/sa/sleep"), None, "trust domain"),
        (_cert(SLEEP), INGRESS, "expected"),
        (_cert(), None, "no SPIFFE id"),
        (None, None, "no SPIFFE id"),
    ]:
        with pytest.raises(PeerRejected, match=why):
            peer_principal(cert, "cluster.local", expect)
