"""Loading and checking the Collector's own YAML config.

`load(files, sets, env)` reads one or more files (plain collector YAML or a Kubernetes ConfigMap
whose `data` holds `config.yaml`), expands `${env:VAR}` / `${VAR}` (`${env:VAR:-default}`, `$$`
for a literal `$`), applies `--set a.b.c=v` overrides and returns the raw mapping.
`resolve(raw)` checks it and builds a `CollectorConfig`; `check(raw)` returns only the problems.
Both are pure: they read no files and no environment.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from meshtrace.collector import registry
from meshtrace.collector.catalogue import catalogue, did_you_mean
from meshtrace.collector.component import ComponentID, Kind
from meshtrace.collector.schema import (
    ALL_INTERFACES,
    DEPRECATED_NAME,
    ERROR,
    NOT_APPLIED_LOCALLY,
    NOT_RUN_LOCALLY,
    REMOVED_COMPONENT,
    REMOVED_FIELD,
    TLS_BY_DEFAULT,
    UNDEFINED_REFERENCE,
    UNKNOWN_FIELD,
    WARNING,
    Problem,
    decode,
    host_port,
)

__all__ = ["CollectorConfig", "ConfigError", "Problem", "check", "load", "resolve"]

DEFAULT_CONFIG = Path(__file__).with_name("default_config.yaml")
DEFAULT_METRICS_ADDRESS = "127.0.0.1:8888"
SECTIONS = ("receivers", "processors", "exporters", "connectors", "extensions", "service")
SIGNALS = ("traces", "metrics", "logs")
CONFIGMAP_KEYS = ("config.yaml", "config.yml", "relay", "collector.yaml")


class ConfigError(Exception):
    """A config file that cannot be read or parsed at all."""


# --- service section -------------------------------------------------------------------------


@dataclass
class PipelineSpec:
    receivers: list[str] = field(default_factory=list)
    processors: list[str] = field(default_factory=list)
    exporters: list[str] = field(default_factory=list)


@dataclass
class PrometheusPull:
    host: str = "127.0.0.1"
    port: int = 8888
    without_type_suffix: bool = False
    without_units: bool = False
    without_scope_info: bool = False


@dataclass
class PullExporter:
    prometheus: PrometheusPull | None = None


@dataclass
class PullReader:
    exporter: PullExporter = field(default_factory=PullExporter)


@dataclass
class MetricReader:
    pull: PullReader | None = None
    periodic: dict[str, Any] | None = None


@dataclass
class MetricsTelemetry:
    level: Literal["none", "basic", "normal", "detailed"] = "normal"
    address: str | None = None
    readers: list[MetricReader] = field(default_factory=list)
    # Metric views (rename, drop, aggregate self-metrics): upstream's, not applied by meshtrace.
    views: list[dict[str, Any]] = field(
        default_factory=list,
        metadata={"warning": "metric views are accepted and not applied by meshtrace locally"},
    )


@dataclass
class Telemetry:
    metrics: MetricsTelemetry = field(default_factory=MetricsTelemetry)
    # Logs, traces and resource settings are accepted and not interpreted (only logs.level is).
    logs: dict[str, Any] = field(default_factory=dict)
    traces: dict[str, Any] = field(default_factory=dict)
    resource: dict[str, Any] = field(default_factory=dict)


@dataclass
class Service:
    extensions: list[str] = field(default_factory=list)
    pipelines: dict[str, PipelineSpec] = field(default_factory=dict)
    telemetry: Telemetry = field(default_factory=Telemetry)


# --- resolved config ---------------------------------------------------------------------------


@dataclass
class ComponentConfig:
    id: ComponentID
    kind: Kind
    type: str  # the registered type (after aliases: `otlp` exporter -> `otlp_grpc`)
    config: Any  # the factory's decoded config


@dataclass
class Pipeline:
    name: str  # "traces" or "traces/<name>"
    receivers: list[ComponentID]
    processors: list[ComponentID]
    exporters: list[ComponentID]


@dataclass
class MetricsEndpoint:
    host: str
    port: int
    type_suffix: bool  # append `_total` to counters (a configured Prometheus reader does)


@dataclass
class CollectorConfig:
    components: dict[tuple[Kind, ComponentID], ComponentConfig]
    pipelines: list[Pipeline]
    extensions: list[ComponentID]
    metrics: MetricsEndpoint | None  # None: self-metrics off (level none)
    log_level: str = "info"

    def component(self, kind: Kind, id: ComponentID) -> ComponentConfig:
        return self.components[(kind, id)]


# --- loading -----------------------------------------------------------------------------------


def _extract(docs: list[Any], source: str) -> dict[str, Any]:
    """The collector config among a file's YAML documents (a ConfigMap's data, or the document)."""
    for doc in docs:
        if isinstance(doc, dict) and doc.get("kind") == "ConfigMap":
            data = doc.get("data")
            data = data if isinstance(data, dict) else {}
            keys = [k for k in CONFIGMAP_KEYS if k in data] or [
                k for k in data if str(k).endswith((".yaml", ".yml"))
            ]
            if keys:
                if not isinstance(data[keys[0]], str):
                    raise ConfigError(f"{source}: data.{keys[0]}: expected the config as a string")
                try:
                    inner = yaml.safe_load(data[keys[0]]) or {}
                except (yaml.YAMLError, ValueError) as exc:
                    raise ConfigError(f"{source}: data.{keys[0]}: invalid YAML: {exc}") from exc
                if not isinstance(inner, dict):
                    raise ConfigError(f"{source}: data.{keys[0]}: expected a mapping")
                return inner
    for doc in docs:
        if isinstance(doc, dict) and any(k in doc for k in SECTIONS):
            return doc
    if docs and all(d is None for d in docs):
        return {}
    raise ConfigError(
        f"{source}: no collector config (neither a config mapping nor a ConfigMap with config.yaml)"
    )


def load_text(text: str, source: str = "<config>") -> dict[str, Any]:
    try:
        docs = list(yaml.safe_load_all(text))
    except (yaml.YAMLError, ValueError) as exc:  # ValueError: impossible dates such as 2001-13-45
        raise ConfigError(f"{source}: invalid YAML: {exc}") from exc
    return _extract(docs, source)


_REF = re.compile(r"\$\$|\$\{(?:env:)?([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(value: Any, env: Mapping[str, str], problems: list[Problem], path: str = "") -> Any:
    """`${env:VAR}`, `${VAR}` and `${env:VAR:-default}` in every string; `$$` is a literal `$`.

    A string that is exactly one reference takes the variable's value parsed as YAML (the
    Collector does the same, so `${env:PORT}` can be an int)."""
    if isinstance(value, dict):
        return {k: expand_env(v, env, problems, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, env, problems, f"{path}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str) or "$" not in value:
        return value

    def sub(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        name, default = match[1], match[2]
        if name in env:
            return env[name]
        if default is not None:
            return default
        problems.append(Problem(WARNING, path, f"environment variable {name} is not set: using ''"))
        return ""

    whole = _REF.fullmatch(value)
    result = _REF.sub(sub, value)
    if whole is not None and whole[0] != "$$":
        return _yaml_scalar(result)
    return result


def _yaml_scalar(text: str) -> Any:
    try:
        return yaml.safe_load(text) if text.strip() else text
    except (yaml.YAMLError, ValueError):
        return text


def apply_set(config: dict[str, Any], assignment: str) -> None:
    """`--set a.b.c=v` (or `a::b::c=v`, the Collector's separator): v is parsed as a YAML scalar."""
    key, sep, value = assignment.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {assignment!r}: expected KEY=VALUE")
    parts = key.strip().split("::") if "::" in key else key.strip().split(".")
    node = config
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = _yaml_scalar(value)


def merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge of mappings (later files win; lists are replaced), as the Collector merges --config."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load(
    files: Iterable[Path], sets: Iterable[str] = (), env: Mapping[str, str] | None = None
) -> tuple[dict[str, Any], list[Problem]]:
    """The raw config from files (the built-in default when none), env-expanded, with --set applied."""
    paths = list(files) or [DEFAULT_CONFIG]
    raw: dict[str, Any] = {}
    for path in paths:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
        raw = merge(raw, load_text(text, str(path)))
    problems: list[Problem] = []
    raw = expand_env(raw, env or {}, problems)
    for assignment in sets:
        apply_set(raw, assignment)
    return raw, problems


