"""Tracing resolved from Telemetry resources as istiod does (telemetry.go `Tracing`,
tracing.go `configureTracingFromTelemetry`): the provider per direction, every `tracing[]` entry
overriding field by field, the sampling precedence, and the provider's document."""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass, field
from typing import Any

from meshtrace.config.mesh import TRACING_TYPES, parse_duration
from meshtrace.config.model import Source, Telemetry, list_at, map_at
from meshtrace.config.proxy_config import ProxyTracing, custom_tags, proxy_sampling
from meshtrace.config.resolution import DIRECTIONS, MODES, Resolution, Value, default, tel_source, whole
from meshtrace.document import DEFAULT_TAG_LENGTH, Propagation, Provider, Tracing, TracingDirection

DEFAULT_TIMEOUT_S = 3.0
# tracing.go zipkinConfig: Envoy needs a timeout on the HttpService, istiod sets 5 s when unset.
ZIPKIN_DEFAULT_TIMEOUT_S = 5.0
# OpenTelemetryTracingProvider's fields; the samplers (the `sampling` oneof) force 100% at the proxy.
_OTEL_KEYS = {"service", "port", "maxTagLength", "http", "grpc", "resourceDetectors"}
_OTEL_SAMPLERS = ("dynatraceSampler",)
# Telemetry tracing[] keys -> the _Direction attribute each overrides
_ENTRY_FIELDS = (
    ("disable_span_reporting", "disableSpanReporting"),
    ("custom_tags", "customTags"),
    ("sampling", "randomSamplingPercentage"),
    ("use_request_id", "useRequestIdForTraceSampling"),
    ("enable_istio_tags", "enableIstioTags"),
    ("disable_context_propagation", "disableContextPropagation"),
)


@dataclass
class Direction:
    """One direction's TracingSpec while entries are applied (telemetry.go `Tracing`)."""

    provider_name: Value | None = None  # None: no provider ever named
    disable_span_reporting: Value = field(
        default_factory=lambda: Value(False, default("disableSpanReporting=false"))
    )
    custom_tags: Value | None = None
    sampling: Value | None = None
    use_request_id: Value = field(
        default_factory=lambda: Value(True, default("useRequestIdForTraceSampling=true"))
    )
    enable_istio_tags: Value = field(default_factory=lambda: Value(True, default("enableIstioTags=true")))
    disable_context_propagation: Value = field(
        default_factory=lambda: Value(False, default("disableContextPropagation=false"))
    )


def telemetry_tracing(r: Resolution, chain: list[tuple[str, Telemetry]], pt: ProxyTracing) -> Tracing:
    """Start from meshConfig.defaultProviders.tracing[0]; every `tracing[]` entry in order
    overrides, per direction (match.mode), each field it sets; `customTags` replace whole."""
    dirs = {d: Direction() for d in DIRECTIONS}
    defaults = r.mesh.default_tracing_providers
    if defaults:
        src = r.mesh.source("defaultProviders.tracing")
        for d in dirs.values():
            d.provider_name = Value(defaults[0], src)
    entries = [(tel, i, entry) for _scope, tel in chain for i, entry in tel.entries("tracing")]
    for tel, i, entry in entries:
        base = f"spec.tracing[{i}]"
        mode = str(map_at(entry, "match").get("mode") or "CLIENT_AND_SERVER")
        targets = [dirs[d] for d in MODES.get(mode, DIRECTIONS)]
        names = [p.get("name") for p in list_at(entry, "providers") if isinstance(p, dict)]
        fields: list[tuple[str, str, Any]] = []
        if names:
            fields.append(("provider_name", f"{base}.providers[0].name", str(names[0])))
        for attr, key in _ENTRY_FIELDS:
            if entry.get(key) is not None:
                value = float(entry[key]) if key == "randomSamplingPercentage" else entry[key]
                fields.append((attr, f"{base}.{key}", value))
        for attr, path, value in fields:
            for d in targets:
                setattr(d, attr, Value(value, tel_source(tel, path)))
    return Tracing(
        client=direction(r, "client", dirs["client"], pt), server=direction(r, "server", dirs["server"], pt)
    )


