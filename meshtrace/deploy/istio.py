"""The Istio half of `render`: one IstioOperator with the merged meshConfig, and the Telemetry
resources that take effect, each written for current Istio (1.22+) with the seed-era problems
fixed (docs/upstream-behaviour.md §1). Pure functions over a loaded `Bundle`."""

from __future__ import annotations

import copy
import re
from typing import Any

from meshtrace.cel import check, mixer_to_cel
from meshtrace.collector.config import merge
from meshtrace.config import lint, schema
from meshtrace.config.loader import Bundle
from meshtrace.config.mesh import camel
from meshtrace.config.model import Telemetry
from meshtrace.deploy.kube import base, input_ref
from meshtrace.deploy.manifest import Manifest

TELEMETRY_API = "telemetry.istio.io/v1"
OPERATOR_API = "install.istio.io/v1alpha1"
_PATH_TOKEN = re.compile(r"\[(\d+)\]|([^.\[]+)")
# Lint rules about what a Telemetry means rather than how it is written: render keeps the meaning
# (it cannot know the intent) and repeats the finding on the resource.
ADVICE_RULES = (
    lint.production_sampling,
    lint.unknown_provider,
    lint.sampling_without_provider,
    lint.root_selector,
    lint.workload_conflicts,
)


class RenderError(Exception):
    """The input cannot be rendered into manifests that a cluster would accept."""


def mesh_config(bundle: Bundle) -> Manifest | None:
    """The IstioOperator for `istioctl install -f`, or None when no input sets any meshConfig."""
    operators = [d for d in bundle.documents if d.kind == "IstioOperator"]
    if not bundle.mesh.layers and not operators:
        return None
    notes: list[str] = []
    spec: dict[str, Any] = {}
    for doc in operators:
        raw = doc.data.get("spec")
        if isinstance(raw, dict):
            spec = merge(spec, {k: v for k, v in raw.items() if k != "meshConfig"})
    if len(bundle.mesh.layers) > 1:
        order = ", ".join(
            f"{la.resource.split(' ', 1)[1]} ({base(la.origin.file)})" for la in bundle.mesh.layers
        )
        notes.append(
            f"One IstioOperator: the meshConfig of {order} merged in that order, as `istioctl install -f a "
            "-f b` would (maps merge, lists and scalars are replaced by the later one)."
        )
    if "profile" not in spec:
        spec = {"profile": "default", **spec}
        notes.append(
            "profile: default (the production profile; the demo profile of the seed's quick start is "
            "meant for trials)."
        )
    config = copy.deepcopy(bundle.mesh.config)
    notes += _proxy_metadata(config)
    renamed = [p.path.rsplit(".", 1)[-1] for p in bundle.problems if p.code == "proxy-config-snake-case"]
    notes += [
        f"defaultConfig: {key} -> {camel(key)} (the ProxyConfig JSON name Istio documents; the input "
        "used the proto field name)."
        for key in renamed
    ]
    notes += _legacy_zipkin(config)
    if bundle.mesh.default_tracing_providers:
        notes.append(
            "defaultProviders.tracing is kept because the input sets it, but it turns tracing on for "
            "every workload in a way Telemetry resources cannot fully undo; Istio maintainers advise "
            "selecting the provider with a root-namespace Telemetry instead (istio#49557)."
        )
    else:
        notes.append(
            "No defaultProviders.tracing: the extension provider is selected by the Telemetry resources "
            "in istio/telemetry.yaml, as Istio maintainers advise (istio#49557)."
        )
    operator = next((op for op in bundle.istio_operators), None)
    name = operator.meta.name if operator else "istio"
    data = {
        "apiVersion": OPERATOR_API,
        "kind": "IstioOperator",
        "metadata": {"name": name, "namespace": bundle.mesh.root_namespace},
        "spec": {**spec, "meshConfig": config},
    }
    return Manifest(data, notes)


def _proxy_metadata(config: dict[str, Any]) -> list[str]:
    """meshConfig.proxyMetadata is not a MeshConfig field (Istio ignores it): move it to
    defaultConfig.proxyMetadata, where the proxies read it."""
    moved = config.pop("proxyMetadata", None)
    if not isinstance(moved, dict):
        return []
    default_config = config.setdefault("defaultConfig", {})
    target = default_config.setdefault("proxyMetadata", {}) if isinstance(default_config, dict) else None
    if not isinstance(target, dict):
        raise RenderError("meshConfig.defaultConfig.proxyMetadata must be a mapping")
    notes = [
        f"proxyMetadata ({', '.join(sorted(moved))}) moved from meshConfig, where Istio ignores it, to "
        "meshConfig.defaultConfig.proxyMetadata, where proxies read it."
    ]
    for key, value in moved.items():
        if key in target and target[key] != value:
            notes.append(
                f"proxyMetadata.{key}: kept defaultConfig's {target[key]!r} (the value that was in "
                f"effect), not {value!r}."
            )
            continue
        target[key] = value
    return notes


def _legacy_zipkin(config: dict[str, Any]) -> list[str]:
    providers = [p for p in config.get("extensionProviders") or [] if isinstance(p, dict)]
    otel = [str(p.get("name")) for p in providers if "opentelemetry" in p]
    default_config = config.get("defaultConfig")
    tracing = default_config.get("tracing") if isinstance(default_config, dict) else None
    if not otel or not isinstance(tracing, dict) or "zipkin" not in tracing:
        return []
    address = (tracing.pop("zipkin") or {}).get("address", "")
    if not tracing:
        assert isinstance(default_config, dict)
        del default_config["tracing"]
    return [
        f"defaultConfig.tracing.zipkin ({address}) removed: it is the pre-Telemetry tracer and, beside "
        f"the opentelemetry provider {otel[0]!r}, makes proxies speak Zipkin/B3 to a second place "
        "wherever no Telemetry selects the provider."
    ]


