"""`render --profile production`: the guide's production intent, applied instead of kept as comments.

The seed states its production choices in resources that never take effect: a 10% sampling
Telemetry beside the 100% one Istio applies, a 10% IstioOperator overlaid by a 100% one, and a
tuned collector ConfigMap replaced by the quick start's. Without a profile `render` keeps what
Istio and kubectl would apply (and says what is lost); with `production` it merges them:

- root-namespace Telemetries without a selector are merged into the one Istio applies (the
  oldest); for tracing the lowest `randomSamplingPercentage` wins (the production rate), custom
  tags are united (the production resource's value wins);
- `defaultConfig.tracing.sampling` is set to the lowest rate any IstioOperator sets;
- the settings of earlier definitions of the collector ConfigMap are merged into the one in
  effect: a capacity setting (batch sizes, queue sizes, consumers, message sizes, memory limits)
  takes the larger value, a missing one is added; an exporter's queue and retry settings go to the
  exporter of the same type in effect; samplers are not added (the mesh already samples: a second
  sampler multiplies the rates);
- the `debug` exporter leaves every pipeline that has another exporter (it prints every span).

Every merge or override is returned as a line naming the input resources, for the README and the
changed manifest."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from meshtrace.config.loader import Bundle
from meshtrace.config.model import ConfigMap, Telemetry
from meshtrace.deploy.collector import config_definitions
from meshtrace.deploy.kube import base, input_ref

PROFILES = ("quickstart", "production")
SAMPLERS = ("probabilistic_sampler", "tail_sampling")
# Exporter settings that tune delivery rather than say where to send.
DELIVERY = ("sending_queue", "retry_on_failure", "timeout", "compression")
DEBUG_EXPORTER = "debug"


@dataclass
class Applied:
    bundle: Bundle
    changes: list[str] = field(default_factory=list)  # what was merged or overridden, from where


def _rate(tel: Telemetry) -> float | None:
    rates = [e.get("randomSamplingPercentage") for _i, e in tel.entries("tracing")]
    found = [float(r) for r in rates if isinstance(r, int | float)]
    return min(found) if found else None


def _telemetries(bundle: Bundle, changes: list[str]) -> None:
    root = bundle.mesh.root_namespace
    wide = sorted(
        (t for t in bundle.telemetries if t.namespace == root and t.namespace_wide and t.valid),
        key=lambda t: t.sort_key,
    )
    if len(wide) < 2:
        return
    target, others = wide[0], wide[1:]
    rated = [t for t in wide if _rate(t) is not None]
    production = min(rated, key=lambda t: _rate(t) or 0.0) if rated else None
    spec = copy.deepcopy(target.spec)
    for other in others:
        for section in ("tracing", "metrics", "accessLogging"):
            entries = other.spec.get(section)
            if not isinstance(entries, list) or not entries:
                continue
            if not isinstance(spec.get(section), list) or not spec[section]:
                spec[section] = copy.deepcopy(entries)
                changes.append(
                    f"{target.meta.ref}: {section} taken from {input_ref(other.meta)}, which Istio would "
                    f"ignore (a second selector-less Telemetry in {root})."
                )
                continue
            if section != "tracing":
                continue
            mine, theirs = spec[section][0], entries[0]
            if isinstance(mine, dict) and isinstance(theirs, dict):
                tags = {**(mine.get("customTags") or {}), **(theirs.get("customTags") or {})}
                if other is not production:
                    tags = {**(theirs.get("customTags") or {}), **(mine.get("customTags") or {})}
                if tags:
                    mine["customTags"] = tags
                changes.append(f"{target.meta.ref}: tracing customTags of {input_ref(other.meta)} merged in.")
    if production is not None and production is not target:
        rate = _rate(production)
        for entry in spec.get("tracing") or []:
            old = entry.get("randomSamplingPercentage") if isinstance(entry, dict) else rate
            if isinstance(entry, dict) and old != rate:
                entry["randomSamplingPercentage"] = rate
                changes.append(
                    f"{target.meta.ref}: randomSamplingPercentage {old} -> {rate}, the production rate "
                    f"of {input_ref(production.meta)}."
                )
    target.spec = spec
    bundle.telemetries = [t for t in bundle.telemetries if t not in others]


def _mesh_sampling(bundle: Bundle, changes: list[str]) -> None:
    rates = []
    for layer in bundle.mesh.layers:
        tracing = (layer.config.get("defaultConfig") or {}).get("tracing")
        if isinstance(tracing, dict) and isinstance(tracing.get("sampling"), int | float):
            rates.append((float(tracing["sampling"]), layer))
    if not rates:
        return
    rate, layer = min(rates, key=lambda r: r[0])
    tracing = (bundle.mesh.config.get("defaultConfig") or {}).get("tracing")
    if isinstance(tracing, dict) and tracing.get("sampling") != rate:
        changes.append(
            f"meshConfig.defaultConfig.tracing.sampling {tracing.get('sampling')} -> {rate}, the "
            f"production rate of {layer.resource} ({base(layer.origin.file)})."
        )
        tracing["sampling"] = rate


def _larger(mine: Any, theirs: Any) -> Any:
    if isinstance(mine, int | float) and isinstance(theirs, int | float) and not isinstance(mine, bool):
        return max(mine, theirs)
    return mine


def _merge(mine: dict[str, Any], theirs: dict[str, Any], path: str, changes: list[str], src: str) -> None:
    """Capacity tuning of `theirs` into `mine`: larger numbers win, missing keys are added."""
    for key, value in theirs.items():
        here = f"{path}.{key}"
        if key not in mine:
            mine[key] = copy.deepcopy(value)
            changes.append(f"collector config {here}: {value!r} added from {src}.")
        elif isinstance(mine[key], dict) and isinstance(value, dict):
            _merge(mine[key], value, here, changes, src)
        elif _larger(mine[key], value) != mine[key]:
            changes.append(f"collector config {here}: {mine[key]!r} -> {value!r} (the tuned value of {src}).")
            mine[key] = value


def _earlier_configs(bundle: Bundle, cm: ConfigMap) -> list[tuple[str, dict[str, Any]]]:
    last = (cm.meta.patches or [cm.meta.origin])[-1].file  # the definition in effect
    found = []
    for doc, config in config_definitions(bundle, cm):
        if doc.origin.file != last and isinstance(config, dict):
            found.append((f"{cm.meta.ref} ({base(doc.origin.file)})", config))
    return found


def _collector(bundle: Bundle, changes: list[str]) -> None:
    for cm in bundle.config_maps:
        if cm.collector_config is None:
            continue
        config = copy.deepcopy(cm.collector_config)
        for src, earlier in _earlier_configs(bundle, cm):
            for section in ("receivers", "processors", "extensions"):
                mine = config.get(section)
                theirs = earlier.get(section)
                if not isinstance(mine, dict) or not isinstance(theirs, dict):
                    continue
                for cid, settings in theirs.items():
                    if cid.split("/", 1)[0] in SAMPLERS:
                        changes.append(
                            f"collector config {section}.{cid} of {src} not added: Istio already samples "
                            "(a second sampler multiplies the rates)."
                        )
                    elif cid in mine and isinstance(mine[cid], dict) and isinstance(settings, dict):
                        _merge(mine[cid], settings, f"{section}.{cid}", changes, src)
            exporters = config.get("exporters")
            for cid, settings in (earlier.get("exporters") or {}).items():
                if not isinstance(exporters, dict) or not isinstance(settings, dict):
                    continue
                type_ = cid.split("/", 1)[0]
                for mid, mine in exporters.items():
                    if mid.split("/", 1)[0] == type_ and isinstance(mine, dict):
                        delivery = {k: v for k, v in settings.items() if k in DELIVERY}
                        _merge(mine, delivery, f"exporters.{mid}", changes, src)
        _drop_debug(config, cm, changes)
        cm.collector_config = config


def _drop_debug(config: dict[str, Any], cm: ConfigMap, changes: list[str]) -> None:
    pipelines = ((config.get("service") or {}).get("pipelines")) or {}
    used = set()
    for name, pipeline in pipelines.items():
        exporters = [str(e) for e in (pipeline or {}).get("exporters") or []]
        debug = [e for e in exporters if e.split("/", 1)[0] in (DEBUG_EXPORTER, "logging")]
        if debug and len(debug) < len(exporters):
            pipeline["exporters"] = [e for e in exporters if e not in debug]
            changes.append(
                f"collector config service.pipelines.{name}: {', '.join(debug)} removed ({cm.meta.ref}): "
                "it writes every span to the collector's log."
            )
        used |= set(pipeline.get("exporters") or [])
    for cid in list(config.get("exporters") or {}):
        if cid.split("/", 1)[0] in (DEBUG_EXPORTER, "logging") and cid not in used:
            del config["exporters"][cid]


def production(bundle: Bundle) -> Applied:
    """A copy of `bundle` with the production intent applied, and the list of changes."""
    out = Applied(copy.deepcopy(bundle))
    _telemetries(out.bundle, out.changes)
    _mesh_sampling(out.bundle, out.changes)
    _collector(out.bundle, out.changes)
    return out