def direction(r: Resolution, name: str, d: Direction, pt: ProxyTracing) -> TracingDirection:
    key = f"tracing.{name}"
    provider: Provider | None = None
    sampler: Value | None = None
    own_tag_length = False
    if d.provider_name is None:
        r.note(
            f"{key}: no tracing provider (no Telemetry names one, no defaultProviders.tracing): "
            "tracing is off, spans are not produced"
        )
    else:
        r.sources[f"{key}.provider.name"] = d.provider_name.source
        provider, sampler, own_tag_length = resolve_provider(r, key, str(d.provider_name.value))
    disabled = bool(d.disable_span_reporting.value)
    r.sources[f"{key}.disable_span_reporting"] = d.disable_span_reporting.source
    r.sources[f"{key}.enabled"] = (
        d.provider_name.source
        if d.provider_name and not disabled
        else d.disable_span_reporting.source
        if disabled
        else default("no tracing provider")
    )
    sampling = sampler or d.sampling or proxy_sampling(r, pt)
    r.sources[f"{key}.random_sampling_percentage"] = sampling.source
    tags, tags_src = custom_tags(r, d.custom_tags, pt)
    r.sources[f"{key}.custom_tags"] = tags_src
    max_len = Value(DEFAULT_TAG_LENGTH, default("Envoy max_path_tag_length=256"))
    proxy_len = whole(pt.values.get("maxPathTagLength"))
    if provider is not None and own_tag_length:
        max_len = Value(provider.max_tag_length, r.sources[f"{key}.provider"])
    elif proxy_len:
        max_len = Value(proxy_len, pt.sources["maxPathTagLength"])
    r.sources[f"{key}.max_path_tag_length"] = max_len.source
    r.sources[f"{key}.use_request_id_for_trace_sampling"] = d.use_request_id.source
    r.sources[f"{key}.enable_istio_tags"] = d.enable_istio_tags.source
    r.sources[f"{key}.propagation"] = d.disable_context_propagation.source
    return TracingDirection(
        enabled=provider is not None and not disabled,
        provider=provider,
        random_sampling_percentage=float(sampling.value),
        disable_span_reporting=disabled,
        use_request_id_for_trace_sampling=bool(d.use_request_id.value),
        enable_istio_tags=bool(d.enable_istio_tags.value),
        max_path_tag_length=int(max_len.value),
        custom_tags=tags,
        propagation=Propagation(write=() if d.disable_context_propagation.value else ("w3c", "b3")),
    )


def resolve_provider(r: Resolution, key: str, name: str) -> tuple[Provider | None, Value | None, bool]:
    """The provider document for `name`, the sampler value when the provider has one, and
    whether it sets its own maxTagLength."""
    entry, index = r.mesh.find_provider(name)
    if entry is None:
        r.note(
            f"{key}: provider {name!r} is not in meshConfig.extensionProviders: tracing is off, "
            "spans are not produced"
        )
        return None, None, False
    src = (
        r.mesh.source(f"extensionProviders[{index}]")
        if index is not None
        else Source("built-in provider", None, name)
    )
    r.sources[f"{key}.provider"] = src
    kind = next((k for k in entry if k != "name"), "")
    body = map_at(entry, kind)
    if kind not in TRACING_TYPES:
        r.note(f"{key}: provider {name!r} ({kind}) does not support tracing: tracing is off")
        return None, None, False
    if kind not in ("opentelemetry", "zipkin"):
        r.note(f"{key}: provider {name!r} is {kind}, which meshtrace does not implement: tracing is off")
        return None, None, False
    port = whole(body.get("port"))
    if port is None or not 0 < port < 65536:
        r.note(f"{key}: provider {name!r} has no valid port (required): Istio cannot build its cluster")
        port = 0
    _exact, short = r.bundle.services_for_host(str(body.get("service", "")))
    if short is not None:
        r.note(
            f"{key}: provider {name!r} names service {body.get('service')!r}, not the full host name "
            f"{short.host}: istiod finds no cluster for it, tracing is off"
        )
        return None, None, False
    max_tag = whole(body.get("maxTagLength"))
    service = str(body.get("service", "")).rsplit("/", 1)[-1]  # `[namespace/]host`: the host
    common: dict[str, Any] = {"name": str(entry.get("name")), "type": kind, "service": service, "port": port}
    sampler: Value | None = None
    if kind == "opentelemetry":
        fields, sampler = _opentelemetry(r, key, name, body, f"{service}:{port}", src)
    else:
        fields = _zipkin(r, key, body)
    provider = Provider(
        **common,
        **fields,
        endpoint=literal_endpoint(service, port),
        max_tag_length=max_tag or DEFAULT_TAG_LENGTH,
    )
    return provider, sampler, bool(max_tag)


