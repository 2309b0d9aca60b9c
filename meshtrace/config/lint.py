"""`meshtrace lint`: istioctl-analyze-like checks of Istio and Kubernetes config plus the
Collector's own config checks (`meshtrace.collector.config.check`) on collector ConfigMaps.

Each rule is a function of the loaded `Bundle` yielding `Finding`s; `RULES` lists them with the
codes they emit (docs/lint.md describes every code). Load problems (YAML, CRD schema, duplicate
resources, seed-era spellings) are findings too.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.text import Text

from meshtrace.cel import check, mixer_to_cel, unknown_attributes
from meshtrace.config.loader import (
    NAMESPACE_DISABLED,
    POD_OPT_OUT,
    Bundle,
    Injection,
    collector_configs,
    line_of,
)
from meshtrace.config.mesh import TRACING_TYPES
from meshtrace.config.model import Deployment, Document, Finding, Meta, Severity, Telemetry, list_at, map_at
from meshtrace.config.resolve import MODES, effective_config

_ORDER = {"error": 0, "warning": 1, "info": 2}
# Collector self-metrics a current Collector no longer emits -> what to use instead, and why
# (upstream CHANGELOG and memory_limiter's metadata.yaml). The processorhelper stopped emitting the
# processor_* counters in v0.111, except memory_limiter, which kept accepted/refused under those
# names until v0.154 and renamed them in v0.155 (#11203).
REMOVED_METRICS = {
    "otelcol_processor_dropped_spans": "otelcol_processor_incoming_items - otelcol_processor_outgoing_items "
    '(label otel_signal="traces")',
    "otelcol_processor_accepted_spans": "otelcol_processor_memory_limiter_accepted_spans",
    "otelcol_processor_refused_spans": "otelcol_processor_memory_limiter_refused_spans",
}
REMOVED_WHY = {
    "otelcol_processor_dropped_spans": "removed in v0.111: no processor emits it",
    "otelcol_processor_accepted_spans": "emitted only by memory_limiter until v0.154; renamed in v0.155",
    "otelcol_processor_refused_spans": "emitted only by memory_limiter until v0.154; renamed in v0.155",
}
PRODUCTION_WORDS = {"production", "prod"}
PRODUCTION_MAX_SAMPLING = 10.0
OTLP_GRPC_PORT = 4317
# Istio picks HTTP/2 (needed by gRPC) from these port-name prefixes or appProtocol values.
_H2_PREFIXES = ("grpc", "http2", "h2c")
_H2_APP_PROTOCOLS = {"grpc", "grpc-web", "http2", "h2c", "kubernetes.io/h2c"}
_PROBE = "lint-probe"


def _finding(
    code: str,
    severity: Severity,
    message: str,
    fix: str,
    meta: Meta | None = None,
    path: str = "",
    doc: Document | None = None,
) -> Finding:
    origin = meta.origin if meta is not None else doc.origin if doc is not None else None
    return Finding(
        code=code,
        severity=severity,
        message=message,
        fix=fix,
        resource=meta.ref if meta is not None else doc.ref if doc is not None else "",
        file=origin.file if origin else "",
        path=path,
        document=origin.document if origin else None,
        line=origin.line if origin else None,
    )


# -- Telemetry rules -----------------------------------------------------------------------------


def deprecated_version(bundle: Bundle) -> Iterator[Finding]:
    for doc in bundle.documents:
        if doc.kind == "Telemetry" and doc.data.get("apiVersion") == "telemetry.istio.io/v1alpha1":
            yield _finding(
                "telemetry-deprecated-version",
                "warning",
                "telemetry.istio.io/v1alpha1 is deprecated; v1 (Istio 1.22+) has the same schema",
                "apiVersion: telemetry.istio.io/v1",
                doc=doc,
                path="apiVersion",
            )


def namespace_wide_conflicts(bundle: Bundle) -> Iterator[Finding]:
    by_ns: dict[str, list[Telemetry]] = {}
    for tel in sorted(bundle.telemetries, key=lambda t: t.sort_key):
        if tel.valid and tel.namespace_wide:
            by_ns.setdefault(tel.namespace, []).append(tel)
    for ns, items in by_ns.items():
        for later in items[1:]:
            yield _finding(
                "multiple-namespace-telemetry",
                "error",
                f"{len(items)} selector-less Telemetry resources in {ns}: Istio applies only the oldest "
                f"(creationTimestamp, then name: {items[0].meta.ref}); this one is silently ignored",
                f"merge it into {items[0].name} (one selector-less Telemetry per namespace)",
                meta=later.meta,
                path="metadata.name",
            )


def workload_conflicts(bundle: Bundle) -> Iterator[Finding]:
    for dep in bundle.deployments:
        matching = [
            t
            for t in sorted(bundle.telemetries, key=lambda t: t.sort_key)
            if t.valid
            and t.namespace == dep.namespace
            and t.match_labels
            and all(dep.pod_labels.get(k) == v for k, v in t.match_labels.items())
        ]
        for later in matching[1:]:
            yield _finding(
                "multiple-workload-telemetry",
                "warning",
                f"selects Deployment {dep.namespace}/{dep.name} as {matching[0].meta.ref} does: Istio "
                "1.21+ applies every matching workload Telemetry, oldest first, so the fields this one "
                "sets override the older one's for it (before 1.21 only the oldest applied)",
                "give each workload one Telemetry (narrow the selectors or merge the resources)",
                meta=later.meta,
                path="spec.selector",
            )


def root_selector(bundle: Bundle) -> Iterator[Finding]:
    root = bundle.mesh.root_namespace
    for tel in bundle.telemetries:
        if tel.namespace == root and tel.match_labels:
            yield _finding(
                "root-namespace-selector",
                "warning",
                f"a Telemetry with a selector in the root namespace ({root}) only applies to workloads in "
                f"{root}, not to matching workloads in other namespaces",
                "move it to the namespace of the workloads it should select",
                meta=tel.meta,
                path="spec.selector",
            )


def unknown_provider(bundle: Bundle) -> Iterator[Finding]:
    mesh = bundle.mesh
    known = sorted({str(p.get("name")) for p in mesh.extension_providers})
    for tel in bundle.telemetries:
        for section in ("tracing", "metrics", "accessLogging"):
            for i, entry in tel.entries(section):
                for pi, ref in enumerate(list_at(entry, "providers")):
                    name = str(ref.get("name", "")) if isinstance(ref, dict) else ""
                    path = f"spec.{section}[{i}].providers[{pi}].name"
                    provider, _ = mesh.find_provider(name)
                    if provider is None:
                        yield _finding(
                            "unknown-provider",
                            "error",
                            f"provider {name!r} is not in meshConfig.extensionProviders (known: "
                            f"{', '.join(known)}): Istio configures nothing for it"
                            + ("; tracing is off" if section == "tracing" else ""),
                            "add it to meshConfig.extensionProviders or fix the name",
                            meta=tel.meta,
                            path=path,
                        )
                    elif section == "tracing" and pi == 0:
                        kind = next((k for k in provider if k != "name"), "")
                        if kind not in TRACING_TYPES:
                            yield _finding(
                                "provider-not-tracing",
                                "error",
                                f"provider {name!r} is a {kind} provider, which cannot trace: tracing is off",
                                "name an opentelemetry or zipkin provider",
                                meta=tel.meta,
                                path=path,
                            )
    for section in ("tracing", "metrics", "accessLogging"):
        names = mesh.get(f"defaultProviders.{section}")
        for name in names if isinstance(names, list) else []:
            if mesh.find_provider(str(name))[0] is None:
                src = mesh.source(f"defaultProviders.{section}")
                yield Finding(
                    "unknown-provider",
                    "error",
                    f"default provider {name!r} is not in meshConfig.extensionProviders",
                    src.resource,
                    src.file or "",
                    src.field or "",
                    "add it to meshConfig.extensionProviders or fix the name",
                )


def sampling_without_provider(bundle: Bundle) -> Iterator[Finding]:
    """A tracing entry sets a sampling rate but no provider resolves where it applies: a common
    trap (sampling configured, no spans). Checked by resolving a workload the resource selects."""
    for tel in bundle.telemetries:
        entries = [(i, e) for i, e in tel.entries("tracing") if e.get("randomSamplingPercentage") is not None]
        if not tel.valid or not entries or tel.target_refs:
            continue
        labels = tel.match_labels or {"app": _PROBE}
        doc = effective_config(bundle, _PROBE, tel.namespace, labels=labels)
        if tel.meta.ref not in {a["resource"] for a in doc["telemetry"]["applied"]}:
            continue  # ignored altogether: multiple-namespace-telemetry says so
        for i, entry in entries:
            mode = str(map_at(entry, "match").get("mode") or "CLIENT_AND_SERVER")
            off = [d for d in MODES.get(mode, ()) if doc["tracing"][d]["provider"] is None]
            if off:
                yield _finding(
                    "sampling-without-provider",
                    "error",
                    f"randomSamplingPercentage is set but no tracing provider resolves for "
                    f"{'/'.join(off)} traffic (none here, none inherited, no defaultProviders.tracing): "
                    "no spans are produced",
                    "name a provider (providers: [{name: <extensionProviders name>}]) here or mesh-wide",
                    meta=tel.meta,
                    path=f"spec.tracing[{i}].randomSamplingPercentage",
                )


def _callers(bundle: Bundle) -> Iterator[tuple[Deployment, Deployment, str, str]]:
    """(caller, callee, env var, value): a Deployment whose container env names a Service
    (`http://backend:8080`, `backend.shop:9000`, `backend.shop.svc.cluster.local`) calls the
    Deployments that Service selects. Bare names only reach the caller's own namespace."""
    for svc in bundle.services:
        if not svc.selector:
            continue
        pattern = re.compile(
            rf"(?<![\w.-]){re.escape(svc.name)}(\.{re.escape(svc.namespace)}(\.svc(\.cluster\.local)?)?)?(?=[:/]|$)"
        )
        callees = bundle.selected_by(svc)
        for caller in bundle.deployments:
            for container in caller.containers:
                for var, value in container.env.items():
                    match = pattern.search(value or "")
                    if match is None or (caller.namespace != svc.namespace and not match.group(1)):
                        continue
                    for callee in callees:
                        if callee is not caller:
                            yield caller, callee, var, str(value)


