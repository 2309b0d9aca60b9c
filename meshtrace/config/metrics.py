"""Istio's standard metrics resolved for the prometheus provider as istiod does
(telemetry.go `mergeMetrics`): which directions report, and each metric's overrides merged
mesh -> namespace -> workload key by key, tag override values as CEL."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from meshtrace.cel import check, mixer_to_cel
from meshtrace.config.model import Source, Telemetry, list_at
from meshtrace.config.resolution import DIRECTIONS, MODES, Resolution, tel_source
from meshtrace.document import MetricOverride, Metrics, TagOverride

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


def _provider_names(entry: Mapping[str, Any]) -> list[str]:
    return [str(p.get("name")) for p in list_at(entry, "providers") if isinstance(p, dict) and p.get("name")]


class _Merge:
    """Overrides applied in order: per direction, metric -> (disabled, tag overrides), and the
    directions whose ALL_METRICS is disabled (istiod keys that by provider and mode; any later
    override touching the direction turns it back on)."""

    def __init__(self, r: Resolution) -> None:
        self.r = r
        self.per: dict[str, dict[str, tuple[bool, dict[str, TagOverride]]]] = {d: {} for d in DIRECTIONS}
        self.off: dict[str, Source] = {}

    def apply(self, tel: Telemetry, base: str, override: dict[str, Any]) -> None:
        raw_match = override.get("match")
        match: dict[str, Any] = raw_match if isinstance(raw_match, dict) else {}
        directions = MODES.get(str(match.get("mode") or "CLIENT_AND_SERVER"), DIRECTIONS)
        # No metric and no customMetric selects every metric, like ALL_METRICS.
        is_all = "customMetric" not in match and match.get("metric") in (None, "ALL_METRICS")
        if is_all and override.get("disabled") is True:
            for direction in directions:
                self.off[direction] = tel_source(tel, f"{base}.disabled")
            return
        for direction in directions:
            self.off.pop(direction, None)
        if "customMetric" in match:
            metrics = [str(match["customMetric"])]
        elif not is_all:
            metrics = [str(match["metric"])]
        else:
            metrics = list(STANDARD_METRICS)
        tags = override.get("tagOverrides")
        for direction in directions:
            for metric in metrics:
                disabled, tag_overrides = self.per[direction].get(metric, (False, {}))
                mkey = f"metrics.{direction}.{metric}"
                if isinstance(override.get("disabled"), bool):
                    disabled = override["disabled"]
                    self.r.sources[f"{mkey}.disabled"] = tel_source(tel, f"{base}.disabled")
                for tag, spec in tags.items() if isinstance(tags, dict) else []:
                    tag_path = f"{base}.tagOverrides.{tag}"
                    tag_overrides[str(tag)] = tag_override(self.r, tel, tag_path, spec)
                    self.r.sources[f"{mkey}.tag_overrides.{tag}"] = tel_source(tel, tag_path)
                self.per[direction][metric] = (disabled, tag_overrides)


def resolve_metrics(r: Resolution, chain: list[tuple[str, Telemetry]]) -> Metrics:
    """telemetry.go mergeMetrics for the prometheus provider."""
    entries = [(tel, i, m) for _scope, tel in chain for i, m in tel.entries("metrics")]
    defaults = r.mesh.default_metrics_providers
    in_scope = list(defaults)
    scope_src = r.mesh.source("defaultProviders.metrics")
    for tel, i, m in entries:
        names = _provider_names(m)
        if names:
            in_scope, scope_src = names, tel_source(tel, f"spec.metrics[{i}].providers")
    active = not entries and "prometheus" in defaults
    merge = _Merge(r)
    parent = list(defaults)
    for tel, i, m in entries:
        names = _provider_names(m) or parent
        parent = names
        if "prometheus" not in names or "prometheus" not in in_scope:
            continue
        active = True
        for oi, override in enumerate(list_at(m, "overrides")):
            if isinstance(override, dict):
                merge.apply(tel, f"spec.metrics[{i}].overrides[{oi}]", override)
    on = {d: active and d not in merge.off for d in DIRECTIONS}
    for direction in DIRECTIONS:
        r.sources[f"metrics.{direction}_enabled"] = merge.off.get(direction, scope_src)
    enabled = any(on.values())
    r.sources["metrics.enabled"] = next(iter(merge.off.values())) if merge.off and not enabled else scope_src
    per_direction: dict[str, dict[str, MetricOverride]] = {}
    for direction in DIRECTIONS:
        slots: dict[str, tuple[bool, dict[str, TagOverride]]] = {m: (False, {}) for m in STANDARD_METRICS}
        slots.update(merge.per[direction])
        per_direction[direction] = {
            m: MetricOverride(disabled=slots[m][0], tag_overrides=slots[m][1]) for m in sorted(slots)
        }
    return Metrics(
        enabled=enabled,
        client_enabled=on["client"],
        server_enabled=on["server"],
        client=per_direction["client"],
        server=per_direction["server"],
    )


def tag_override(r: Resolution, tel: Telemetry, path: str, spec: Any) -> TagOverride:
    spec = spec if isinstance(spec, dict) else {}
    if spec.get("operation") == "REMOVE":
        return TagOverride(operation="REMOVE")
    value = str(spec.get("value", ""))
    cel = mixer_to_cel(value)
    if cel is not None:
        r.note(f"{tel.meta.ref} {path}: {value!r} is the retired Mixer syntax; evaluated as the CEL {cel!r}")
        value = cel
    problem = check(value)
    if problem is not None:
        r.note(f"{tel.meta.ref} {path}: {value!r}: {problem}; the sidecar drops this label, as Envoy does")
    return TagOverride(operation="UPSERT", value=value)
