"""Effective tracing and metrics config of one workload, resolved as istiod does.

Follows istio/istio pilot/pkg/model/telemetry.go (`applicableTelemetries`, `Tracing`,
`mergeMetrics`) and pilot/pkg/networking/core/tracing.go (`configureTracingFromTelemetry`):

1. Telemetry resources in scope, in this order: the root namespace's oldest selector-less one,
   the workload namespace's oldest selector-less one, then every resource in the workload's
   namespace whose `selector.matchLabels` is a subset of the workload's labels, oldest first
   (istiod since 1.21). "Oldest" = creationTimestamp, then name.
2. Tracing (`tracing.py`): start from `meshConfig.defaultProviders.tracing[0]`; every `tracing[]`
   entry in order overrides, per direction (match.mode), each field it sets; `customTags`
   replace whole. A provider name that does not resolve leaves no provider: tracing off for
   that direction.
3. No Telemetry tracing and no default provider: the legacy path (`legacy_tracing.py`),
   `meshConfig.enableTracing` with `defaultConfig.tracing` (zipkin address, sampling, custom tags).
4. Sampling: provider sampler > Telemetry > pod annotation `proxy.istio.io/config` >
   `meshConfig.defaultConfig.tracing.sampling` > PILOT_TRACE_SAMPLING (1.0). A proxy-config 0.0
   counts as unset; out of range resets to 1.0 (`proxy_config.py`).
5. Metrics (`metrics.py`): mergeMetrics for the prometheus provider.

The result is the `meshtrace.document.Document` of docs/config-document.md without `services`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from meshtrace.config.legacy_tracing import legacy_tracing, seed_era_notes
from meshtrace.config.loader import Bundle
from meshtrace.config.metrics import STANDARD_METRICS, resolve_metrics
from meshtrace.config.model import Telemetry
from meshtrace.config.proxy_config import proxy_tracing
from meshtrace.config.resolution import DIRECTIONS, MODES, Resolution
from meshtrace.config.security import security_document
from meshtrace.config.tracing import telemetry_tracing
from meshtrace.document import (
    AppliedTelemetry,
    Document,
    IgnoredTelemetry,
    Mesh,
    Workload,
)
from meshtrace.document import (
    Telemetry as TelemetrySection,
)

__all__ = ["DIRECTIONS", "MODES", "STANDARD_METRICS", "effective_config", "effective_document"]


def applicable(r: Resolution) -> tuple[list[tuple[str, Telemetry]], list[IgnoredTelemetry]]:
    """[(scope, Telemetry)] in application order, and the resources ignored with reasons."""
    root = r.mesh.root_namespace
    by_ns: dict[str, list[Telemetry]] = {}
    ignored: list[IgnoredTelemetry] = []
    for tel in sorted(r.bundle.telemetries, key=lambda t: t.sort_key):
        if tel.namespace not in (root, r.namespace):
            continue
        if not tel.valid:
            ignored.append(
                IgnoredTelemetry(resource=tel.meta.ref, reason="rejected by the Telemetry CRD schema")
            )
            continue
        by_ns.setdefault(tel.namespace, []).append(tel)
    chain: list[tuple[str, Telemetry]] = []
    scopes = [("root", root)] + ([("namespace", r.namespace)] if r.namespace != root else [])
    for scope, ns in scopes:
        wide = [t for t in by_ns.get(ns, []) if t.namespace_wide]
        if wide:
            chain.append((scope, wide[0]))
            for later in wide[1:]:
                reason = (
                    f"a second selector-less Telemetry in {ns}: only the oldest ({wide[0].meta.ref}) applies"
                )
                ignored.append(IgnoredTelemetry(resource=later.meta.ref, reason=reason))
    # Every matching workload Telemetry applies, oldest first, each over the previous ones
    # (istiod's first-match `break` went in istio#47162, released in 1.21.0).
    for tel in by_ns.get(r.namespace, []):
        if tel.namespace_wide:
            continue
        if not tel.match_labels:
            reason = "targetRefs do not select sidecar workloads"
            ignored.append(IgnoredTelemetry(resource=tel.meta.ref, reason=reason))
            continue
        if all(r.labels.get(k) == v for k, v in tel.match_labels.items()):
            chain.append(("workload", tel))
    for item in ignored:
        r.warnings.append(f"{item.resource} ignored: {item.reason}")
    return chain, ignored


def _workload(r: Resolution) -> Workload:
    app = r.labels.get("app") or r.workload
    return Workload(
        name=r.workload,
        namespace=r.namespace,
        labels=dict(sorted(r.labels.items())),
        service_name=f"{app}.{r.namespace}",
        canonical_service=r.labels.get("service.istio.io/canonical-name")
        or r.labels.get("app.kubernetes.io/name")
        or app,
        canonical_revision=r.labels.get("service.istio.io/canonical-revision")
        or r.labels.get("app.kubernetes.io/version")
        or r.labels.get("version")
        or "latest",
    )


def document(r: Resolution) -> Document:
    for problem in r.bundle.problems:
        if problem.code == "proxy-config-snake-case":
            r.note(f"{problem.resource} {problem.path}: {problem.message}")
    chain, ignored = applicable(r)
    pt = proxy_tracing(r)
    entries = any(tel.entries("tracing") for _scope, tel in chain)
    if entries or r.mesh.default_tracing_providers:
        tracing = telemetry_tracing(r, chain, pt)
    else:
        tracing = legacy_tracing(r, pt)
    seed_era_notes(r, tracing)
    metrics = resolve_metrics(r, chain)
    trust_domain = str(r.mesh.get("trustDomain"))
    service_account = r.deployment.service_account if r.deployment else "default"
    # before `warnings` is read: the security resolution adds its own notes
    security = security_document(r.bundle, r.namespace, r.labels, service_account, r.warnings)
    return Document(
        workload=_workload(r),
        mesh=Mesh(
            mesh_id=str((r.mesh.default_config.get("meshId")) or trust_domain),
            cluster_id="Kubernetes",
            trust_domain=trust_domain,
            root_namespace=r.mesh.root_namespace,
        ),
        telemetry=TelemetrySection(
            applied=tuple(
                AppliedTelemetry(scope=scope, resource=t.meta.ref, file=t.meta.origin.file)  # type: ignore[arg-type]
                for scope, t in chain
            ),
            ignored=tuple(ignored),
        ),
        tracing=tracing,
        metrics=metrics,
        security=security,
        sources=dict(sorted(r.sources.items())),
        warnings=tuple(r.warnings),
    )


def effective_document(
    bundle: Bundle,
    workload: str,
    namespace: str,
    labels: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
) -> Document:
    """The config document (docs/config-document.md, without `services`) of one workload.

    `labels` describe a workload no Deployment defines (else the Deployment's pod labels);
    `env` is istiod's environment (PILOT_TRACE_SAMPLING, header envName values)."""
    return document(Resolution(bundle, workload, namespace, labels, env))


def effective_config(
    bundle: Bundle,
    workload: str,
    namespace: str,
    labels: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """`effective_document` in its JSON shape (what explain prints and the control plane serves)."""
    return effective_document(bundle, workload, namespace, labels, env).to_json()