def sampling_not_first_hop(bundle: Bundle) -> Iterator[Finding]:
    """docs/upstream-behaviour.md §2: the first proxy on the path decides; later hops follow the incoming
    trace context. A namespace/workload sampling rate on a service that meshed callers reach
    does not apply to their requests."""
    seen: set[tuple[str, str]] = set()
    for caller, callee, var, value in _callers(bundle):
        callee_doc = effective_config(bundle, callee.name, callee.namespace)
        src = callee_doc["sources"]["tracing.server.random_sampling_percentage"]
        tel = next((t for t in bundle.telemetries if t.meta.ref == src["resource"]), None)
        if tel is None or tel.namespace != callee.namespace or tel.namespace == bundle.mesh.root_namespace:
            continue  # the mesh-wide rate: the same everywhere unless overridden
        caller_doc = effective_config(bundle, caller.name, caller.namespace)
        first = caller_doc["tracing"]["client"]
        here = callee_doc["tracing"]["server"]["random_sampling_percentage"]
        if not first["enabled"] or first["random_sampling_percentage"] == here:
            continue
        key = (tel.meta.ref, f"{caller.namespace}/{caller.name}")
        if key in seen:
            continue
        seen.add(key)
        yield _finding(
            "sampling-not-first-hop",
            "info",
            f"{callee.namespace}/{callee.name} samples {here:g}% here, but {caller.namespace}/{caller.name} "
            f"calls it ({var}={value}) and its sidecar decides first, at "
            f"{first['random_sampling_percentage']:g}%: "
            f"requests arriving with trace context keep that decision, so {here:g}% only applies to "
            f"requests that start a trace at {callee.name}",
            "set the rate where traces start (the calling workload or the ingress gateway)",
            meta=tel.meta,
            path=str(src["field"]),
        )


