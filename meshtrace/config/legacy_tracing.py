"""The pre-Telemetry tracing path, taken when no Telemetry configures tracing and no default
provider is set: `meshConfig.enableTracing` decides, the tracer is `defaultConfig.tracing`'s
zipkin, sampling and tags come from proxy config. Also the notes on seed-era mesh settings that no
longer do what the seed says."""

from __future__ import annotations

from meshtrace.config.model import map_at
from meshtrace.config.proxy_config import ProxyTracing, custom_tags, proxy_sampling
from meshtrace.config.resolution import DIRECTIONS, Resolution, Value, default, whole
from meshtrace.config.tracing import DEFAULT_TIMEOUT_S, literal_endpoint
from meshtrace.document import DEFAULT_TAG_LENGTH, Provider, Tracing, TracingDirection

LEGACY_PROVIDER = "defaultConfig.tracing.zipkin"


def legacy_provider(r: Resolution, pt: ProxyTracing) -> Provider | None:
    """defaultConfig.tracing.zipkin as a provider when meshConfig.enableTracing is on."""
    if not r.mesh.get("enableTracing"):
        r.note(
            "no Telemetry tracing, no defaultProviders.tracing and meshConfig.enableTracing is "
            "false: tracing is off"
        )
        return None
    address = str(map_at(pt.values, "zipkin").get("address") or "")
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        r.note(
            "legacy tracing: defaultConfig.tracing names no zipkin address meshtrace can use: tracing is off"
        )
        return None
    r.note(
        "no Telemetry tracing and no defaultProviders.tracing: legacy tracing "
        f"(meshConfig.enableTracing) to zipkin at {address}"
    )
    return Provider(
        name=LEGACY_PROVIDER,
        type="zipkin",
        service=host,
        port=int(port),
        protocol="zipkin",
        path="/api/v2/spans",
        endpoint=literal_endpoint(host, int(port)),
        timeout_s=DEFAULT_TIMEOUT_S,
        headers={},
        max_tag_length=DEFAULT_TAG_LENGTH,
        trace_context="b3",
    )


def legacy_tracing(r: Resolution, pt: ProxyTracing) -> Tracing:
    """Both directions from meshConfig.enableTracing and defaultConfig.tracing."""
    enabled_src = r.mesh.source("enableTracing")
    provider = legacy_provider(r, pt)
    enable_tags = Value(True, default("enableIstioTags=true"))
    if isinstance(pt.values.get("enableIstioTags"), bool):
        enable_tags = Value(pt.values["enableIstioTags"], pt.sources["enableIstioTags"])
    blocks: dict[str, TracingDirection] = {}
    for name in DIRECTIONS:
        key = f"tracing.{name}"
        if provider is not None:
            r.sources[f"{key}.provider"] = pt.sources["zipkin"]
            r.sources[f"{key}.provider.name"] = enabled_src
        blocks[name] = _direction(r, key, provider, enable_tags, pt)
        r.sources[f"{key}.enabled"] = enabled_src
    return Tracing(client=blocks["client"], server=blocks["server"])


def _direction(
    r: Resolution, key: str, provider: Provider | None, enable_tags: Value, pt: ProxyTracing
) -> TracingDirection:
    sampling = proxy_sampling(r, pt)
    tags, tags_src = custom_tags(r, None, pt)
    max_len = whole(pt.values.get("maxPathTagLength"))
    r.sources[f"{key}.random_sampling_percentage"] = sampling.source
    r.sources[f"{key}.custom_tags"] = tags_src
    r.sources[f"{key}.max_path_tag_length"] = (
        pt.sources["maxPathTagLength"] if max_len else default("Envoy max_path_tag_length=256")
    )
    r.sources[f"{key}.enable_istio_tags"] = enable_tags.source
    return TracingDirection(
        enabled=provider is not None,
        provider=provider,
        random_sampling_percentage=sampling.value,
        disable_span_reporting=False,
        use_request_id_for_trace_sampling=True,
        enable_istio_tags=bool(enable_tags.value),
        max_path_tag_length=max_len or DEFAULT_TAG_LENGTH,
        custom_tags=tags,
    )


def seed_era_notes(r: Resolution, tracing: Tracing) -> None:
    """A zipkin address set in defaultConfig while a Telemetry provider sends the spans."""
    address_src = r.mesh.source("defaultConfig.tracing.zipkin.address")
    providers = [b.provider for b in (tracing.client, tracing.server) if b.provider]
    if address_src.resource != "Istio default" and any(p.name != LEGACY_PROVIDER for p in providers):
        address = r.mesh.get("defaultConfig.tracing.zipkin.address")
        r.note(
            f"defaultConfig.tracing.zipkin.address {address} ({address_src.resource}) is not used: "
            f"the Telemetry provider {providers[0].name!r} ({providers[0].type}) sends the spans"
        )
