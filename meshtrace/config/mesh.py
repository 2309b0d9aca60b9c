"""MeshConfig: Istio's mesh-wide settings, merged from every IstioOperator and the `istio`
ConfigMap, with the provenance of every key, plus the extension providers meshtrace understands.

Merge order (like `istioctl install -f a.yaml -f b.yaml`, then what istiod reads): the
IstioOperators' `spec.meshConfig` in load order, then the `istio` ConfigMap's `mesh` in the root
namespace. Maps merge deeply; lists and scalars are replaced.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from meshtrace.config.model import Finding, Origin, Source, list_at
from meshtrace.durations import mesh_seconds as parse_duration  # noqa: F401  (resolve.py reads it here)

ROOT_NAMESPACE = "istio-system"
# Providers every mesh has without configuring them (Istio's default MeshConfig adds them).
BUILTIN_PROVIDERS: dict[str, dict[str, Any]] = {
    "prometheus": {"name": "prometheus", "prometheus": {}},
    "stackdriver": {"name": "stackdriver", "stackdriver": {}},
    "envoy": {"name": "envoy", "envoyFileAccessLog": {"path": "/dev/stdout"}},
}
# Istio's default MeshConfig values that resolution reads (pkg/config/mesh/mesh.go).
DEFAULTS: dict[str, Any] = {
    "rootNamespace": ROOT_NAMESPACE,
    "trustDomain": "cluster.local",
    "enableTracing": True,
    "defaultProviders": {"metrics": ["prometheus"]},
    "defaultConfig": {"tracing": {"zipkin": {"address": "zipkin.istio-system:9411"}}},
}
TRACING_TYPES = ("opentelemetry", "zipkin", "datadog", "skywalking", "lightstep", "stackdriver")
# ProxyConfig.tracing's tracer oneof.
_TRACERS = ("zipkin", "lightstep", "datadog", "stackdriver", "openCensusAgent")
# Snake-case ProxyConfig proto field names the seed uses; protobuf JSON accepts both spellings.
_SNAKE = re.compile(r"_([a-z0-9])")


def camel(name: str) -> str:
    return _SNAKE.sub(lambda m: m.group(1).upper(), name)


@dataclass
class Layer:
    resource: str  # "IstioOperator istio-system/istio-config" or "ConfigMap istio-system/istio"
    origin: Origin
    prefix: str  # key path of meshConfig inside that resource
    config: dict[str, Any]
    replaced: list[str] = field(default_factory=list)  # keys it overrode from earlier layers


@dataclass
class MeshConfig:
    """The merged mesh config as users wrote it (Istio defaults are applied by the accessors)."""

    config: dict[str, Any] = field(default_factory=dict)
    layers: list[Layer] = field(default_factory=list)
    # dotted key path inside meshConfig (list items as `[i]`) -> where it was last set
    sources: dict[str, Source] = field(default_factory=dict)

    def overlay(self, layer: Layer) -> list[str]:
        """Merge one layer; returns the key paths it replaced (set by an earlier layer)."""
        self.layers.append(layer)
        replaced: list[str] = []
        _merge(self.config, layer.config, "", layer, self.sources, replaced)
        layer.replaced = replaced
        return replaced

    def get(self, path: str, default: Any = None) -> Any:
        """A value by dotted path, falling back to Istio's default."""
        for tree in (self.config, DEFAULTS):
            node: Any = tree
            for part in path.split("."):
                if not isinstance(node, dict) or part not in node:
                    node = None
                    break
                node = node[part]
            if node is not None:
                return node
        return default

    def source(self, path: str) -> Source:
        """Where a meshConfig key path was set (its nearest set ancestor), or Istio's default."""
        probe = path
        while probe:
            if probe in self.sources:
                found = self.sources[probe]
                return Source(found.resource, found.file, f"{found.field}{path[len(probe) :]}")
            probe = re.sub(r"(\[\d+\]|\.[^.\[]*)$", "", probe) if re.search(r"[.\[]", probe) else ""
        return Source("Istio default", None, f"meshConfig.{path}")

    @property
    def root_namespace(self) -> str:
        return str(self.get("rootNamespace") or ROOT_NAMESPACE)

    @property
    def default_tracing_providers(self) -> list[str]:
        names = self.get("defaultProviders.tracing") or []
        return [str(n) for n in names] if isinstance(names, list) else []

    @property
    def default_metrics_providers(self) -> list[str]:
        names = self.get("defaultProviders.metrics") or []
        return [str(n) for n in names] if isinstance(names, list) else []

    @property
    def extension_providers(self) -> list[dict[str, Any]]:
        """Configured providers, then the built-ins not shadowed by one of the same name."""
        configured = [p for p in list_at(self.config, "extensionProviders") if isinstance(p, dict)]
        names = {str(p.get("name", "")).lower() for p in configured}
        return configured + [p for n, p in BUILTIN_PROVIDERS.items() if n not in names]

    def find_provider(self, name: str) -> tuple[dict[str, Any] | None, int | None]:
        """Istio's fetchProvider: the first provider whose name matches case-insensitively, and
        its index in extensionProviders (None for a built-in)."""
        configured = [p for p in list_at(self.config, "extensionProviders") if isinstance(p, dict)]
        for i, p in enumerate(configured):
            if str(p.get("name", "")).lower() == name.lower():
                return p, i
        builtin = BUILTIN_PROVIDERS.get(name.lower())
        return (builtin, None) if builtin else (None, None)

    @property
    def default_config(self) -> dict[str, Any]:
        """meshConfig.defaultConfig (ProxyConfig) with Istio's default tracing when unset."""
        given = self.config.get("defaultConfig")
        merged = copy.deepcopy(DEFAULTS["defaultConfig"])
        if isinstance(given, dict):
            tracing = given.get("tracing")
            if isinstance(tracing, dict) and any(t in tracing for t in _TRACERS if t != "zipkin"):
                # The tracer is a proto oneof: configuring another one replaces the default zipkin.
                merged.pop("tracing")
            _merge(merged, given, "", None, None, None)
        return merged