# OTEL_PROPAGATORS names -> the trace context format they read and write.
_APP_PROPAGATORS = {"tracecontext": "w3c", "b3": "b3", "b3multi": "b3"}
_PROVIDER_READS = {"w3c": {"w3c"}, "b3": {"b3"}, "b3+w3c": {"w3c", "b3"}}


def propagation_mismatch(bundle: Bundle) -> Iterator[Finding]:
    """An app whose OpenTelemetry SDK propagates a format its sidecar's provider does not read:
    Istio's opentelemetry provider reads only W3C traceparent, zipkin (USE_B3) only B3, so the
    proxy's spans and the app's spans land in different traces (docs/upstream-behaviour.md §2)."""
    for dep in bundle.deployments:
        for ci, container in enumerate(dep.containers):
            env = container.env
            if "OTEL_PROPAGATORS" in env:
                declared = str(env["OTEL_PROPAGATORS"] or "")
            elif any(k.startswith("OTEL_") for k in env):
                declared = "tracecontext,baggage"  # the SDK's default
            else:
                continue
            app = {_APP_PROPAGATORS[p.strip()] for p in declared.split(",") if p.strip() in _APP_PROPAGATORS}
            doc = effective_config(bundle, dep.name, dep.namespace)
            provider = next(
                (b["provider"] for b in doc["tracing"].values() if b["enabled"] and b["provider"]), None
            )
            if provider is None or app & _PROVIDER_READS[provider["trace_context"]]:
                continue
            fix = (
                "OTEL_PROPAGATORS=tracecontext,baggage"
                if provider["trace_context"] == "w3c"
                else "OTEL_PROPAGATORS=b3multi (or traceContextOption: USE_B3_WITH_W3C_PROPAGATION)"
            )
            yield _finding(
                "propagation-mismatch",
                "warning",
                f"container {container.name} propagates {declared or 'nothing'} (OTEL_PROPAGATORS) but the "
                f"sidecar's provider {provider['name']!r} ({provider['type']}) reads only "
                f"{'+'.join(sorted(_PROVIDER_READS[provider['trace_context']]))}: in Istio the proxy's spans "
                "and the app's spans end up in separate traces",
                fix,
                meta=dep.meta,
                path=f"spec.template.spec.containers[{ci}].env",
            )


