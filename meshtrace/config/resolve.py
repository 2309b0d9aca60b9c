"""Effective tracing and metrics config of one workload, resolved as istiod does.

Follows istio/istio pilot/pkg/model/telemetry.go (`applicableTelemetries`, `Tracing`,
`mergeMetrics`) and pilot/pkg/networking/core/tracing.go (`configureTracingFromTelemetry`):

1. Telemetry resources in scope, in this order: the root namespace's oldest selector-less one,
   the workload namespace's oldest selector-less one, then every resource in the workload's
   namespace whose `selector.matchLabels` is a subset of the workload's labels, oldest first
   (istiod since 1.21). "Oldest" = creationTimestamp, then name.
2. Tracing: start from `meshConfig.defaultProviders.tracing[0]`; every `tracing[]` entry in
   order overrides, per direction (match.mode), each field it sets; `customTags` replace whole.
   A provider name that does not resolve leaves no provider: tracing off for that direction.
3. No Telemetry tracing and no default provider: the legacy path, `meshConfig.enableTracing`
   with `defaultConfig.tracing` (zipkin address, sampling, custom tags).
4. Sampling: provider sampler > Telemetry > pod annotation `proxy.istio.io/config` >
   `meshConfig.defaultConfig.tracing.sampling` > PILOT_TRACE_SAMPLING (1.0). A proxy-config 0.0
   counts as unset; out of range resets to 1.0.

The result is the document of docs/config-document.md without `services`.
"""

from __future__ import annotations

import copy
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from meshtrace.cel import check, mixer_to_cel
from meshtrace.config.loader import Bundle
from meshtrace.config.mesh import TRACING_TYPES, MeshConfig, normalize_proxy_config, parse_duration
from meshtrace.config.model import Origin, Source, Telemetry, list_at, map_at
from meshtrace.config.security import security_document

SCHEMA_VERSION = 1
# Istio's standard metrics: what ALL_METRICS expands to (MetricSelector.IstioMetric).
STANDARD_METRICS = (
    "REQUEST_COUNT",
    "REQUEST_DURATION",
    "REQUEST_SIZE",
    "RESPONSE_SIZE",
    "TCP_OPENED_CONNECTIONS",
    "TCP_CLOSED_CONNECTIONS",
    "TCP_SENT_BYTES",
    "TCP_RECEIVED_BYTES",
    "GRPC_REQUEST_MESSAGES",
    "GRPC_RESPONSE_MESSAGES",
)
DIRECTIONS = ("client", "server")
MODES = {"CLIENT": ("client",), "SERVER": ("server",), "CLIENT_AND_SERVER": DIRECTIONS}
DEFAULT_TAG_LENGTH = 256  # Envoy's max_path_tag_length default
DEFAULT_TIMEOUT_S = 3.0
# tracing.go zipkinConfig: Envoy needs a timeout on the HttpService, istiod sets 5 s when unset.
ZIPKIN_DEFAULT_TIMEOUT_S = 5.0
PROXY_CONFIG_ANNOTATION = "proxy.istio.io/config"
PROXY_CONFIG_TAG_KINDS = ("literal", "environment", "header")
TELEMETRY_TAG_KINDS = (*PROXY_CONFIG_TAG_KINDS, "formatter")
# OpenTelemetryTracingProvider's fields; the samplers (the `sampling` oneof) force 100% at the proxy.
_OTEL_KEYS = {"service", "port", "maxTagLength", "http", "grpc", "resourceDetectors"}
_OTEL_SAMPLERS = ("dynatraceSampler",)
_FORMAT_COMMANDS = re.compile(r"%([A-Z_0-9]+)")  # command names in an Envoy format string


@dataclass
class _Value:
    value: Any
    source: Source


@dataclass
class _Direction:
    """One direction's TracingSpec while entries are applied (telemetry.go `Tracing`)."""

    provider_name: _Value | None = None  # None: no provider ever named
    disable_span_reporting: _Value = field(
        default_factory=lambda: _Value(False, _default("disableSpanReporting=false"))
    )
    custom_tags: _Value | None = None
    sampling: _Value | None = None
    use_request_id: _Value = field(
        default_factory=lambda: _Value(True, _default("useRequestIdForTraceSampling=true"))
    )
    enable_istio_tags: _Value = field(default_factory=lambda: _Value(True, _default("enableIstioTags=true")))
    disable_context_propagation: _Value = field(
        default_factory=lambda: _Value(False, _default("disableContextPropagation=false"))
    )