# --- checking ---------------------------------------------------------------------------------


def _component_config(kind: Kind, type_: str, raw: Any, path: str) -> tuple[Any, list[Problem]]:
    factory = registry.factory(kind, type_)
    config_type = getattr(factory, "config_type", None)
    if config_type is not None:
        config, found = decode(config_type, raw, path)
        hook = getattr(factory, "warnings", None)
        if hook is not None and config is not None and not any(p.severity == ERROR for p in found):
            found += [Problem(WARNING, f"{path}.{key}", message) for key, message in hook(config)]
        return config, found
    problems: list[Problem] = []
    defaults = factory.default_config()
    if raw is not None and not isinstance(raw, dict):
        return defaults, [Problem(ERROR, path, f"expected a mapping, got {raw!r}")]
    _unknown_keys(defaults, raw or {}, path, problems)
    return merge(defaults, raw or {}), problems


def _unknown_keys(defaults: Mapping[str, Any], raw: Mapping[str, Any], path: str, out: list[Problem]) -> None:
    for key, value in raw.items():
        if key not in defaults:
            known = ", ".join(sorted(defaults)) or "none"
            out.append(Problem(ERROR, f"{path}.{key}", f"unknown key {key!r} (known keys: {known})"))
        elif isinstance(defaults[key], dict) and defaults[key] and isinstance(value, dict):
            _unknown_keys(defaults[key], value, f"{path}.{key}", out)