def production_sampling(bundle: Bundle) -> Iterator[Finding]:
    root = bundle.mesh.root_namespace
    for tel in bundle.telemetries:
        if tel.namespace != root or not tel.namespace_wide:
            continue
        label_words = {str(v).lower() for v in tel.meta.labels.values()}
        for i, entry in tel.entries("tracing"):
            rate = entry.get("randomSamplingPercentage")
            if not isinstance(rate, (int, float)) or rate <= PRODUCTION_MAX_SAMPLING:
                continue
            raw_tags = entry.get("customTags")
            tags: dict[str, Any] = raw_tags if isinstance(raw_tags, dict) else {}
            # literal values and the defaults of environment/header tags
            tag_words = {
                str(map_at(t, kind).get(field, "")).lower()
                for t in tags.values()
                for kind, field in (
                    ("literal", "value"),
                    ("environment", "defaultValue"),
                    ("header", "defaultValue"),
                )
            }
            if (tag_words | label_words) & PRODUCTION_WORDS:
                yield _finding(
                    "production-full-sampling",
                    "warning",
                    f"mesh-wide sampling {rate:g}% on what its tags/labels call production: every proxy "
                    f"reports {rate:g}% of requests (collector and storage cost); production meshes sample "
                    "1-10%",
                    f"randomSamplingPercentage: {PRODUCTION_MAX_SAMPLING:g} or lower "
                    "(raise it per namespace or workload)",
                    meta=tel.meta,
                    path=f"spec.tracing[{i}].randomSamplingPercentage",
                )


