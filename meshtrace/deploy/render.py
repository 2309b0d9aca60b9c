"""`render(bundle, options)`: every production manifest as {relative path: file text}.

Pure and deterministic: the same input gives byte-identical files (no clock, no absolute paths:
input files are named by their base name). The CLI (`cli.py`) only writes the result."""

from __future__ import annotations

from dataclasses import dataclass, field

from meshtrace.collector.schema import DEBUG_ONLY, Problem
from meshtrace.config.loader import Bundle
from meshtrace.deploy import (
    backend,
    collector,
    collector_check,
    injection,
    istio,
    monitoring,
    profile,
    topology,
)
from meshtrace.deploy.kube import base, input_ref
from meshtrace.deploy.manifest import Manifest, comment, commented_yaml, file_text

# Created by `istioctl install` / Kubernetes itself: never written to namespaces.yaml.
SYSTEM_NAMESPACES = {"default", "kube-system", "kube-public", "kube-node-lease"}


@dataclass(frozen=True)
class RenderWarning:
    """Something the output does that a user must look at; `code` is stable (docs/render.md
    explains each), the message is for people."""

    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.message} [{self.code}]"


@dataclass
class Result:
    files: dict[str, str] = field(default_factory=dict)
    warnings: list[RenderWarning] = field(default_factory=list)  # one list: printed, in the README
    profile_changes: list[str] = field(default_factory=list)  # what --profile merged or overrode


@dataclass
class _File:
    """One output file: its header comment, its documents, and comments after them."""

    header: list[str]
    docs: list[Manifest]
    footer: str = ""


def render(bundle: Bundle, options: collector.Options) -> Result:
    """Raises `RenderError` when the input cannot give manifests a cluster would accept."""
    inputs = ", ".join(base(f) for f in bundle.files) or "(no files)"
    result = Result()
    if options.profile == "production":
        applied = profile.production(bundle)
        bundle, result.profile_changes = applied.bundle, applied.changes
    files = _istio_files(bundle, options, result.profile_changes)
    rendered = collector.render(bundle, options)
    chosen = backend.render(options.backend, options.storage) if options.backend else None
    if chosen is not None:
        result.warnings += [RenderWarning(c, m) for c, m in chosen.warnings]
    if rendered is not None:
        files |= _collector_files(bundle, options, rendered, chosen, result)
    if chosen is not None:
        header = ["The trace backend (--backend): `kubectl apply -f backend/`."]
        files |= {path: _File(header, docs) for path, docs in chosen.files.items()}
    root = bundle.mesh.root_namespace
    mesh_plan = injection.plan(bundle, root)
    result.warnings += [RenderWarning(c, m) for c, m in mesh_plan.warnings]
    files |= _monitoring_files(bundle, options, rendered, root)
    namespaces = _namespaces(bundle, files, root, mesh_plan)
    if namespaces is not None:
        files = {"namespaces.yaml": _File(["Namespaces the other files use."], namespaces), **files}
    for path, file in files.items():
        header = [f"Rendered by `meshtrace render` from {inputs}.", *file.header]
        result.files[path] = file_text(header, file.docs, file.footer)
    result.files["README.md"] = _readme(inputs, result, options, rendered, mesh_plan)
    return result


def _istio_files(bundle: Bundle, options: collector.Options, profile_changes: list[str]) -> dict[str, _File]:
    """The IstioOperator and the Telemetry resources, each noting what --profile changed in it."""
    files: dict[str, _File] = {}
    mesh = istio.mesh_config(bundle)
    if mesh is not None:
        files["istio/mesh-config.yaml"] = _File(
            ["The mesh-wide config: apply with `istioctl install -f istio/mesh-config.yaml` (Istio 1.22+)."],
            [mesh],
        )
    kept, left_out = istio.telemetries(bundle)
    for manifest in [*([mesh] if mesh else []), *kept]:
        meta = manifest.data["metadata"]
        ref = "meshConfig" if manifest is mesh else f"Telemetry {meta['namespace']}/{meta['name']}:"
        manifest.notes += [f"--profile {options.profile}: {c}" for c in profile_changes if c.startswith(ref)]
    if kept or left_out:
        footer = ""
        for reason, tel in left_out:
            footer += comment(["", f"Left out: {input_ref(tel.meta)}: {reason}."])
            spec = dict(tel.spec)
            istio.rewrite_mixer(spec)
            footer += comment(["As it would read in telemetry.istio.io/v1 (not applied):"])
            footer += commented_yaml({"spec": spec})
        files["istio/telemetry.yaml"] = _File(
            [
                "Every Telemetry that takes effect, as telemetry.istio.io/v1, each checked against "
                "Istio's CRD schema. Apply with `kubectl apply -f istio/telemetry.yaml`."
            ],
            kept,
            footer,
        )
    return files


