"""`render(bundle, options)`: every production manifest as {relative path: file text}.

Pure and deterministic: the same input gives byte-identical files (no clock, no absolute paths:
input files are named by their base name). The CLI (`cli.py`) only writes the result."""

from __future__ import annotations

from dataclasses import dataclass, field

from meshtrace.config.loader import Bundle
from meshtrace.deploy import collector, istio, monitoring
from meshtrace.deploy.istio import base
from meshtrace.deploy.manifest import Manifest, comment, commented_yaml, file_text

# Created by `istioctl install` / Kubernetes itself: never written to namespaces.yaml.
SYSTEM_NAMESPACES = {"default", "kube-system", "kube-public", "kube-node-lease"}


@dataclass
class Result:
    files: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # inconsistencies a user must look at


def render(bundle: Bundle, options: collector.Options) -> Result:
    """Raises `RenderError` when the input cannot give manifests a cluster would accept."""
    inputs = ", ".join(base(f) for f in bundle.files) or "(no files)"
    result = Result()
    manifests: dict[str, tuple[list[str], list[Manifest], str]] = {}

    mesh = istio.mesh_config(bundle)
    if mesh is not None:
        manifests["istio/mesh-config.yaml"] = (
            ["The mesh-wide config: apply with `istioctl install -f istio/mesh-config.yaml` (Istio 1.22+)."],
            [mesh],
            "",
        )
    kept, left_out = istio.telemetries(bundle)
    if kept or left_out:
        footer = ""
        for reason, tel in left_out:
            footer += comment(["", f"Left out: {tel.meta.ref} ({base(tel.meta.origin.file)}): {reason}."])
            spec = dict(tel.spec)
            istio.rewrite_mixer(spec)
            footer += comment(["As it would read in telemetry.istio.io/v1 (not applied):"])
            footer += commented_yaml({"spec": spec})
        manifests["istio/telemetry.yaml"] = (
            [
                "Every Telemetry that takes effect, as telemetry.istio.io/v1, each checked against "
                "Istio's CRD schema. Apply with `kubectl apply -f istio/telemetry.yaml`."
            ],
            kept,
            footer,
        )

    rendered = collector.render(bundle, options)
    if rendered is not None:
        for name, docs in rendered.files.items():
            manifests[f"otel-collector/{name}"] = (
                [
                    f"OpenTelemetry Collector ({options.image}), highly available. "
                    "`kubectl apply -f otel-collector/`."
                ],
                docs,
                "",
            )
        result.warnings += _provider_checks(bundle, rendered)
        result.warnings += [f"{p.code} collector config {p.path}: {p.message}" for p in rendered.problems]
    root = bundle.mesh.root_namespace
    manifests["monitoring/prometheus-rules.yaml"] = (
        ["Alerts on metrics the current Collector and Istio emit (needs the Prometheus Operator CRDs)."],
        [monitoring.prometheus_rule(bundle, rendered)],
        "",
    )
    manifests["monitoring/service-monitor.yaml"] = (
        ["What Prometheus scrapes: the collector's self-metrics and the sidecars' Istio metrics."],
        monitoring.scrape_targets(rendered, root),
        "",
    )
    manifests["monitoring/grafana-dashboard.yaml"] = (
        ["Grafana dashboard: requests, latency and errors per service; the collector's span flow and queue."],
        [monitoring.grafana_dashboard(bundle)],
        "",
    )
    namespaces = _namespaces(bundle, manifests, root)
    if namespaces is not None:
        manifests = {"namespaces.yaml": (["Namespaces the other files use."], namespaces, ""), **manifests}

    for path, (header, docs, footer) in manifests.items():
        result.files[path] = file_text(
            [f"Rendered by `meshtrace render` from {inputs}.", *header], docs, footer
        )
    result.files["README.md"] = _readme(inputs, result, options, rendered)
    return result


def _namespaces(
    bundle: Bundle, manifests: dict[str, tuple[list[str], list[Manifest], str]], root: str
) -> list[Manifest] | None:
    used = {
        str(m.data["metadata"].get("namespace"))
        for _h, docs, _f in manifests.values()
        for m in docs
        if m.data.get("metadata", {}).get("namespace")
    }
    names = sorted(used - SYSTEM_NAMESPACES - {root})
    if not names:
        return None
    out = []
    for name in names:
        given = bundle.namespaces.get(name)
        metadata: dict[str, object] = {"name": name}
        if given is not None and given.labels:
            metadata["labels"] = dict(given.labels)
        note = (
            f"From {given.meta.ref} ({base(given.meta.origin.file)})."
            if given is not None
            else "Used by a rendered resource; kubectl apply fails on a namespace that does not exist."
        )
        out.append(Manifest({"apiVersion": "v1", "kind": "Namespace", "metadata": metadata}, [note]))
    return out


def _provider_checks(bundle: Bundle, rendered: collector.Rendered) -> list[str]:
    """Each Istio provider pointing at the rendered collector must use a port it serves, with the
    protocol it speaks there."""
    svc, ns = rendered.service, rendered.namespace
    hosts = {svc, f"{svc}.{ns}", f"{svc}.{ns}.svc", f"{svc}.{ns}.svc.cluster.local"}
    by_port = {p.port: p.name for p in rendered.ports}
    warnings = []
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
                    f"extension provider {provider.get('name')!r} sends {kind} to "
                    f"{settings.get('service')}:{port}, "
                    f"but the collector Service serves {expected} on another port ({serves})"
                )
    return warnings


def _readme(
    inputs: str, result: Result, options: collector.Options, rendered: collector.Rendered | None
) -> str:
    paths = sorted(result.files)
    lines = [
        "# Production manifests",
        "",
        f"Rendered by `meshtrace render` from {inputs}, for Istio 1.22+ and the OpenTelemetry Collector "
        f"({options.image}). Each file says in its comments what was changed from the input and why.",
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
        lines.append("kubectl apply -f namespaces.yaml")
    if "istio/mesh-config.yaml" in result.files:
        lines.append(
            "istioctl install -f istio/mesh-config.yaml     # mesh config first: providers must exist"
        )
    if rendered is not None:
        lines.append(
            "kubectl apply -f otel-collector/               # the collector before anything sends to it"
        )
    if "istio/telemetry.yaml" in result.files:
        lines.append(
            "kubectl apply -f istio/telemetry.yaml          # turns tracing on; applied without restarts"
        )
    lines += [
        "kubectl apply -f monitoring/                   # needs the Prometheus Operator CRDs",
        "```",
        "",
    ]
    if "istio/mesh-config.yaml" in result.files:
        lines += [
            "Changes to `meshConfig.defaultConfig` (proxy config) reach a sidecar only when its pod "
            "starts: `kubectl rollout restart deployment -n <namespace>` the meshed workloads after "
            "`istioctl install`.",
            "",
        ]
    if rendered is not None and rendered.unchecked:
        lines += ["## Not checked by meshtrace", "", *[f"- {u}" for u in rendered.unchecked], ""]
    if result.warnings:
        lines += ["## Check these", "", *[f"- {w}" for w in result.warnings], ""]
    return "\n".join(lines)