def tag_override_expressions(bundle: Bundle) -> Iterator[Finding]:
    """Each UPSERT value must be in the CEL subset the sidecar evaluates (meshtrace.cel): what
    lint passes, the sidecar runs; Envoy's stats filter drops a label whose value does not parse."""
    for tel in bundle.telemetries:
        for mi, metrics in enumerate(list_at(tel.spec, "metrics")):
            for oi, override in enumerate(list_at(metrics, "overrides")):
                for tag, spec in map_at(override, "tagOverrides").items():
                    value = spec.get("value") if isinstance(spec, dict) else None
                    if not isinstance(value, str) or spec.get("operation") == "REMOVE":
                        continue
                    path = f"spec.metrics[{mi}].overrides[{oi}].tagOverrides.{tag}.value"
                    yield from _tag_value(tel, path, str(tag), value)


def _tag_value(tel: Telemetry, path: str, tag: str, value: str) -> Iterator[Finding]:
    cel = mixer_to_cel(value)
    if cel is not None:
        yield _finding(
            "mixer-tag-override",
            "warning",
            f"{value!r} is the retired Mixer attribute syntax (`a | b`); Istio evaluates tag overrides as "
            f"CEL, where this does not parse and the `{tag}` label is dropped (meshtrace rewrites it)",
            f"value: {cel!r}",
            meta=tel.meta,
            path=path,
        )
        value = cel
    problem = check(value)
    if problem is not None:
        invalid = problem.kind == "syntax"
        yield _finding(
            "tag-override-invalid" if invalid else "tag-override-unsupported",
            "error",
            f"{value!r}: {problem}; "
            + (
                f"Envoy's stats filter cannot parse it and drops the `{tag}` label"
                if invalid
                else f"valid CEL outside the subset meshtrace's sidecar runs: the `{tag}` label is dropped"
            ),
            "write it with the subset in docs/sidecar.md (||, &&, !, comparisons, in, ?:, has(), size, "
            "string, int, double, startsWith, endsWith, contains, matches, [index])",
            meta=tel.meta,
            path=path,
        )
        return
    unknown = unknown_attributes(value)
    if unknown:
        names = ", ".join(unknown)
        yield _finding(
            "tag-override-attribute",
            "warning",
            f"{value!r} reads {names}, which Istio's attribute vocabulary does not have: it never has a "
            f"value, so the expression fails and `{tag}` is `unknown`",
            "read request.*, response.*, source.*, destination.*, connection.*, upstream.*, xds.*, node, "
            "filter_state, upstream_peer or downstream_peer",
            meta=tel.meta,
            path=path,
        )


# -- MeshConfig rules ----------------------------------------------------------------------------


def _mesh_finding(
    bundle: Bundle, code: str, severity: Severity, path: str, message: str, fix: str
) -> Finding:
    src = bundle.mesh.source(path)
    layer = next((la for la in bundle.mesh.layers if la.resource == src.resource), None)
    origin = layer.origin if layer else None
    return Finding(
        code=code,
        severity=severity,
        message=message,
        resource=src.resource,
        file=src.file or "",
        path=src.field or "",
        fix=fix,
        document=origin.document if origin else None,
        line=origin.line if origin else None,
    )


def default_providers_tracing(bundle: Bundle) -> Iterator[Finding]:
    if bundle.mesh.default_tracing_providers:
        yield _mesh_finding(
            bundle,
            "default-providers-tracing",
            "warning",
            "defaultProviders.tracing",
            "meshConfig.defaultProviders.tracing turns tracing on for every workload and cannot be "
            "overridden per namespace the way a Telemetry can; Istio maintainers advise against it "
            "(istio#49557)",
            "keep the provider in extensionProviders and select it with a root-namespace Telemetry",
        )


def legacy_zipkin(bundle: Bundle) -> Iterator[Finding]:
    mesh = bundle.mesh
    # The key itself must be set: source() answers for its nearest set ancestor (`tracing`).
    tracing = map_at(map_at(mesh.config, "defaultConfig"), "tracing")
    zipkin_set = "zipkin" in tracing
    zipkin_src = mesh.source("defaultConfig.tracing.zipkin")
    otel = [p for p in mesh.extension_providers if "opentelemetry" in p]
    if zipkin_set and zipkin_src.resource != "Istio default" and otel:
        yield _mesh_finding(
            bundle,
            "legacy-zipkin-tracing",
            "warning",
            "defaultConfig.tracing.zipkin",
            f"defaultConfig.tracing.zipkin is the pre-Telemetry tracer; beside the opentelemetry provider "
            f"{otel[0].get('name')!r} it is unused when a Telemetry selects that provider and otherwise "
            "sends B3/Zipkin spans to a different place",
            "delete defaultConfig.tracing.zipkin; select the provider with a Telemetry",
        )


