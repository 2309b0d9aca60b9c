"""Which namespaces get Istio's sidecar injection label, and how it is applied.

Istio adds a proxy only to pods created in a namespace labelled `istio-injection=enabled` (or
`istio.io/rev=<revision>`), unless the pod opts out with `sidecar.istio.io/inject: "false"`.
Without the label no pod gets a proxy and the mesh sends no spans, so every namespace where the
input runs workloads (or configures Telemetry for them) is labelled, except Istio's root namespace
and Kubernetes' own. `default` exists in every cluster: it is labelled with `kubectl label` (as
the guide does) rather than claimed by a Namespace manifest."""

from __future__ import annotations

from dataclasses import dataclass, field

from meshtrace.config.loader import Bundle

LABEL = "istio-injection"
REVISION_LABEL = "istio.io/rev"
OPT_OUT = "sidecar.istio.io/inject"
EXISTING = {"default"}  # in every cluster: labelled by command, not by a manifest
NEVER = {"kube-system", "kube-public", "kube-node-lease"}  # Istio never injects there


@dataclass
class Plan:
    labels: dict[str, dict[str, str]] = field(default_factory=dict)  # namespace -> labels to write
    notes: dict[str, list[str]] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)  # `kubectl label` for namespaces not written
    restart: list[str] = field(default_factory=list)  # namespaces whose pods must be recreated
    warnings: list[tuple[str, str]] = field(default_factory=list)  # (code, message)


def _opted_out(labels: dict[str, str], annotations: dict[str, str]) -> bool:
    value = labels.get(OPT_OUT, annotations.get(OPT_OUT))
    return value is not None and value.lower() == "false"


def plan(bundle: Bundle, root: str) -> Plan:
    """The injection label for every namespace with meshed workloads."""
    out = Plan()
    reasons: dict[str, str] = {}
    opted_out: dict[str, list[str]] = {}
    for dep in bundle.deployments:
        if _opted_out(dep.pod_labels, dep.annotations):
            opted_out.setdefault(dep.namespace, []).append(dep.name)
        else:
            reasons.setdefault(dep.namespace, f"Deployment {dep.name} runs there")
    for tel in bundle.telemetries:
        reasons.setdefault(tel.namespace, f"Telemetry {tel.name} configures its workloads")
    for ns in sorted(set(reasons) | set(opted_out)):
        if ns == root or ns in NEVER:
            continue
        if ns not in reasons:
            out.notes.setdefault(ns, []).append(
                f'No injection label: every workload here opts out ({OPT_OUT}: "false": '
                f"{', '.join(opted_out[ns])})."
            )
            continue
        given = bundle.namespaces.get(ns)
        labels = dict(given.labels) if given is not None else {}
        if labels.get(LABEL) == "disabled":
            out.warnings.append(
                (
                    "injection-disabled",
                    f"namespace {ns} is labelled {LABEL}=disabled but {reasons[ns]}: its pods get no "
                    "sidecar, so no mesh spans or Istio metrics come from them",
                )
            )
            continue
        if LABEL not in labels and REVISION_LABEL in labels:
            out.notes.setdefault(ns, []).append(
                f"Injected by revision ({REVISION_LABEL}={labels[REVISION_LABEL]}), as in the input."
            )
            out.restart.append(ns)
            continue
        out.restart.append(ns)
        why = f"{LABEL}=enabled: {reasons[ns]}, and Istio adds proxies only in labelled namespaces"
        if ns in opted_out:
            why += f'; pods with {OPT_OUT}: "false" keep no proxy ({", ".join(opted_out[ns])})'
        if ns in EXISTING:
            out.commands.append(f"kubectl label namespace {ns} {LABEL}=enabled --overwrite")
            out.notes.setdefault(ns, []).append(why + ".")
            continue
        if labels.get(LABEL) != "enabled":
            out.notes.setdefault(ns, []).append(f"Label {why}.")
        out.labels[ns] = {**labels, LABEL: "enabled"}
    return out