def _merge(
    base: dict[str, Any],
    overlay: Mapping[str, Any],
    path: str,
    layer: Layer | None,
    sources: dict[str, Source] | None,
    replaced: list[str] | None,
) -> None:
    for key, value in overlay.items():
        key_path = f"{path}.{key}" if path else str(key)
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value, key_path, layer, sources, replaced)
            continue
        if replaced is not None and key in base and base[key] != value:
            replaced.append(key_path)
        base[key] = copy.deepcopy(value)
        if sources is not None and layer is not None:
            for stale in [p for p in sources if p.startswith(key_path + ".") or p.startswith(key_path + "[")]:
                del sources[stale]
            _record(value, key_path, layer, sources)


def _record(value: Any, path: str, layer: Layer, sources: dict[str, Source]) -> None:
    sources[path] = Source(layer.resource, layer.origin.file, f"{layer.prefix}.{path}")
    if isinstance(value, dict):
        for k, v in value.items():
            _record(v, f"{path}.{k}", layer, sources)


def normalize_proxy_config(
    proxy: dict[str, Any], where: str, origin: Origin, resource: str
) -> tuple[dict[str, Any], list[Finding]]:
    """ProxyConfig with the proto's snake_case field names rewritten to the JSON names.

    Istio's protobuf JSON reader accepts both (`max_path_tag_length` = `maxPathTagLength`), so
    the value is used; the finding says what was read. Map keys that are user data (custom tag
    names, proxyMetadata variables) are left alone.
    """
    notes: list[Finding] = []

    def rename(node: dict[str, Any], path: str, user_keys: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in node.items():
            new = key if user_keys else camel(str(key))
            if new != key:
                notes.append(
                    Finding(
                        code="proxy-config-snake-case",
                        severity="info",
                        resource=resource,
                        file=origin.file,
                        document=origin.document,
                        path=f"{where}.{path}{key}",
                        message=f"`{key}` is the ProxyConfig proto field name; read as `{new}` "
                        "(Istio accepts both spellings)",
                        fix=f"write `{new}`",
                    )
                )
            if isinstance(value, dict):
                child_user = new in ("customTags", "proxyMetadata") and not user_keys
                value = rename(value, f"{path}{key}.", user_keys=child_user)
            out[new] = value
        return out

    return rename(proxy, ""), notes
