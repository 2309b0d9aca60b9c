"""The proxy's own tracing settings (ProxyConfig `tracing`): meshConfig.defaultConfig overlaid
with the pod's `proxy.istio.io/config` annotation, the sampling they set (tracing.go
proxyConfigSamplingValue, then PILOT_TRACE_SAMPLING) and custom tags in the document's shape.
Both the Telemetry and the legacy tracing paths read them."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from meshtrace.config.mesh import normalize_proxy_config
from meshtrace.config.model import Origin, Source, map_at
from meshtrace.config.resolution import Resolution, Value, default
from meshtrace.document import CustomTag

PROXY_CONFIG_ANNOTATION = "proxy.istio.io/config"
PROXY_CONFIG_TAG_KINDS = ("literal", "environment", "header")
TELEMETRY_TAG_KINDS = (*PROXY_CONFIG_TAG_KINDS, "formatter")
_FORMAT_COMMANDS = re.compile(r"%([A-Z_0-9]+)")  # command names in an Envoy format string


@dataclass
class ProxyTracing:
    """ProxyConfig `tracing` after the annotation overlay, and the source of each key."""

    values: dict[str, Any]
    sources: dict[str, Source]


def proxy_tracing(r: Resolution) -> ProxyTracing:
    """meshConfig.defaultConfig overlaid with the pod's proxy.istio.io/config annotation."""
    proxy = r.mesh.default_config
    srcs: dict[str, Source] = {}
    for key in ("sampling", "customTags", "maxPathTagLength", "zipkin", "enableIstioTags"):
        srcs[key] = r.mesh.source(f"defaultConfig.tracing.{key}")
    text = r.annotations.get(PROXY_CONFIG_ANNOTATION)
    if text and r.deployment is not None:
        ref, file = r.deployment.meta.ref, r.deployment.meta.origin.file
        field_path = f"spec.template.metadata.annotations['{PROXY_CONFIG_ANNOTATION}']"
        try:
            parsed = yaml.safe_load(text)
        except yaml.YAMLError as e:
            r.note(f"{ref}: annotation {PROXY_CONFIG_ANNOTATION} does not parse ({e}); ignored")
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
    return ProxyTracing(map_at(proxy, "tracing"), srcs)


def proxy_sampling(r: Resolution, pt: ProxyTracing) -> Value:
    """tracing.go proxyConfigSamplingValue, then PILOT_TRACE_SAMPLING."""
    sampling = pt.values.get("sampling")
    if isinstance(sampling, (int, float)) and not isinstance(sampling, bool) and sampling != 0.0:
        if 0.0 <= sampling <= 100.0:
            return Value(float(sampling), pt.sources["sampling"])
        r.note(
            f"tracing.sampling {sampling} ({pt.sources['sampling'].resource}) is out of range 0-100: "
            "Istio uses 1.0"
        )
        return Value(1.0, pt.sources["sampling"])
    raw = r.env.get("PILOT_TRACE_SAMPLING")
    if raw is None:
        return Value(1.0, Source("Istio default", None, "PILOT_TRACE_SAMPLING=1.0"))
    src = Source("environment", None, "PILOT_TRACE_SAMPLING")
    try:
        value = float(raw)
    except ValueError:
        r.note(f"PILOT_TRACE_SAMPLING={raw!r} is not a number: Istio uses 1.0")
        return Value(1.0, src)
    if not 0.0 <= value <= 100.0:
        r.note(f"PILOT_TRACE_SAMPLING={raw} is out of range 0-100: Istio uses 1.0")
        return Value(1.0, src)
    return Value(value, src)


def custom_tags(
    r: Resolution, telemetry_tags: Value | None, pt: ProxyTracing
) -> tuple[dict[str, CustomTag], Source]:
    """Telemetry customTags (replaced whole by each level that sets them); when none, the
    legacy defaultConfig.tracing.customTags (tracing.go configureCustomTags). Telemetry tags
    may also be `formatter` (an Envoy format string, kept by istiod for 1.29+ proxies);
    ProxyConfig has no formatter tags."""
    if telemetry_tags is not None and telemetry_tags.value:
        return _tags(r, telemetry_tags.value, TELEMETRY_TAG_KINDS), telemetry_tags.source
    legacy = pt.values.get("customTags")
    if isinstance(legacy, dict) and legacy:
        return _tags(r, legacy, PROXY_CONFIG_TAG_KINDS), pt.sources["customTags"]
    return {}, telemetry_tags.source if telemetry_tags else default("no custom tags")


def _snake(name: str) -> str:
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), str(name))


def _tags(r: Resolution, raw: Mapping[str, Any], kinds: tuple[str, ...]) -> dict[str, CustomTag]:
    """customTags in the document's snake_case shape: the `kinds` istiod turns into span tags
    (tracing.go buildCustomTagsFrom*); any other tag is dropped with a note."""
    out: dict[str, CustomTag] = {}
    for name, tag in raw.items():
        found = [k for k in kinds if map_at(tag, k)]
        if not found:
            r.note(f"custom tag {name!r} is not a {', '.join(kinds)} tag: Istio drops it")
            continue
        body = {_snake(k): str(v) for k, v in map_at(tag, found[0]).items()}
        others = sorted(set(_FORMAT_COMMANDS.findall(body.get("value", ""))) - {"REQ"})
        if found[0] == "formatter" and others:
            r.note(
                f"custom tag {name!r}: meshtrace's sidecar evaluates only %REQ(...)% in formatter "
                f"tags; {', '.join(others)} print '-'"
            )
        out[str(name)] = CustomTag(**{found[0]: body})
    return dict(sorted(out.items()))