def _all_interfaces(raw: Any, path: str, out: list[Problem]) -> None:
    """Warn about every `endpoint` that binds all interfaces (DESIGN: 127.0.0.1 unless asked)."""
    if isinstance(raw, dict):
        for key, value in raw.items():
            sub = f"{path}.{key}"
            if (
                key == "endpoint"
                and isinstance(value, str)
                and (value.startswith(("0.0.0.0:", "[::]:", ":")) or value in ("0.0.0.0", "::"))
            ):
                message = f"{value} binds all interfaces (reachable from other hosts)"
                out.append(Problem(WARNING, sub, message, ALL_INTERFACES))
            else:
                _all_interfaces(value, sub, out)


def _metrics_endpoint(telemetry: Telemetry, out: list[Problem]) -> MetricsEndpoint | None:
    metrics = telemetry.metrics
    if metrics.level == "none":
        return None
    for i, reader in enumerate(metrics.readers):
        path = f"service.telemetry.metrics.readers[{i}]"
        if reader.periodic is not None:
            out.append(
                Problem(WARNING, f"{path}.periodic", "periodic (push) readers are not supported; ignored")
            )
        if reader.pull is not None and reader.pull.exporter.prometheus is not None:
            prom = reader.pull.exporter.prometheus
            return MetricsEndpoint(prom.host, prom.port, type_suffix=not prom.without_type_suffix)
    address = metrics.address or DEFAULT_METRICS_ADDRESS
    try:
        host, port = host_port(address, "address")
    except ValueError as exc:
        out.append(Problem(ERROR, "service.telemetry.metrics.address", str(exc)))
        return None
    if host in ("0.0.0.0", "::", ""):
        message = f"{address} binds all interfaces"
        out.append(Problem(WARNING, "service.telemetry.metrics.address", message, ALL_INTERFACES))
    return MetricsEndpoint(host, port, type_suffix=False)