def _opentelemetry(
    r: Resolution, key: str, name: str, body: dict[str, Any], target: str, src: Source
) -> tuple[dict[str, Any], Value | None]:
    """An opentelemetry provider's transport fields, and its sampler's 100% when it has one."""
    http = body.get("http")
    if isinstance(http, dict):
        path = str(http.get("path") or "")
        if not path:
            r.note(
                f"{key}: provider {name!r} http.path is unset: Istio would post to {target}/ ; "
                "meshtrace uses /v1/traces"
            )
        fields: dict[str, Any] = {
            "protocol": "http",
            "path": path or "/v1/traces",
            "timeout_s": _timeout(r, key, http.get("timeout"), DEFAULT_TIMEOUT_S),
            "headers": headers(r, http.get("headers"), key),
        }
    else:
        grpc = map_at(body, "grpc")
        fields = {
            "protocol": "grpc",
            "path": None,
            "timeout_s": _timeout(r, key, grpc.get("timeout"), DEFAULT_TIMEOUT_S),
            "headers": headers(r, grpc.get("initialMetadata"), key),
        }
    fields["trace_context"] = "w3c"
    sampler: Value | None = None
    samplers = [k for k in _OTEL_SAMPLERS if k in body]
    if samplers:
        sampler = Value(100.0, Source(src.resource, src.file, f"{src.field}.opentelemetry.{samplers[0]}"))
        r.note(
            f"{key}: provider {name!r} has a sampler ({samplers[0]}): the proxy samples 100% "
            "and leaves the decision to it"
        )
    for unknown in sorted(set(body) - _OTEL_KEYS - set(_OTEL_SAMPLERS)):
        r.note(f"{key}: provider {name!r} has an unknown opentelemetry field {unknown!r}: ignored")
    return fields, sampler


def _zipkin(r: Resolution, key: str, body: dict[str, Any]) -> dict[str, Any]:
    option = str(body.get("traceContextOption") or "USE_B3")
    return {
        "protocol": "zipkin",
        "path": str(body.get("path") or "/api/v2/spans"),
        "timeout_s": _timeout(r, key, body.get("timeout"), ZIPKIN_DEFAULT_TIMEOUT_S),
        "headers": headers(r, body.get("headers"), key),
        "trace_context": "b3+w3c" if option == "USE_B3_WITH_W3C_PROPAGATION" else "b3",
    }


def _timeout(r: Resolution, key: str, value: Any, default_s: float) -> float:
    """A provider timeout in seconds; unset or zero is the default. A negative or infinite number
    (YAML allows both) is no duration: the default, with a note."""
    seconds = parse_duration(value)
    if seconds is not None and not 0 <= seconds < math.inf:
        r.note(f"{key}: provider timeout {value!r} is not a duration: meshtrace uses {default_s:g}s")
        return default_s
    return seconds or default_s


def headers(r: Resolution, items: Any, key: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for h in items if isinstance(items, list) else []:
        if not isinstance(h, dict) or "name" not in h:
            continue
        if "envName" in h:
            value = r.env.get(str(h["envName"]))
            if value is None:
                r.note(f"{key}: header {h['name']} reads ${h['envName']}, unset: sent empty")
            out[str(h["name"])] = value or ""
        else:
            out[str(h["name"])] = str(h.get("value", ""))
    return out


def literal_endpoint(service: str, port: int) -> str | None:
    """An address usable without the service registry (an IP or localhost), else None."""
    if not service or not port:
        return None
    try:
        ip = ipaddress.ip_address(service)
    except ValueError:
        return f"http://{service}:{port}" if service == "localhost" else None
    return f"http://[{ip}]:{port}" if ip.version == 6 else f"http://{ip}:{port}"