def _collector_files(
    bundle: Bundle,
    options: collector.Options,
    rendered: collector.Rendered,
    chosen: backend.Backend | None,
    result: Result,
) -> dict[str, _File]:
    """The collector wired to the backend and laid out for the cluster (topology), its final
    config checked; adds the warnings to `result`."""
    cm_notes = rendered.files["configmap.yaml"][0].notes
    if chosen is not None:
        backend.wire(rendered, chosen, cm_notes)
    if result.profile_changes:
        cm_notes.append("Production profile: see the README's list of merged and overridden settings.")
    result.warnings += [RenderWarning(c, m) for c, m in topology.apply(rendered, options)]
    header = [
        f"OpenTelemetry Collector ({options.image}), highly available. `kubectl apply -f otel-collector/`."
    ]
    files = {f"otel-collector/{name}": _File(header, docs) for name, docs in rendered.files.items()}
    result.warnings += _provider_checks(bundle, rendered)
    problems = _collector_problems(bundle, rendered, chosen)
    cm_notes += [f"Warning {p.code} {p.path}: {p.message}." for p in problems]
    result.warnings += [
        RenderWarning(p.code, f"collector config {p.path}: {p.message}{_HINTS.get(p.code, '')}")
        for p in problems
    ]
    return files


def _monitoring_files(
    bundle: Bundle, options: collector.Options, rendered: collector.Rendered | None, root: str
) -> dict[str, _File]:
    selector = monitoring.selector_labels(bundle, options.prometheus_selector)
    return {
        "monitoring/prometheus-rules.yaml": _File(
            ["Alerts on metrics the current Collector and Istio emit (needs the Prometheus Operator CRDs)."],
            [monitoring.prometheus_rule(bundle, rendered, selector)],
        ),
        "monitoring/service-monitor.yaml": _File(
            ["What Prometheus scrapes: the collector's self-metrics and the sidecars' Istio metrics."],
            monitoring.scrape_targets(rendered, root, selector),
        ),
        "monitoring/grafana-dashboard.yaml": _File(
            [
                "Grafana dashboard: requests, latency and errors per service; the collector's span flow "
                "and queue."
            ],
            [monitoring.grafana_dashboard(bundle, rendered)],
        ),
    }


def _namespaces(
    bundle: Bundle,
    files: dict[str, _File],
    root: str,
    mesh_plan: injection.Plan,
) -> list[Manifest] | None:
    """The Namespaces the other files use or the injection plan labels, except the system ones."""
    used = {
        str(m.data["metadata"].get("namespace"))
        for file in files.values()
        for m in file.docs
        if m.data.get("metadata", {}).get("namespace")
    }
    names = sorted((used | set(mesh_plan.labels)) - SYSTEM_NAMESPACES - {root})
    return [_namespace(bundle, name, mesh_plan) for name in names] if names else None


def _namespace(bundle: Bundle, name: str, mesh_plan: injection.Plan) -> Manifest:
    """A Namespace with the sidecar injection label the plan gives it (else the input's labels)."""
    given = bundle.namespaces.get(name)
    metadata: dict[str, object] = {"name": name}
    labels = mesh_plan.labels.get(name) or (dict(given.labels) if given is not None else {})
    if labels:
        metadata["labels"] = labels
    note = (
        f"From {input_ref(given.meta)}."
        if given is not None
        else "Used by a rendered resource; kubectl apply fails on a namespace that does not exist."
    )
    notes = [note, *mesh_plan.notes.get(name, [])]
    return Manifest({"apiVersion": "v1", "kind": "Namespace", "metadata": metadata}, notes)


# What render itself offers for a collector config warning.
_HINTS = {DEBUG_ONLY: " (or pass --backend jaeger|tempo|external=HOST:PORT)"}