def resolve(raw: Mapping[str, Any], upstream: bool = False) -> tuple[CollectorConfig | None, list[Problem]]:
    """The checked config, or None when there is any error; and every problem found.

    Components are checked against the upstream catalogue (what the real Collector accepts), then
    against what meshtrace runs. `upstream=True` checks only what the real Collector would say
    (`render`'s check): no config is built and nothing is "not run locally"."""
    if not isinstance(raw, Mapping):
        return None, [Problem(ERROR, "", "the config must be a mapping")]
    problems: list[Problem] = []
    sections = _sections(raw, upstream, problems)
    service, found = decode(Service, sections.get("service"), "service")
    # Upstream: meshtrace's own "accepted, not applied" warnings do not concern the real Collector.
    problems += [p for p in found if not upstream or p.severity == ERROR]
    # Components first: a pipeline skips those meshtrace does not run (`upstream`: none).
    components, not_run = _components(sections, upstream, problems)
    pipelines = [
        pipeline
        for name, spec in service.pipelines.items()
        if (pipeline := _pipeline(name, spec, sections, upstream, not_run, problems)) is not None
    ]
    if not pipelines and not upstream and not any(p.severity == ERROR for p in problems):
        problems.append(Problem(ERROR, "service.pipelines", "no traces pipeline: nothing to run"))
    extensions = _service_extensions(service, sections["extensions"], not_run, problems)
    for component in components.values():
        prefix = f"{component.kind.section}.{component.id}"
        _check_extension_references(component.config, prefix, sections["extensions"], extensions, problems)
    metrics = _metrics_endpoint(service.telemetry, problems)
    log_level = str(service.telemetry.logs.get("level", "info")).lower()
    if upstream or any(p.severity == ERROR for p in problems):
        return None, problems
    return CollectorConfig(components, pipelines, extensions, metrics, log_level), problems


def _sections(raw: Mapping[str, Any], upstream: bool, problems: list[Problem]) -> dict[str, Any]:
    """The known top-level sections, every component section a mapping (null and wrong types
    become {}); connectors are checked upstream and skipped locally."""
    for key in raw:
        if key not in SECTIONS:
            problems.append(
                Problem(ERROR, str(key), f"unknown key {key!r} (known keys: {', '.join(SECTIONS)})")
            )
    sections = {key: value for key, value in raw.items() if key in SECTIONS}
    for name in SECTIONS[:-1]:
        value = sections.get(name)
        if value is not None and not isinstance(value, Mapping):
            problems.append(Problem(ERROR, name, f"expected a mapping of component ids, got {value!r}"))
        sections[name] = value if isinstance(value, Mapping) else {}
    if sections["connectors"] and not upstream:
        problems.append(
            Problem(WARNING, "connectors", "connectors are not run by meshtrace; skipped", NOT_RUN_LOCALLY)
        )
    if upstream:
        for ref, comp_raw in sections["connectors"].items():
            try:
                type_ = ComponentID.parse(ref).type
            except ValueError as exc:
                problems.append(Problem(ERROR, f"connectors.{ref}", str(exc)))
                continue
            problems += catalogue().check_component("connectors", type_, comp_raw, f"connectors.{ref}")[1]
    return sections


def _components(
    sections: Mapping[str, Any], upstream: bool, problems: list[Problem]
) -> tuple[dict[tuple[Kind, ComponentID], ComponentConfig], set[tuple[Kind, str]]]:
    """Every receiver, processor, exporter and extension checked (against the catalogue when
    `upstream`, else built); and the (kind, id) of those meshtrace does not run."""
    components: dict[tuple[Kind, ComponentID], ComponentConfig] = {}
    not_run: set[tuple[Kind, str]] = set()
    for kind in (Kind.RECEIVER, Kind.PROCESSOR, Kind.EXPORTER, Kind.EXTENSION):
        for ref, comp_raw in sections[kind.section].items():
            path = f"{kind.section}.{ref}"
            try:
                cid = ComponentID.parse(ref)
            except ValueError as exc:
                problems.append(Problem(ERROR, path, str(exc)))
                continue
            if upstream:
                known, upstream_problems = catalogue().check_component(kind.section, cid.type, comp_raw, path)
                problems += upstream_problems
                if known.type == "otlp_grpc":
                    problems += _tls_by_default(comp_raw, path)
                continue
            config = _local_component(kind, cid, comp_raw, path, problems)
            if config is None:
                not_run.add((kind, ref))
            else:
                components[(kind, cid)] = config
    return components, not_run


