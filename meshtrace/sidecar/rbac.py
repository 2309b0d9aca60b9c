"""AuthorizationPolicy enforcement on the inbound side, as Envoy's RBAC filter configured by
istiod does it, sans-IO.

Order: if any DENY policy matches, the request is denied; else if no ALLOW policy applies it is
allowed; else it is allowed only if an ALLOW policy matches. A policy matches when one of its
rules does; a rule (`from`, `to`, `when`) matches when each present section does (any of its
entries, all fields of an entry; a `notX` field matches when none of its values does). Strings
match exactly, or `prefix*`, `*suffix`, `*` (any non-empty value for principals and namespaces,
which need an mTLS peer). Principals are written without `spiffe://`.

Fields meshtrace cannot check (`requestPrincipals`, `ipBlocks`, `remoteIpBlocks`, `hosts`,
`when`...) are handled as istiod does for conditions a filter cannot evaluate: such a rule never
matches in an ALLOW policy and always matches in a DENY policy (fail closed).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

DENIED_BODY = "RBAC: access denied"
DENIED_FLAG = "RBAC"  # Envoy's response flag for a request its RBAC filter denied

SOURCE_FIELDS = ("principals", "namespaces")
OPERATION_FIELDS = ("methods", "paths", "ports")


@dataclass(frozen=True, slots=True)
class Request:
    principal: str  # peer SPIFFE id, "" without mTLS
    method: str
    path: str  # without the query
    port: int  # the workload's (app) port

    @property
    def namespace(self) -> str:
        parts = self.principal.split("/")
        return (
            parts[4]
            if self.principal.startswith("spiffe://") and len(parts) >= 5 and parts[3] == "ns"
            else ""
        )


def match_value(pattern: str, value: str, presence: bool = False) -> bool:
    """Istio's string match: exact, `prefix*`, `*suffix`, `*` (any; non-empty when `presence`)."""
    if pattern == "*":
        return bool(value) or not presence
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    if pattern.startswith("*"):
        return value.endswith(pattern[1:])
    return value == pattern


Check = Callable[[Request], bool]


def _values(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def _field(name: str, values: list[str]) -> Check:
    if name == "principals":
        return lambda r: any(match_value(v, r.principal.removeprefix("spiffe://"), True) for v in values)
    if name == "namespaces":
        return lambda r: any(match_value(v, r.namespace, True) for v in values)
    if name == "methods":
        return lambda r: any(match_value(v, r.method) for v in values)
    if name == "paths":
        return lambda r: any(match_value(v, r.path) for v in values)
    return lambda r: str(r.port) in values  # ports


def _entry(entry: Any, known: Sequence[str]) -> tuple[list[Check], bool]:
    """The checks of one `source` / `operation`, and whether it has fields meshtrace cannot check."""
    if not isinstance(entry, dict):
        return [], True
    checks: list[Check] = []
    unsupported = False
    for key, value in entry.items():
        negated = key.startswith("not") and key[3:4].isupper()
        name = key[3].lower() + key[4:] if negated else key
        if name not in known:
            unsupported = True
            continue
        check = _field(name, _values(value))
        checks.append((lambda c: lambda r: not c(r))(check) if negated else check)
    return checks, unsupported


def _section(items: Any, part: str, known: Sequence[str]) -> tuple[list[list[Check]], bool]:
    """`from` / `to`: one list of checks per entry (any entry may match)."""
    out, unsupported = [], False
    for item in items if isinstance(items, list) else []:
        checks, bad = _entry(item.get(part) if isinstance(item, dict) else None, known)
        out.append(checks)
        unsupported = unsupported or bad
    return out, unsupported


@dataclass(frozen=True, slots=True)
class Rule:
    sources: list[list[Check]]  # empty: any source
    operations: list[list[Check]]  # empty: any operation
    unsupported: bool

    def matches(self, r: Request, deny: bool) -> bool:
        if self.unsupported:
            return deny
        return (not self.sources or any(all(c(r) for c in e) for e in self.sources)) and (
            not self.operations or any(all(c(r) for c in e) for e in self.operations)
        )


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    deny: bool
    rules: list[Rule]

    def matches(self, r: Request) -> bool:
        return any(rule.matches(r, self.deny) for rule in self.rules)


def compile_policy(doc: Mapping[str, Any]) -> Policy:
    rules = []
    for raw in doc.get("rules") or []:
        sources, bad_from = _section(raw.get("from"), "source", SOURCE_FIELDS)
        operations, bad_to = _section(raw.get("to"), "operation", OPERATION_FIELDS)
        rules.append(Rule(sources, operations, bad_from or bad_to or bool(raw.get("when"))))
    return Policy(str(doc.get("name") or "?"), str(doc.get("action") or "ALLOW") == "DENY", rules)


@dataclass(frozen=True, slots=True)
class Authorizer:
    deny: tuple[Policy, ...] = ()
    allow: tuple[Policy, ...] = ()

    @classmethod
    def build(cls, policies: Sequence[Mapping[str, Any]]) -> Authorizer:
        compiled = [compile_policy(p) for p in policies]
        return cls(tuple(p for p in compiled if p.deny), tuple(p for p in compiled if not p.deny))

    @property
    def active(self) -> bool:
        return bool(self.deny or self.allow)

    def decide(self, r: Request) -> str | None:
        """None when allowed, else why not (the policy that denied, or that none allowed)."""
        for policy in self.deny:
            if policy.matches(r):
                return f"denied by {policy.name}"
        if self.allow and not any(p.matches(r) for p in self.allow):
            return "no ALLOW policy matched"
        return None