def _collector_problems(
    bundle: Bundle, rendered: collector.Rendered, chosen: backend.Backend | None
) -> list[Problem]:
    """The final collector configs (both tiers when tail sampling splits them, with the backend's
    exporter) checked as the Collector would, with the hosts this output defines."""
    hosts = collector_check.service_hosts(bundle, rendered.namespace, {rendered.service: rendered.namespace})
    if chosen is not None:
        host = collector_check.endpoint_host(chosen.endpoint)
        name, _, rest = host.partition(".")
        namespace = rest.partition(".")[0]
        hosts |= collector_check.service_hosts(bundle, namespace, {name: namespace}) if namespace else {host}
    problems = collector_check.validate_config(rendered.config, hosts)
    if rendered.sampling_config is not None:
        seen = {(p.code, p.path) for p in problems}
        tier = collector_check.validate_config(rendered.sampling_config, hosts)
        problems += [p for p in tier if (p.code, p.path) not in seen]
    return problems


def _provider_checks(bundle: Bundle, rendered: collector.Rendered) -> list[RenderWarning]:
    """Each Istio provider pointing at the rendered collector must use a port it serves, with the
    protocol it speaks there."""
    svc, ns = rendered.service, rendered.namespace
    hosts = {svc} | collector_check.qualified_names(svc, ns)
    by_port = {p.port: p.name for p in rendered.ports}
    warnings: list[RenderWarning] = []
    for provider in bundle.mesh.extension_providers:
        for kind, expected in (("opentelemetry", None), ("zipkin", "http-zipkin")):
            settings = provider.get(kind)
            if not isinstance(settings, dict) or settings.get("service") not in hosts:
                continue
            if kind == "opentelemetry":
                expected = "http-otlp" if "http" in settings else "grpc-otlp"
            port = settings.get("port")
            if not isinstance(port, int) or by_port.get(port) != expected:
                serves = ", ".join(f"{n} {p}" for p, n in by_port.items())
                warnings.append(
                    RenderWarning(
                        "provider-port",
                        f"extension provider {provider.get('name')!r} sends {kind} to "
                        f"{settings.get('service')}:{port}, "
                        f"but the collector Service serves {expected} on another port ({serves})",
                    )
                )
    return warnings


def _readme(
    inputs: str,
    result: Result,
    options: collector.Options,
    rendered: collector.Rendered | None,
    mesh_plan: injection.Plan,
) -> str:
    paths = sorted(result.files)
    lines = [
        "# Production manifests",
        "",
        f"Rendered by `meshtrace render` from {inputs}, for Istio 1.22+ and the OpenTelemetry Collector "
        f"({options.image}), profile `{options.profile}`. Each file says in its comments what was "
        "changed from the input and why.",
        "",
        "## Files",
        "",
        *[f"- `{p}`" for p in paths],
        "",
        "## Apply, in this order",
        "",
        "```sh",
    ]
    if "namespaces.yaml" in result.files:
        lines.append("kubectl apply -f namespaces.yaml                # with the sidecar injection labels")
    lines += [f"{c}   # Istio injects sidecars only there" for c in mesh_plan.commands]
    if "istio/mesh-config.yaml" in result.files:
        lines.append(
            "istioctl install -f istio/mesh-config.yaml     # mesh config first: providers must exist"
        )
    if any(p.startswith("backend/") for p in result.files):
        lines.append(
            "kubectl apply -f backend/                      # the trace store the collector sends to"
        )
    if rendered is not None:
        lines.append(
            "kubectl apply -f otel-collector/               # the collector before anything sends to it"
        )
    if "istio/telemetry.yaml" in result.files:
        lines.append(
            "kubectl apply -f istio/telemetry.yaml          # turns tracing on; applied without restarts"
        )
    lines.append("kubectl apply -f monitoring/                   # needs the Prometheus Operator CRDs")
    # A proxy is added when a pod is created, and defaultConfig is read when it starts.
    lines += [f"kubectl rollout restart deployment -n {ns}" for ns in mesh_plan.restart]
    lines += ["```", ""]
    if mesh_plan.restart:
        lines += [
            "Istio adds a sidecar when a pod is created and a sidecar reads `meshConfig.defaultConfig` "
            "when it starts: the `rollout restart` lines recreate the meshed workloads. Check with "
            "`kubectl get pods -n <namespace>` that each pod shows 2/2 containers.",
            "",
        ]
    if result.profile_changes:
        lines += [
            f"## Profile `{options.profile}`: merged or overridden from the input",
            "",
            *[f"- {c}" for c in result.profile_changes],
            "",
        ]
    if rendered is not None and rendered.not_rendered:
        lines += ["## Not rendered", "", *[f"- {u}" for u in rendered.not_rendered], ""]
    if result.warnings:
        lines += [
            "## Warnings (docs/render.md explains each code)",
            "",
            *[f"- `{w.code}`: {w.message}" for w in result.warnings],
            "",
        ]
    return "\n".join(lines)