def telemetries(bundle: Bundle) -> tuple[list[Manifest], list[tuple[str, Telemetry]]]:
    """Every Telemetry that takes effect, as telemetry.istio.io/v1; and the ones left out, each
    with the reason (Istio would ignore or reject them)."""
    root = bundle.mesh.root_namespace
    ordered = sorted(bundle.telemetries, key=lambda t: (t.namespace != root, t.namespace, t.sort_key))
    advice: dict[str, list[str]] = {}
    for rule in ADVICE_RULES:
        for finding in rule(bundle):
            fix = f"; fix: {finding.fix}" if finding.fix else ""
            advice.setdefault(finding.resource, []).append(
                f"Kept as written, but ({finding.code}): {finding.message}{fix}."
            )
    first_wide: dict[str, Telemetry] = {}
    kept: list[Manifest] = []
    left_out: list[tuple[str, Telemetry]] = []
    for tel in ordered:
        if not tel.valid:
            reasons = "; ".join(
                f"{p.path}: {p.message}"
                for p in bundle.problems
                if p.resource == tel.meta.ref and p.code == "schema"
            )
            left_out.append((f"the Telemetry CRD schema rejects it ({reasons or 'invalid'})", tel))
            continue
        if tel.namespace_wide:
            oldest = first_wide.setdefault(tel.namespace, tel)
            if oldest is not tel:
                left_out.append(
                    (
                        f"a second selector-less Telemetry in {tel.namespace}: Istio applies only the oldest "
                        f"({oldest.name}) and silently ignores this one; merge what you need into "
                        f"{oldest.name}",
                        tel,
                    )
                )
                continue
        try:
            manifest = _telemetry(tel)
        except RenderError as e:
            left_out.append((str(e), tel))
            continue
        manifest.notes += sorted(set(advice.get(tel.meta.ref, [])))
        kept.append(manifest)
    return kept, left_out


def _telemetry(tel: Telemetry) -> Manifest:
    notes = [f"From {input_ref(tel.meta)}."]
    if not tel.meta.api_version.endswith("/v1"):
        notes.append(
            f"apiVersion {tel.meta.api_version} -> {TELEMETRY_API} (served since Istio 1.22, same schema)."
        )
    spec = copy.deepcopy(tel.spec)
    notes += rewrite_mixer(spec)
    notes += _prune_unknown(spec)
    errors = schema.validate(spec, _spec_schema(), "spec")
    if errors:
        problems = "; ".join(f"{e.path}: {e.message}" for e in errors)
        raise RenderError(f"it would still fail the CRD schema: {problems}")
    metadata: dict[str, Any] = {"name": tel.name, "namespace": tel.namespace}
    if tel.meta.labels:
        metadata["labels"] = dict(tel.meta.labels)
    if tel.meta.annotations:
        metadata["annotations"] = dict(tel.meta.annotations)
    return Manifest(
        {"apiVersion": TELEMETRY_API, "kind": "Telemetry", "metadata": metadata, "spec": spec}, notes
    )


def _spec_schema() -> dict[str, Any]:
    version = schema.version_schema("telemetry.json", TELEMETRY_API.rsplit("/", 1)[1])
    assert version is not None, "the packaged Telemetry CRD schema serves v1"
    spec: dict[str, Any] = version["properties"]["spec"]
    return spec


def rewrite_mixer(spec: dict[str, Any]) -> list[str]:
    """Retired Mixer `a | b` tag override values rewritten in place to the CEL Istio evaluates;
    a note for each value outside the CEL subset (`meshtrace.cel`), whose label Envoy would drop."""
    notes = []
    for mi, metrics in enumerate(spec.get("metrics") or []):
        for oi, override in enumerate(
            (metrics or {}).get("overrides") or [] if isinstance(metrics, dict) else []
        ):
            tags = override.get("tagOverrides") if isinstance(override, dict) else None
            for tag, value in (tags or {}).items() if isinstance(tags, dict) else []:
                expr = value.get("value") if isinstance(value, dict) else None
                if not isinstance(expr, str):
                    continue
                where = f"metrics[{mi}].overrides[{oi}].tagOverrides.{tag}"
                cel = mixer_to_cel(expr)
                if cel is not None:
                    value["value"] = cel
                    notes.append(
                        f"{where}: {expr!r} is the retired Mixer syntax, which does not parse as CEL; "
                        f"rewritten to {cel!r}."
                    )
                problem = check(value["value"]) if value.get("operation") != "REMOVE" else None
                if problem is not None:
                    notes.append(
                        f"{where}: {value['value']!r}: {problem}; Envoy's stats filter drops this label."
                    )
    return notes


def _prune_unknown(spec: dict[str, Any]) -> list[str]:
    """Fields the CRD does not know: the API server would prune them (or reject the resource under
    kubectl's strict validation), so they are dropped here, each with a note."""
    notes = []
    for error in schema.validate(spec, _spec_schema(), "spec"):
        if error.unknown_field and _delete(spec, error.path.removeprefix("spec.")):
            notes.append(f"{error.path} removed: {error.message}.")
    return notes


def _delete(root: dict[str, Any], path: str) -> bool:
    """Delete the key at `path`; False when the path does not lead there (a map key with a dot:
    the schema check that follows then reports it)."""
    tokens = [(int(i) if i else key) for i, key in _PATH_TOKEN.findall(path)]
    node: Any = root
    try:
        for token in tokens[:-1]:
            node = node[token]
        del node[tokens[-1]]
    except (KeyError, IndexError, TypeError):
        return False
    return True