def _pipeline(
    name: str,
    spec: PipelineSpec,
    sections: Mapping[str, Any],
    upstream: bool,
    not_run: set[tuple[Kind, str]],
    problems: list[Problem],
) -> Pipeline | None:
    """One `service.pipelines` entry with the components it runs; None when it is not a traces
    pipeline meshtrace runs."""
    path = f"service.pipelines.{name}"
    signal, _, _suffix = name.partition("/")
    if signal not in SIGNALS:
        problems.append(Problem(ERROR, path, f"unknown signal {signal!r} (known: {', '.join(SIGNALS)})"))
        return None
    if signal != "traces" and not upstream:
        problems.append(
            Problem(WARNING, path, f"{signal} pipelines are not run by meshtrace; skipped", NOT_RUN_LOCALLY)
        )
        return None
    pipeline = Pipeline(name, [], [], [])
    for kind, ids, target in (
        (Kind.RECEIVER, spec.receivers, pipeline.receivers),
        (Kind.PROCESSOR, spec.processors, pipeline.processors),
        (Kind.EXPORTER, spec.exporters, pipeline.exporters),
    ):
        for i, ref in enumerate(ids):
            ref_path = f"{path}.{kind.section}[{i}]"
            cid = _pipeline_ref(kind, ref, ref_path, sections, upstream, target, problems)
            if cid is not None and (kind, ref) not in not_run:
                target.append(cid)
    for kind, ids, kept in (
        (Kind.RECEIVER, spec.receivers, pipeline.receivers),
        (Kind.EXPORTER, spec.exporters, pipeline.exporters),
    ):
        if not ids:
            problems.append(
                Problem(ERROR, f"{path}.{kind.section}", f"a pipeline needs at least one {kind.value}")
            )
        elif not kept and not upstream and not any(p.severity == ERROR for p in problems):
            problems.append(
                Problem(
                    ERROR,
                    f"{path}.{kind.section}",
                    f"none of this pipeline's {kind.section} is run by meshtrace (see the warnings)",
                    NOT_RUN_LOCALLY,
                )
            )
    return pipeline


def _pipeline_ref(
    kind: Kind,
    ref: str,
    ref_path: str,
    sections: Mapping[str, Any],
    upstream: bool,
    listed: list[ComponentID],
    problems: list[Problem],
) -> ComponentID | None:
    """The component a pipeline names, or None (a connector, undefined, malformed, repeated)."""
    section = sections[kind.section]
    if ref in sections["connectors"] and kind in (Kind.RECEIVER, Kind.EXPORTER):
        if not upstream:
            problems.append(Problem(WARNING, ref_path, f"connector {ref!r} is not run by meshtrace; skipped"))
        return None
    if ref not in section:
        problems.append(
            Problem(
                ERROR,
                ref_path,
                f"{kind.value} {ref!r} is not defined in {kind.section}"
                + did_you_mean(ref, [str(k) for k in section]),
                UNDEFINED_REFERENCE,
            )
        )
        return None
    try:
        cid = ComponentID.parse(ref)
    except ValueError as exc:
        problems.append(Problem(ERROR, ref_path, str(exc)))
        return None
    if cid in listed:
        problems.append(Problem(ERROR, ref_path, f"{ref!r} is listed twice"))
        return None
    return cid


def _service_extensions(
    service: Service, defined: Mapping[str, Any], not_run: set[tuple[Kind, str]], problems: list[Problem]
) -> list[ComponentID]:
    """The extensions `service.extensions` enables that meshtrace runs."""
    extensions: list[ComponentID] = []
    for i, ref in enumerate(service.extensions):
        if ref not in defined:
            problems.append(
                Problem(
                    ERROR,
                    f"service.extensions[{i}]",
                    f"extension {ref!r} is not defined in extensions",
                    UNDEFINED_REFERENCE,
                )
            )
            continue
        if (Kind.EXTENSION, ref) not in not_run:
            extensions.append(ComponentID.parse(ref))
    return extensions


def _extension_references(config: Any, path: str) -> Iterable[tuple[str, str, str]]:
    """(key path, extension id, capability) of every set field marked `{"extension": capability}`."""
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        return
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        sub = f"{path}.{f.name}"
        capability = f.metadata.get("extension")
        if capability is not None and isinstance(value, str):
            yield sub, value, capability
        else:
            yield from _extension_references(value, sub)