def proxy_metadata(bundle: Bundle) -> Iterator[Finding]:
    for layer in bundle.mesh.layers:
        if "proxyMetadata" in layer.config:
            yield Finding(
                code="mesh-proxy-metadata",
                severity="warning",
                message="meshConfig.proxyMetadata is not a MeshConfig field: Istio ignores it, so these "
                "proxy environment variables are never set",
                resource=layer.resource,
                file=layer.origin.file,
                path=f"{layer.prefix}.proxyMetadata",
                fix="move it to meshConfig.defaultConfig.proxyMetadata",
                document=layer.origin.document,
                line=layer.origin.line,
            )


def operator_overlays(bundle: Bundle) -> Iterator[Finding]:
    operators = [la for la in bundle.mesh.layers if la.resource.startswith("IstioOperator ")]
    if len(operators) < 2:
        return
    order = ", ".join(la.resource.split(" ", 1)[1] for la in operators)
    for layer in operators[1:]:
        replaced = ", ".join(layer.replaced) or "none"
        yield Finding(
            code="istio-operator-overlay",
            severity="info",
            message=f"{len(operators)} IstioOperators overlay in load order ({order}), like `istioctl "
            f"install -f a -f b`: maps merge, lists and scalars are replaced; keys this one replaces: "
            f"{replaced}",
            resource=layer.resource,
            file=layer.origin.file,
            path=layer.prefix,
            fix="keep one IstioOperator, or check the merged result with `meshtrace explain`",
            document=layer.origin.document,
            line=layer.origin.line,
        )


# -- Kubernetes and Collector rules --------------------------------------------------------------


def no_sidecar(bundle: Bundle) -> Iterator[Finding]:
    """A workload without a sidecar produces no proxy spans or metrics: Telemetry does nothing."""
    for dep in bundle.deployments:
        injected, why = bundle.sidecar_injected(dep.namespace, dep.pod_labels, dep.annotations)
        if injected is False:
            yield _finding(
                "no-sidecar-injection",
                "info" if why.code == POD_OPT_OUT else "warning",
                f"no sidecar is injected ({why}): this workload produces no proxy spans or metrics and "
                "Telemetry settings do not apply to it",
                _injection_fix(dep, why),
                meta=dep.meta,
                path="spec.template.metadata",
            )


def _injection_fix(dep: Deployment, why: Injection) -> str:
    """What would give the workload a sidecar, given why it has none."""
    label_namespace = (
        f"label the namespace istio-injection=enabled (kubectl label namespace {dep.namespace} "
        "istio-injection=enabled --overwrite)"
    )
    if why.code == POD_OPT_OUT:
        return "if the opt-out is not on purpose, remove sidecar.istio.io/inject=false from the pod"
    if why.code == NAMESPACE_DISABLED:  # any value but "enabled" turns every injection webhook off
        return label_namespace + "; while it is set, no pod label can opt in"
    annotated = dep.annotations.get("sidecar.istio.io/inject") == "true"
    return label_namespace + (
        ", or make the pod's sidecar.istio.io/inject=true a label: Istio's webhook selects pods by "
        "labels, so the annotation alone injects nothing here"
        if annotated
        else ", or label the pod sidecar.istio.io/inject=true"
    )