def _default(what: str) -> Source:
    return Source("Istio default", None, what)


def _tel_source(tel: Telemetry, path: str) -> Source:
    return Source(tel.meta.ref, tel.meta.origin.file, path)


class _Resolution:
    def __init__(
        self,
        bundle: Bundle,
        workload: str,
        namespace: str,
        labels: Mapping[str, str] | None,
        env: Mapping[str, str] | None,
    ) -> None:
        self.bundle = bundle
        self.mesh: MeshConfig = bundle.mesh
        self.workload, self.namespace = workload, namespace
        self.env = dict(env or {})
        self.sources: dict[str, Source] = {}
        self.warnings: list[str] = []
        self.deployment = bundle.deployment(workload, namespace)
        if labels is not None:
            self.labels = dict(labels)
            self.sources["workload.labels"] = Source(
                "given labels", None, "--labels or the registering sidecar"
            )
        elif self.deployment is not None:
            self.labels = dict(self.deployment.pod_labels)
            self.sources["workload.labels"] = Source(
                self.deployment.meta.ref, self.deployment.meta.origin.file, "spec.template.metadata.labels"
            )
        else:
            self.labels = {"app": workload}
            self.sources["workload.labels"] = Source("assumed", None, None)
            elsewhere = sorted(d.namespace for d in bundle.deployments if d.name == workload)
            hint = f" (a Deployment {workload} exists in: {', '.join(elsewhere)})" if elsewhere else ""
            self.warnings.append(
                f"no Deployment {namespace}/{workload} and no labels given: "
                f"assuming labels app={workload}{hint}"
            )
        self.annotations = dict(self.deployment.annotations) if self.deployment else {}
        injected, why = bundle.sidecar_injected(namespace, self.labels, self.annotations)
        if injected is False:
            self.warnings.append(f"no sidecar would be injected ({why}): in Istio this workload has no proxy")

    # -- which Telemetry resources apply -------------------------------------------------------

    def applicable(self) -> tuple[list[tuple[str, Telemetry]], list[dict[str, str]]]:
        """[(scope, Telemetry)] in application order, and the resources ignored with reasons."""
        root = self.mesh.root_namespace
        by_ns: dict[str, list[Telemetry]] = {}
        ignored: list[dict[str, str]] = []
        for tel in sorted(self.bundle.telemetries, key=lambda t: t.sort_key):
            if tel.namespace not in (root, self.namespace):
                continue
            if not tel.valid:
                ignored.append({"resource": tel.meta.ref, "reason": "rejected by the Telemetry CRD schema"})
                continue
            by_ns.setdefault(tel.namespace, []).append(tel)
        chain: list[tuple[str, Telemetry]] = []
        scopes = [("root", root)] + ([("namespace", self.namespace)] if self.namespace != root else [])
        for scope, ns in scopes:
            wide = [t for t in by_ns.get(ns, []) if t.namespace_wide]
            if wide:
                chain.append((scope, wide[0]))
                for later in wide[1:]:
                    ignored.append(
                        {
                            "resource": later.meta.ref,
                            "reason": f"a second selector-less Telemetry in {ns}: only the oldest "
                            f"({wide[0].meta.ref}) applies",
                        }
                    )
        # Every matching workload Telemetry applies, oldest first, each over the previous ones
        # (istiod's first-match `break` went in istio#47162, released in 1.21.0).
        for tel in by_ns.get(self.namespace, []):
            if tel.namespace_wide:
                continue
            if not tel.match_labels:
                ignored.append(
                    {"resource": tel.meta.ref, "reason": "targetRefs do not select sidecar workloads"}
                )
                continue
            if all(self.labels.get(k) == v for k, v in tel.match_labels.items()):
                chain.append(("workload", tel))
        for item in ignored:
            self.warnings.append(f"{item['resource']} ignored: {item['reason']}")
        return chain, ignored

    # -- tracing -------------------------------------------------------------------------------

    def proxy_config(self) -> tuple[dict[str, Any], dict[str, Source]]:
        """meshConfig.defaultConfig overlaid with the pod's proxy.istio.io/config annotation, and
        the source of its tracing fields."""
        proxy = self.mesh.default_config
        srcs: dict[str, Source] = {}
        for key in ("sampling", "customTags", "maxPathTagLength", "zipkin", "enableIstioTags"):
            srcs[key] = self.mesh.source(f"defaultConfig.tracing.{key}")
        text = self.annotations.get(PROXY_CONFIG_ANNOTATION)
        if text and self.deployment is not None:
            ref, file = self.deployment.meta.ref, self.deployment.meta.origin.file
            field_path = f"spec.template.metadata.annotations['{PROXY_CONFIG_ANNOTATION}']"
            try:
                parsed = yaml.safe_load(text)
            except yaml.YAMLError as e:
                self.note(f"{ref}: annotation {PROXY_CONFIG_ANNOTATION} does not parse ({e}); ignored")
                parsed = None
            if isinstance(parsed, dict):
                parsed, _notes = normalize_proxy_config(parsed, field_path, Origin(file, 0), ref)
                tracing = parsed.get("tracing")
                if isinstance(tracing, dict):
                    if not isinstance(proxy.get("tracing"), dict):
                        proxy["tracing"] = {}
                    base = proxy["tracing"]
                    for key, value in tracing.items():
                        base[key] = copy.deepcopy(value)
                        srcs[key] = Source(ref, file, f"{field_path}.tracing.{key}")
        return proxy, srcs

    def proxy_sampling(self, proxy: dict[str, Any], srcs: dict[str, Source]) -> _Value:
        """tracing.go proxyConfigSamplingValue, then PILOT_TRACE_SAMPLING."""
        sampling = map_at(proxy, "tracing").get("sampling")
        if isinstance(sampling, (int, float)) and not isinstance(sampling, bool) and sampling != 0.0:
            if 0.0 <= sampling <= 100.0:
                return _Value(float(sampling), srcs["sampling"])
            self.note(
                f"tracing.sampling {sampling} ({srcs['sampling'].resource}) is out of range 0-100: "
                "Istio uses 1.0"
            )
            return _Value(1.0, srcs["sampling"])
        raw = self.env.get("PILOT_TRACE_SAMPLING")
        if raw is None:
            return _Value(1.0, Source("Istio default", None, "PILOT_TRACE_SAMPLING=1.0"))
        src = Source("environment", None, "PILOT_TRACE_SAMPLING")
        try:
            value = float(raw)
        except ValueError:
            self.note(f"PILOT_TRACE_SAMPLING={raw!r} is not a number: Istio uses 1.0")
            return _Value(1.0, src)
        if not 0.0 <= value <= 100.0:
            self.note(f"PILOT_TRACE_SAMPLING={raw} is out of range 0-100: Istio uses 1.0")
            return _Value(1.0, src)
        return _Value(value, src)

    def tracing(self, chain: list[tuple[str, Telemetry]]) -> dict[str, Any]:
        entries = [(tel, i, entry) for _scope, tel in chain for i, entry in tel.entries("tracing")]
        defaults = self.mesh.default_tracing_providers
        proxy, proxy_srcs = self.proxy_config()
        if not entries and not defaults:
            return self.legacy_tracing(proxy, proxy_srcs)
        dirs = {d: _Direction() for d in DIRECTIONS}
        if defaults:
            src = self.mesh.source("defaultProviders.tracing")
            for d in dirs.values():
                d.provider_name = _Value(defaults[0], src)
        for tel, i, entry in entries:
            base = f"spec.tracing[{i}]"
            mode = str(map_at(entry, "match").get("mode") or "CLIENT_AND_SERVER")
            targets = [dirs[d] for d in MODES.get(mode, DIRECTIONS)]
            names = [p.get("name") for p in list_at(entry, "providers") if isinstance(p, dict)]
            fields: list[tuple[str, str, Any]] = []
            if names:
                fields.append(("provider_name", f"{base}.providers[0].name", str(names[0])))
            for attr, key in (
                ("disable_span_reporting", "disableSpanReporting"),
                ("custom_tags", "customTags"),
                ("sampling", "randomSamplingPercentage"),
                ("use_request_id", "useRequestIdForTraceSampling"),
                ("enable_istio_tags", "enableIstioTags"),
                ("disable_context_propagation", "disableContextPropagation"),
            ):
                if entry.get(key) is not None:
                    value = float(entry[key]) if key == "randomSamplingPercentage" else entry[key]
                    fields.append((attr, f"{base}.{key}", value))
            for attr, path, value in fields:
                for d in targets:
                    setattr(d, attr, _Value(value, _tel_source(tel, path)))
        return {name: self.direction(name, d, proxy, proxy_srcs) for name, d in dirs.items()}

    def direction(
        self, name: str, d: _Direction, proxy: dict[str, Any], proxy_srcs: dict[str, Source]
    ) -> dict[str, Any]:
        key = f"tracing.{name}"
        provider: dict[str, Any] | None = None
        sampler: _Value | None = None
        own_tag_length = False
        if d.provider_name is None:
            self.note(
                f"{key}: no tracing provider (no Telemetry names one, no defaultProviders.tracing): "
                "tracing is off, spans are not produced"
            )
        else:
            self.sources[f"{key}.provider.name"] = d.provider_name.source
            provider, sampler, own_tag_length = self.provider(key, str(d.provider_name.value))
        disabled = bool(d.disable_span_reporting.value)
        self.sources[f"{key}.disable_span_reporting"] = d.disable_span_reporting.source
        enabled = provider is not None and not disabled
        self.sources[f"{key}.enabled"] = (
            d.provider_name.source
            if d.provider_name and not disabled
            else d.disable_span_reporting.source
            if disabled
            else _default("no tracing provider")
        )
        if sampler is not None:
            sampling = sampler
        elif d.sampling is not None:
            sampling = d.sampling
        else:
            sampling = self.proxy_sampling(proxy, proxy_srcs)
        self.sources[f"{key}.random_sampling_percentage"] = sampling.source
        tags, tags_src = self.custom_tags(d, proxy, proxy_srcs)
        self.sources[f"{key}.custom_tags"] = tags_src
        max_len = _Value(DEFAULT_TAG_LENGTH, _default("Envoy max_path_tag_length=256"))
        if provider is not None and own_tag_length:
            max_len = _Value(provider["max_tag_length"], self.sources[f"{key}.provider"])
        elif _whole(map_at(proxy, "tracing").get("maxPathTagLength")):
            max_len = _Value(_whole(proxy["tracing"]["maxPathTagLength"]), proxy_srcs["maxPathTagLength"])
        self.sources[f"{key}.max_path_tag_length"] = max_len.source
        self.sources[f"{key}.use_request_id_for_trace_sampling"] = d.use_request_id.source
        self.sources[f"{key}.enable_istio_tags"] = d.enable_istio_tags.source
        self.sources[f"{key}.propagation"] = d.disable_context_propagation.source
        write = [] if d.disable_context_propagation.value else ["w3c", "b3"]
        return {
            "enabled": enabled,
            "provider": provider,
            "random_sampling_percentage": float(sampling.value),
            "disable_span_reporting": disabled,
            "use_request_id_for_trace_sampling": bool(d.use_request_id.value),
            "enable_istio_tags": bool(d.enable_istio_tags.value),
            "max_path_tag_length": int(max_len.value),
            "custom_tags": tags,
            "propagation": {"read": ["w3c", "b3"], "write": write},
        }

    def note(self, text: str) -> None:
        if text not in self.warnings:
            self.warnings.append(text)

    def custom_tags(
        self, d: _Direction, proxy: dict[str, Any], proxy_srcs: dict[str, Source]
    ) -> tuple[dict[str, Any], Source]:
        """Telemetry customTags (replaced whole by each level that sets them); when none, the
        legacy defaultConfig.tracing.customTags (tracing.go configureCustomTags). Telemetry tags
        may also be `formatter` (an Envoy format string, kept by istiod for 1.29+ proxies);
        ProxyConfig has no formatter tags."""
        if d.custom_tags is not None and d.custom_tags.value:
            return self.tags(d.custom_tags.value, TELEMETRY_TAG_KINDS), d.custom_tags.source
        legacy = map_at(proxy, "tracing").get("customTags")
        if isinstance(legacy, dict) and legacy:
            return self.tags(legacy, PROXY_CONFIG_TAG_KINDS), proxy_srcs["customTags"]
        return {}, d.custom_tags.source if d.custom_tags else _default("no custom tags")

    def tags(self, raw: Mapping[str, Any], kinds: tuple[str, ...]) -> dict[str, Any]:
        """customTags in the document's snake_case shape: the `kinds` istiod turns into span tags
        (tracing.go buildCustomTagsFrom*); any other tag is dropped with a note."""
        out: dict[str, Any] = {}
        for name, tag in raw.items():
            found = [k for k in kinds if map_at(tag, k)]
            if not found:
                self.note(f"custom tag {name!r} is not a {', '.join(kinds)} tag: Istio drops it")
                continue
            body = {_snake(k): str(v) for k, v in map_at(tag, found[0]).items()}
            others = sorted(set(_FORMAT_COMMANDS.findall(body.get("value", ""))) - {"REQ"})
            if found[0] == "formatter" and others:
                self.note(
                    f"custom tag {name!r}: meshtrace's sidecar evaluates only %REQ(...)% in formatter "
                    f"tags; {', '.join(others)} print '-'"
                )
            out[str(name)] = {found[0]: body}
        return dict(sorted(out.items()))

    def provider(self, key: str, name: str) -> tuple[dict[str, Any] | None, _Value | None, bool]:
        """The provider document for `name`, the sampler value when the provider has one, and
        whether it sets its own maxTagLength."""
        entry, index = self.mesh.find_provider(name)
        if entry is None:
            self.note(
                f"{key}: provider {name!r} is not in meshConfig.extensionProviders: tracing is off, "
                "spans are not produced"
            )
            return None, None, False
        where = f"extensionProviders[{index}]" if index is not None else None
        src = self.mesh.source(where) if where else Source("built-in provider", None, name)
        self.sources[f"{key}.provider"] = src
        kind = next((k for k in entry if k != "name"), "")
        raw_body = entry.get(kind)
        body: dict[str, Any] = raw_body if isinstance(raw_body, dict) else {}
        if kind not in TRACING_TYPES:
            self.note(f"{key}: provider {name!r} ({kind}) does not support tracing: tracing is off")
            return None, None, False
        if kind not in ("opentelemetry", "zipkin"):
            self.note(
                f"{key}: provider {name!r} is {kind}, which meshtrace does not implement: tracing is off"
            )
            return None, None, False
        port = _whole(body.get("port"))
        if port is None or not 0 < port < 65536:
            self.note(
                f"{key}: provider {name!r} has no valid port (required): Istio cannot build its cluster"
            )
            port = 0
        _exact, short = self.bundle.services_for_host(str(body.get("service", "")))
        if short is not None:
            self.note(
                f"{key}: provider {name!r} names service {body.get('service')!r}, not the full host name "
                f"{short.host}: istiod finds no cluster for it, tracing is off"
            )
            return None, None, False
        max_tag = _whole(body.get("maxTagLength"))
        doc: dict[str, Any] = {
            "name": str(entry.get("name")),
            "type": kind,
            "service": str(body.get("service", "")).rsplit("/", 1)[-1],  # `[namespace/]host`: the host
            "port": port,
            "max_tag_length": max_tag or DEFAULT_TAG_LENGTH,
        }
        sampler: _Value | None = None
        if kind == "opentelemetry":
            http = body.get("http")
            if isinstance(http, dict):
                path = str(http.get("path") or "")
                if not path:
                    self.note(
                        f"{key}: provider {name!r} http.path is unset: Istio would post to "
                        f"{doc['service']}:{doc['port']}/ ; meshtrace uses /v1/traces"
                    )
                doc.update(
                    protocol="http",
                    path=path or "/v1/traces",
                    timeout_s=parse_duration(http.get("timeout")) or DEFAULT_TIMEOUT_S,
                    headers=self.headers(http.get("headers"), key),
                )
            else:
                raw_grpc = body.get("grpc")
                grpc: dict[str, Any] = raw_grpc if isinstance(raw_grpc, dict) else {}
                doc.update(
                    protocol="grpc",
                    path=None,
                    timeout_s=parse_duration(grpc.get("timeout")) or DEFAULT_TIMEOUT_S,
                    headers=self.headers(grpc.get("initialMetadata"), key),
                )
            doc["trace_context"] = "w3c"
            samplers = [k for k in _OTEL_SAMPLERS if k in body]
            if samplers:
                sampler = _Value(
                    100.0, Source(src.resource, src.file, f"{src.field}.opentelemetry.{samplers[0]}")
                )
                self.note(
                    f"{key}: provider {name!r} has a sampler ({samplers[0]}): the proxy samples 100% "
                    "and leaves the decision to it"
                )
            for unknown in sorted(set(body) - _OTEL_KEYS - set(_OTEL_SAMPLERS)):
                self.note(f"{key}: provider {name!r} has an unknown opentelemetry field {unknown!r}: ignored")
        else:
            option = str(body.get("traceContextOption") or "USE_B3")
            doc.update(
                protocol="zipkin",
                path=str(body.get("path") or "/api/v2/spans"),
                timeout_s=parse_duration(body.get("timeout")) or ZIPKIN_DEFAULT_TIMEOUT_S,
                headers=self.headers(body.get("headers"), key),
                trace_context="b3+w3c" if option == "USE_B3_WITH_W3C_PROPAGATION" else "b3",
            )
        doc["endpoint"] = _literal_endpoint(doc["service"], doc["port"])
        order = (
            "name",
            "type",
            "service",
            "port",
            "protocol",
            "path",
            "endpoint",
            "timeout_s",
            "headers",
            "max_tag_length",
            "trace_context",
        )
        return {k: doc[k] for k in order}, sampler, bool(max_tag)

    def headers(self, items: Any, key: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for h in items if isinstance(items, list) else []:
            if not isinstance(h, dict) or "name" not in h:
                continue
            if "envName" in h:
                value = self.env.get(str(h["envName"]))
                if value is None:
                    self.note(f"{key}: header {h['name']} reads ${h['envName']}, unset: sent empty")
                out[str(h["name"])] = value or ""
            else:
                out[str(h["name"])] = str(h.get("value", ""))
        return out

    def legacy_tracing(self, proxy: dict[str, Any], proxy_srcs: dict[str, Source]) -> dict[str, Any]:
        """No Telemetry tracing and no default provider: meshConfig.enableTracing decides, the
        tracer is defaultConfig.tracing's (zipkin) and sampling comes from proxy config."""
        enabled_src = self.mesh.source("enableTracing")
        provider: dict[str, Any] | None = None
        if not self.mesh.get("enableTracing"):
            self.note(
                "no Telemetry tracing, no defaultProviders.tracing and meshConfig.enableTracing is "
                "false: tracing is off"
            )
        else:
            address = str(map_at(map_at(proxy, "tracing"), "zipkin").get("address") or "")
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit():
                self.note(
                    "legacy tracing: defaultConfig.tracing names no zipkin address meshtrace can use: "
                    "tracing is off"
                )
            else:
                provider = {
                    "name": "defaultConfig.tracing.zipkin",
                    "type": "zipkin",
                    "service": host,
                    "port": int(port),
                    "protocol": "zipkin",
                    "path": "/api/v2/spans",
                    "endpoint": _literal_endpoint(host, int(port)),
                    "timeout_s": DEFAULT_TIMEOUT_S,
                    "headers": {},
                    "max_tag_length": DEFAULT_TAG_LENGTH,
                    "trace_context": "b3",
                }
                self.note(
                    "no Telemetry tracing and no defaultProviders.tracing: legacy tracing "
                    f"(meshConfig.enableTracing) to zipkin at {address}"
                )
        out: dict[str, Any] = {}
        d = _Direction()
        enable_tags = map_at(proxy, "tracing").get("enableIstioTags")
        if isinstance(enable_tags, bool):
            d.enable_istio_tags = _Value(enable_tags, proxy_srcs["enableIstioTags"])
        for name in DIRECTIONS:
            key = f"tracing.{name}"
            if provider is not None:
                self.sources[f"{key}.provider"] = proxy_srcs["zipkin"]
                self.sources[f"{key}.provider.name"] = enabled_src
            block = self.direction_legacy(name, d, copy.deepcopy(provider), proxy, proxy_srcs)
            self.sources[f"{key}.enabled"] = enabled_src
            out[name] = block
        return out

    def direction_legacy(
        self,
        name: str,
        d: _Direction,
        provider: dict[str, Any] | None,
        proxy: dict[str, Any],
        proxy_srcs: dict[str, Source],
    ) -> dict[str, Any]:
        key = f"tracing.{name}"
        sampling = self.proxy_sampling(proxy, proxy_srcs)
        tags, tags_src = self.custom_tags(d, proxy, proxy_srcs)
        max_len = _whole(map_at(proxy, "tracing").get("maxPathTagLength"))
        self.sources[f"{key}.random_sampling_percentage"] = sampling.source
        self.sources[f"{key}.custom_tags"] = tags_src
        self.sources[f"{key}.max_path_tag_length"] = (
            proxy_srcs["maxPathTagLength"] if max_len else _default("Envoy max_path_tag_length=256")
        )
        self.sources[f"{key}.enable_istio_tags"] = d.enable_istio_tags.source
        return {
            "enabled": provider is not None,
            "provider": provider,
            "random_sampling_percentage": sampling.value,
            "disable_span_reporting": False,
            "use_request_id_for_trace_sampling": True,
            "enable_istio_tags": bool(d.enable_istio_tags.value),
            "max_path_tag_length": max_len or DEFAULT_TAG_LENGTH,
            "custom_tags": tags,
            "propagation": {"read": ["w3c", "b3"], "write": ["w3c", "b3"]},
        }

    # -- metrics -------------------------------------------------------------------------------

    def metrics(self, chain: list[tuple[str, Telemetry]]) -> dict[str, Any]:
        """telemetry.go mergeMetrics for the prometheus provider."""
        entries = [(tel, i, m) for _scope, tel in chain for i, m in tel.entries("metrics")]
        defaults = self.mesh.default_metrics_providers
        in_scope = list(defaults)
        scope_src = self.mesh.source("defaultProviders.metrics")
        for tel, i, m in entries:
            names = _provider_names(m)
            if names:
                in_scope, scope_src = names, _tel_source(tel, f"spec.metrics[{i}].providers")
        per: dict[str, dict[str, dict[str, Any]]] = {d: {} for d in DIRECTIONS}
        active = not entries and "prometheus" in defaults
        # ALL_METRICS disabled is kept per direction (istiod keys it by provider and mode); any
        # later override touching that direction turns it back on.
        off: dict[str, Source] = {}
        parent = list(defaults)
        for tel, i, m in entries:
            names = _provider_names(m) or parent
            parent = names
            if "prometheus" not in names or "prometheus" not in in_scope:
                continue
            active = True
            for oi, override in enumerate(list_at(m, "overrides")):
                if not isinstance(override, dict):
                    continue
                base = f"spec.metrics[{i}].overrides[{oi}]"
                raw_match = override.get("match")
                match: dict[str, Any] = raw_match if isinstance(raw_match, dict) else {}
                directions = MODES.get(str(match.get("mode") or "CLIENT_AND_SERVER"), DIRECTIONS)
                # No metric and no customMetric selects every metric, like ALL_METRICS.
                is_all = "customMetric" not in match and match.get("metric") in (None, "ALL_METRICS")
                if is_all and override.get("disabled") is True:
                    for direction in directions:
                        off[direction] = _tel_source(tel, f"{base}.disabled")
                    continue
                for direction in directions:
                    off.pop(direction, None)
                if "customMetric" in match:
                    names_ = [str(match["customMetric"])]
                elif not is_all:
                    names_ = [str(match["metric"])]
                else:
                    names_ = list(STANDARD_METRICS)
                for direction in directions:
                    for metric in names_:
                        slot = per[direction].setdefault(metric, {"disabled": False, "tag_overrides": {}})
                        mkey = f"metrics.{direction}.{metric}"
                        if isinstance(override.get("disabled"), bool):
                            slot["disabled"] = override["disabled"]
                            self.sources[f"{mkey}.disabled"] = _tel_source(tel, f"{base}.disabled")
                        tags = override.get("tagOverrides")
                        for tag, spec in tags.items() if isinstance(tags, dict) else []:
                            tag_path = f"{base}.tagOverrides.{tag}"
                            slot["tag_overrides"][str(tag)] = self.tag_override(tel, tag_path, spec)
                            self.sources[f"{mkey}.tag_overrides.{tag}"] = _tel_source(tel, tag_path)
        on = {d: active and d not in off for d in DIRECTIONS}
        out: dict[str, Any] = {"enabled": any(on.values())}
        for direction in DIRECTIONS:
            out[f"{direction}_enabled"] = on[direction]
            self.sources[f"metrics.{direction}_enabled"] = off.get(direction, scope_src)
        self.sources["metrics.enabled"] = (
            next(iter(off.values())) if off and not out["enabled"] else scope_src
        )
        for direction in DIRECTIONS:
            metrics = {m: {"disabled": False, "tag_overrides": {}} for m in STANDARD_METRICS}
            metrics.update(per[direction])
            out[direction] = {m: metrics[m] for m in sorted(metrics)}
        return out

    def tag_override(self, tel: Telemetry, path: str, spec: Any) -> dict[str, Any]:
        spec = spec if isinstance(spec, dict) else {}
        if spec.get("operation") == "REMOVE":
            return {"operation": "REMOVE"}
        value = str(spec.get("value", ""))
        cel = mixer_to_cel(value)
        if cel is not None:
            self.note(
                f"{tel.meta.ref} {path}: {value!r} is the retired Mixer syntax; evaluated as the CEL {cel!r}"
            )
            value = cel
        problem = check(value)
        if problem is not None:
            self.note(
                f"{tel.meta.ref} {path}: {value!r}: {problem}; the sidecar drops this label, as Envoy does"
            )
        return {"operation": "UPSERT", "value": value}

    # -- the document --------------------------------------------------------------------------

    def document(self) -> dict[str, Any]:
        for problem in self.bundle.problems:
            if problem.code == "proxy-config-snake-case":
                self.note(f"{problem.resource} {problem.path}: {problem.message}")
        chain, ignored = self.applicable()
        tracing = self.tracing(chain)
        self.seed_era_notes(chain, tracing)
        metrics = self.metrics(chain)
        app = self.labels.get("app") or self.workload
        mesh = self.mesh
        trust_domain = str(mesh.get("trustDomain"))
        mesh_id = str((mesh.default_config.get("meshId")) or trust_domain)
        return {
            "schema": SCHEMA_VERSION,
            "workload": {
                "name": self.workload,
                "namespace": self.namespace,
                "labels": dict(sorted(self.labels.items())),
                "service_name": f"{app}.{self.namespace}",
                "canonical_service": self.labels.get("service.istio.io/canonical-name")
                or self.labels.get("app.kubernetes.io/name")
                or app,
                "canonical_revision": self.labels.get("service.istio.io/canonical-revision")
                or self.labels.get("app.kubernetes.io/version")
                or self.labels.get("version")
                or "latest",
            },
            "mesh": {
                "mesh_id": mesh_id,
                "cluster_id": "Kubernetes",
                "trust_domain": trust_domain,
                "root_namespace": mesh.root_namespace,
            },
            "telemetry": {
                "applied": [
                    {"scope": scope, "resource": t.meta.ref, "file": t.meta.origin.file} for scope, t in chain
                ],
                "ignored": ignored,
            },
            "tracing": tracing,
            "metrics": metrics,
            "security": security_document(
                self.bundle,
                self.namespace,
                self.labels,
                self.deployment.service_account if self.deployment else "default",
                self.warnings,
            ),
            "sources": {k: v.as_dict() for k, v in sorted(self.sources.items())},
            "warnings": self.warnings,
        }

    def seed_era_notes(self, chain: list[tuple[str, Telemetry]], tracing: dict[str, Any]) -> None:
        """Seed-era mesh settings that no longer do what the seed says."""
        address_src = self.mesh.source("defaultConfig.tracing.zipkin.address")
        providers = [b["provider"] for b in tracing.values() if b.get("provider")]
        if address_src.resource != "Istio default" and any(
            p["name"] != "defaultConfig.tracing.zipkin" for p in providers
        ):
            address = self.mesh.get("defaultConfig.tracing.zipkin.address")
            self.note(
                f"defaultConfig.tracing.zipkin.address {address} ({address_src.resource}) is not used: "
                f"the Telemetry provider {providers[0]['name']!r} ({providers[0]['type']}) sends the spans"
            )


def _whole(value: Any) -> int | None:
    """A non-negative integer written as a number or digits, else None (YAML may hold anything)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _snake(name: str) -> str:
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), str(name))


def _provider_names(entry: Mapping[str, Any]) -> list[str]:
    return [str(p.get("name")) for p in list_at(entry, "providers") if isinstance(p, dict) and p.get("name")]


def _literal_endpoint(service: str, port: int) -> str | None:
    """An address usable without the service registry (an IP or localhost), else None."""
    if not service or not port:
        return None
    try:
        ip = ipaddress.ip_address(service)
    except ValueError:
        return f"http://{service}:{port}" if service == "localhost" else None
    return f"http://[{ip}]:{port}" if ip.version == 6 else f"http://{ip}:{port}"


def effective_config(
    bundle: Bundle,
    workload: str,
    namespace: str,
    labels: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The config document (docs/config-document.md, without `services`) of one workload.

    `labels` describe a workload no Deployment defines (else the Deployment's pod labels);
    `env` is istiod's environment (PILOT_TRACE_SAMPLING, header envName values)."""
    return _Resolution(bundle, workload, namespace, labels, env).document()