def _check_extension_references(
    config: Any,
    path: str,
    defined: Mapping[str, Any],
    enabled: list[ComponentID],
    out: list[Problem],
) -> None:
    """A reference must name a defined extension, enabled in service.extensions, with the
    capability (the Collector refuses to start otherwise: `storage extension not found`)."""
    for key_path, ref, capability in _extension_references(config, path):
        if ref not in defined:
            out.append(Problem(ERROR, key_path, f"extension {ref!r} is not defined in extensions"))
            continue
        cid = ComponentID.parse(ref)
        type_, _ = registry.canonical(Kind.EXTENSION, cid.type)
        if capability not in registry.CAPABILITIES.get(type_, frozenset()):
            kinds = ", ".join(t for t, caps in sorted(registry.CAPABILITIES.items()) if capability in caps)
            out.append(
                Problem(
                    ERROR, key_path, f"extension {ref!r} is not a {capability} extension (types: {kinds})"
                )
            )
        elif cid not in enabled:
            out.append(Problem(ERROR, key_path, f"extension {ref!r} is not enabled in service.extensions"))


def check(config: Mapping[str, Any], upstream: bool = False) -> list[Problem]:
    """Every problem in a raw collector config (errors and warnings), with key paths. Pure.
    `upstream`: only what the real Collector would refuse or warn about (see `resolve`)."""
    return resolve(config, upstream)[1]


def _tls_by_default(raw: Any, path: str) -> list[Problem]:
    """The Collector's gRPC exporters use TLS unless `tls.insecure: true`: against a plaintext
    receiver (the usual in-cluster collector or Jaeger) every export fails its handshake."""
    if not isinstance(raw, Mapping):
        return []
    endpoint = str(raw.get("endpoint") or "")
    tls: Mapping[str, Any] = raw["tls"] if isinstance(raw.get("tls"), Mapping) else {}
    if not endpoint or endpoint.startswith("https://") or tls.get("insecure") is True:
        return []
    if any(tls.get(k) for k in ("ca_file", "ca_pem", "cert_file", "cert_pem", "insecure_skip_verify")):
        return []  # TLS settings given: TLS is meant
    return [
        Problem(
            WARNING,
            f"{path}.tls.insecure",
            f"the Collector dials {endpoint} with TLS (on by default for gRPC exporters): if that "
            "endpoint is plaintext, every export fails; set tls.insecure: true for plaintext, or "
            "tls.ca_file for TLS",
            TLS_BY_DEFAULT,
        )
    ]


def _local_component(kind: Kind, cid: ComponentID, raw: Any, path: str, out: list[Problem]) -> Any:
    """The component meshtrace runs for `cid`, checked against upstream then against meshtrace's
    own model; None when upstream refuses it or meshtrace does not run it (problems say why)."""
    type_, alias_warning = registry.canonical(kind, cid.type)
    found, upstream = catalogue().check_component(kind.section, type_, raw, path)
    if (
        found.entry is None
        and type_ in registry.TABLES[kind]
        and cid.type not in catalogue().removed.get(kind.section, {})
    ):
        upstream = []  # meshtrace's own component (the trace store, the query API): not upstream's
    elif found.entry is None:
        out += upstream
        return None
    if alias_warning:
        code = REMOVED_COMPONENT if type_ != cid.type and cid.type == "logging" else DEPRECATED_NAME
        out.append(Problem(WARNING, path, alias_warning, code))
    # Removed fields meshtrace still reads (the seed's `loglevel`) are its model's warnings.
    out += [p for p in upstream if p.code != REMOVED_FIELD]
    if type_ not in registry.TABLES[kind]:
        out.append(
            Problem(
                WARNING,
                path,
                f"{kind.value} type {found.type!r} is a Collector {catalogue().version} component that "
                "meshtrace does not run locally: skipped here (`meshtrace render` keeps it)",
                NOT_RUN_LOCALLY,
            )
        )
        return None
    if kind in (Kind.RECEIVER, Kind.EXTENSION):
        _all_interfaces(raw, path, out)
    config, found_problems = _component_config(kind, type_, raw, path)
    reported = {p.path for p in upstream}
    for problem in found_problems:
        if problem.code == UNKNOWN_FIELD:
            if problem.path in reported:
                continue  # upstream does not know it either: already an error
            key_path = problem.path[len(path) + 1 :].split(".")
            if catalogue().knows_key(kind.section, found.type, [k.split("[")[0] for k in key_path]):
                problem = Problem(
                    WARNING,
                    problem.path,
                    f"accepted by the Collector {catalogue().version} but not applied by meshtrace locally",
                    NOT_APPLIED_LOCALLY,
                )
        out.append(problem)
    return ComponentConfig(cid, kind, type_, config)