def provider_service(bundle: Bundle) -> Iterator[Finding]:
    """istiod finds a provider's cluster by the service's full host name (`[ns/]name.ns.svc.cluster.
    local`); a short name or a missing port means no cluster, and then no tracing at all."""
    mesh = bundle.mesh
    for index, provider in enumerate(list_at(mesh.config, "extensionProviders")):
        kind = next((k for k in ("opentelemetry", "zipkin") if map_at(provider, k)), None)
        if kind is None:
            continue
        body = map_at(provider, kind)
        port = body.get("port")
        name = provider.get("name")
        target, short = bundle.services_for_host(str(body.get("service", "")))
        if short is not None:
            yield _mesh_finding(
                bundle,
                "provider-service-host",
                "error",
                f"extensionProviders[{index}].{kind}.service",
                f"provider {name!r} names service {body.get('service')!r}: istiod looks providers up by full "
                "host name, finds no cluster and configures no tracing",
                f"service: {short.host}",
            )
        elif target is not None and port not in [p.port for p in target.ports]:
            yield _mesh_finding(
                bundle,
                "provider-service-host",
                "error",
                f"extensionProviders[{index}].{kind}.port",
                f"provider {name!r} sends to port {port} but {target.meta.ref} has ports "
                f"{', '.join(str(p.port) for p in target.ports) or 'none'}: the proxy has no cluster for "
                "that port and drops the spans",
                "use a port the Service defines",
            )


def collector_port(bundle: Bundle) -> Iterator[Finding]:
    for svc in bundle.services:
        for i, port in enumerate(svc.ports):
            if OTLP_GRPC_PORT not in (port.port, port.target_port):
                continue
            named = port.name == "grpc" or port.name.startswith(tuple(p + "-" for p in _H2_PREFIXES))
            named = named or port.name in _H2_PREFIXES
            if named or (port.app_protocol or "").lower() in _H2_APP_PROTOCOLS:
                continue
            yield _finding(
                "collector-port-protocol",
                "error",
                f"port {port.port} (OTLP gRPC) is named {port.name or '(unnamed)'!r} with no appProtocol: "
                "Istio does not know it is gRPC and proxies it as HTTP/1.1, so OTLP/gRPC exports fail",
                "name the port grpc-otlp (or set appProtocol: grpc)",
                meta=svc.meta,
                path=f"spec.ports[{i}]",
            )


def _collector_configs(bundle: Bundle) -> Iterator[tuple[Document, str, dict[str, Any]]]:
    """Every collector config as written (each ConfigMap document, before duplicates merge), with
    its key path prefix (`data['config.yaml']`)."""
    for doc in bundle.documents:
        if doc.kind == "ConfigMap":
            for key, config in collector_configs(doc.data.get("data"))[0]:
                yield doc, f"data['{key}']", config


def memory_limiter_first(bundle: Bundle) -> Iterator[Finding]:
    for doc, where, config in _collector_configs(bundle):
        pipelines = map_at(map_at(config, "service"), "pipelines")
        for name, pipeline in pipelines.items():
            procs = [str(p) for p in list_at(pipeline, "processors")]
            types = [p.split("/", 1)[0] for p in procs]
            if "memory_limiter" in types and types[0] != "memory_limiter":
                yield _finding(
                    "collector-memory-limiter-order",
                    "warning",
                    f"memory_limiter is processor #{types.index('memory_limiter') + 1} of pipeline {name}: "
                    "data is already buffered by the processors before it when it refuses",
                    "put memory_limiter first in every pipeline's processors",
                    doc=doc,
                    path=f"{where}.service.pipelines.{name}.processors",
                )


# The collector check's stable codes (docs/collector.md) -> lint's rule names.
LINT_CODES = {
    "COL001": "collector-unknown-component",
    "COL002": "collector-removed-component",
    "COL003": "collector-unknown-field",
    "COL004": "collector-removed-field",
    "COL005": "collector-invalid-value",
    "COL007": "collector-deprecated-name",
    "COL009": "collector-undefined-reference",
    "COL010": "collector-tls-by-default",
}


def collector_checks(bundle: Bundle) -> Iterator[Finding]:
    """The Collector framework's own checks on every collector ConfigMap."""
    try:
        from meshtrace.collector.config import check
        from meshtrace.collector.schema import REMOVED_FIELD
    except ImportError:  # the collector component is optional for lint
        return
    for doc, where, config in _collector_configs(bundle):
        # What the real Collector says (the upstream catalogue), as the config is meant for it.
        for problem in check(config, upstream=True):
            path = f"{where}.{problem.path}" if problem.path else where
            severity: Severity = "warning" if problem.severity == "warning" else "error"
            code, fix = LINT_CODES.get(problem.code, "collector-config"), ""
            if problem.code == REMOVED_FIELD and problem.path.endswith(".loglevel"):
                code = "collector-loglevel"
                fix = "verbosity: normal (the logging exporter's info), detailed (debug) or basic"
            elif code == "collector-removed-component" and problem.path.startswith("exporters.logging"):
                code = "collector-logging-exporter"
                fix = "use the debug exporter (rename logging -> debug in exporters and pipelines)"
            message = f"{problem.message} [{problem.code}]" if problem.code else problem.message
            yield _finding(code, severity, message, fix, doc=doc, path=path)


def removed_metrics(bundle: Bundle) -> Iterator[Finding]:
    # Dashboards in the wild also use the `_total` spelling (docs/upstream-behaviour.md §4): both are gone.
    pattern = re.compile(r"\b(" + "|".join(REMOVED_METRICS) + r")(?:_total)?\b")
    for rule in bundle.prometheus_rules:
        for alert in rule.alerts:
            for metric in sorted(set(pattern.findall(alert.expr))):
                yield _finding(
                    "alert-removed-metric",
                    "error",
                    f"alert {alert.name or alert.group!r} uses {metric}, which the Collector no longer emits "
                    f"({REMOVED_WHY[metric]}): the alert can never fire",
                    f"rewrite with {REMOVED_METRICS[metric]}",
                    meta=rule.meta,
                    path=alert.path,
                )


RULES: list[Callable[[Bundle], Iterator[Finding]]] = [
    deprecated_version,
    namespace_wide_conflicts,
    workload_conflicts,
    root_selector,
    unknown_provider,
    sampling_without_provider,
    sampling_not_first_hop,
    propagation_mismatch,
    production_sampling,
    tag_override_expressions,
    default_providers_tracing,
    legacy_zipkin,
    proxy_metadata,
    operator_overlays,
    no_sidecar,
    provider_service,
    collector_port,
    memory_limiter_first,
    collector_checks,
    removed_metrics,
]


def lint(bundle: Bundle) -> list[Finding]:
    """Every finding: load problems first, then each rule; sorted by severity, file, document."""
    from meshtrace.config.lint_security import SECURITY_RULES  # it uses this module's helpers

    findings = list(bundle.problems)
    for rule in (*RULES, *SECURITY_RULES):
        findings.extend(rule(bundle))
    seen: set[tuple[str, int | None, str, str]] = set()
    unique = []
    for f in findings:
        key = (f.file, f.document, f.path, f.message)
        if key not in seen:
            seen.add(key)
            unique.append(f)
    docs = {(d.origin.file, d.origin.document): d for d in bundle.documents}
    for f in unique:
        doc = docs.get((f.file, f.document)) if f.document is not None else None
        if doc is not None and f.path:
            f.line = line_of(doc, f.path)
    return sorted(unique, key=lambda f: (_ORDER[f.severity], f.file, f.document or 0, f.code, f.path))


def render_text(findings: list[Finding], console: Console | None = None) -> None:
    """One block per finding: severity, code, resource, where; the message; the fix."""
    console = console or Console(file=sys.stdout, width=None if sys.stdout.isatty() else 160, soft_wrap=True)
    colors = {"error": "red", "warning": "yellow", "info": "cyan"}
    for f in findings:
        where = f.file + (f":{f.line}" if f.line else "") + (f" {f.path}" if f.path else "")
        console.print(
            f"[{colors[f.severity]}]{f.severity.upper():7}[/] [bold]{f.code}[/bold] "
            f"{escape(f.resource)} ({escape(where)})",
            highlight=False,
        )
        console.print(Text(f"        {f.message}"), highlight=False)
        if f.fix:
            console.print(Text(f"        fix: {f.fix}"), highlight=False)
    counts = {s: sum(1 for f in findings if f.severity == s) for s in _ORDER}
    summary = ", ".join(f"{n} {s}{'s' if n != 1 else ''}" for s, n in counts.items())
    console.print(summary if findings else "no problems found")
