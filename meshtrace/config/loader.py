"""Load Kubernetes/Istio YAML from files and folders into a `Bundle` of typed resources.

Never raises on bad input: every problem becomes a `Finding` naming the file, the document
index and the key path. Folders are read like `kubectl apply -f DIR` (not recursive, files by
name: .yaml, .yml, .json); a folder with no such files whose subfolders hold some (a guide's
`manifests/`) is read one level down, with an info finding saying so. A document with the
same kind/namespace/name as an earlier one is merged into it as a patch (maps merged, lists
of named items merged by name, other lists replaced), as the seed's resource-limits.yaml
expects of its Deployment.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from meshtrace.config import schema
from meshtrace.config.mesh import Layer, MeshConfig, normalize_proxy_config
from meshtrace.config.model import (
    ConfigMap,
    Container,
    ContainerPort,
    Deployment,
    Document,
    Finding,
    HorizontalPodAutoscaler,
    Ignored,
    IstioOperator,
    Meta,
    Namespace,
    Origin,
    PrometheusRule,
    SecurityResource,
    Service,
    ServicePort,
    Telemetry,
    list_at,
    map_at,
)

SUFFIXES = (".yaml", ".yml", ".json")
_SEPARATOR = re.compile(r"^---(\s.*)?$")
_END = re.compile(r"^\.\.\.\s*$")
INJECT = "sidecar.istio.io/inject"  # pod label (or older annotation) opting in or out

# Stable codes of the injection decision's reasons (docs/lint.md, "Injection reasons"): code
# that acts on a reason matches these, never the text.
POD_OPT_OUT = "pod-opt-out"
POD_OPT_IN = "pod-opt-in"
NAMESPACE_UNKNOWN = "namespace-unknown"
NAMESPACE_DISABLED = "namespace-injection-disabled"
NAMESPACE_UNLABELLED = "namespace-unlabelled"
NAMESPACE_LABELLED = "namespace-labelled"


@dataclass(frozen=True)
class Injection:
    """Why Istio would or would not inject a sidecar: a stable `code` and the text for people
    (what `str()` and f-strings show)."""

    code: str
    text: str

    def __str__(self) -> str:
        return self.text


CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}


@dataclass
class Bundle:
    """Everything read from the given paths."""

    files: list[str] = field(default_factory=list)
    documents: list[Document] = field(default_factory=list)  # as written, before merging
    namespaces: dict[str, Namespace] = field(default_factory=dict)
    deployments: list[Deployment] = field(default_factory=list)
    services: list[Service] = field(default_factory=list)
    config_maps: list[ConfigMap] = field(default_factory=list)
    telemetries: list[Telemetry] = field(default_factory=list)
    peer_authentications: list[SecurityResource] = field(default_factory=list)
    authorization_policies: list[SecurityResource] = field(default_factory=list)
    destination_rules: list[SecurityResource] = field(default_factory=list)
    istio_operators: list[IstioOperator] = field(default_factory=list)
    hpas: list[HorizontalPodAutoscaler] = field(default_factory=list)
    prometheus_rules: list[PrometheusRule] = field(default_factory=list)
    ignored: list[Ignored] = field(default_factory=list)
    mesh: MeshConfig = field(default_factory=MeshConfig)
    problems: list[Finding] = field(default_factory=list)

    def deployment(self, name: str, namespace: str) -> Deployment | None:
        return next((d for d in self.deployments if d.name == name and d.namespace == namespace), None)

    def service(self, name: str, namespace: str) -> Service | None:
        return next((s for s in self.services if s.name == name and s.namespace == namespace), None)

    def config_map(self, name: str, namespace: str) -> ConfigMap | None:
        return next((c for c in self.config_maps if c.name == name and c.namespace == namespace), None)

    def selected_by(self, svc: Service) -> list[Deployment]:
        """The Deployments a Service sends to: its namespace's whose pod labels match its
        selector (a Service without a selector selects none)."""
        if not svc.selector:
            return []
        return [
            d
            for d in self.deployments
            if d.namespace == svc.namespace and all(d.pod_labels.get(k) == v for k, v in svc.selector.items())
        ]

    def services_for_host(self, service: str) -> tuple[Service | None, Service | None]:
        """How istiod's LookupCluster sees a provider's `service` (`[namespace/]host`): the Service
        whose full host name it is, and else a Service it merely abbreviates (`name`,
        `name.namespace`, `name.namespace.svc`), which istiod does not find."""
        host = service.rsplit("/", 1)[-1]
        exact = next((s for s in self.services if s.host == host), None)
        short = next(
            (
                s
                for s in self.services
                if host in (s.name, f"{s.name}.{s.namespace}", f"{s.name}.{s.namespace}.svc")
            ),
            None,
        )
        return exact, None if exact else short

    def sidecar_injected(
        self, namespace: str, pod_labels: Mapping[str, str], pod_annotations: Mapping[str, str]
    ) -> tuple[bool | None, Injection]:
        """Istio's injection decision and why; None when the namespace is not in the manifests
        and the pod does not opt out (then nothing can be said). Istio decides in two steps. Its
        webhooks select by labels only: a namespace labelled `istio-injection=enabled`, or with
        `istio.io/rev` and no `istio-injection` label, unless the pod is labelled
        `sidecar.istio.io/inject=false`; or, in a namespace with neither label, a pod labelled
        `sidecar.istio.io/inject=true` (or `istio.io/rev`). Then the injector reads
        `sidecar.istio.io/inject` (the label, else the older annotation): "false" opts the pod
        out, anything else keeps the default (inject)."""
        label = pod_labels.get(INJECT)
        value, where = (label, "label") if label is not None else (pod_annotations.get(INJECT), "annotation")
        if value == "false":  # an opt-out on purpose is the reason to give, whatever the namespace
            return False, Injection(POD_OPT_OUT, f"pod {where} {INJECT}=false")
        ns = self.namespaces.get(namespace)
        if ns is None:
            return None, Injection(NAMESPACE_UNKNOWN, f"Namespace {namespace} is not in the manifests")
        ns_injection = ns.labels.get("istio-injection")
        if ns_injection is not None and ns_injection != "enabled":
            return False, Injection(
                NAMESPACE_DISABLED, f"Namespace {namespace} has istio-injection={ns_injection}"
            )
        if ns_injection is None and "istio.io/rev" not in ns.labels:
            if label == "true" or "istio.io/rev" in pod_labels:
                text = f"pod label {INJECT}={label}" if label else "pod label istio.io/rev"
                return True, Injection(POD_OPT_IN, text)
            text = f"Namespace {namespace} has neither istio-injection=enabled nor istio.io/rev"
            return False, Injection(NAMESPACE_UNLABELLED, text)
        return True, Injection(NAMESPACE_LABELLED, f"Namespace {namespace} is labelled for injection")

    @property
    def unreadable(self) -> list[Finding]:
        """Paths that could not be read at all (missing, unreadable, an empty folder)."""
        return [p for p in self.problems if p.code in ("read-error", "empty-folder")]

    @property
    def all_namespaces(self) -> list[str]:
        """Namespaces defined or used by any resource, sorted."""
        names = set(self.namespaces)
        for group in (self.deployments, self.services, self.config_maps, self.telemetries):
            names.update(r.meta.namespace for r in group)
        return sorted(n for n in names if n)


def load(paths: Sequence[str | Path]) -> Bundle:
    """Read every file and folder in `paths` (in the order given)."""
    bundle = Bundle()
    for file in _expand(paths, bundle.problems):
        bundle.files.append(str(file))
        try:
            text = file.read_text(encoding="utf-8-sig")  # a BOM is not part of the YAML
        except (OSError, UnicodeDecodeError) as e:
            bundle.problems.append(_problem("read-error", f"cannot read file: {e}", str(file)))
            continue
        for origin, data, source in _documents(text, str(file), bundle.problems):
            bundle.documents.append(Document(origin, data, source))
    _build(bundle)
    return bundle


def _problem(code: str, message: str, file: str, **kw: Any) -> Finding:
    return Finding(code=code, severity=kw.pop("severity", "error"), message=message, file=file, **kw)


def _manifest_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in SUFFIXES)


def _expand(paths: Sequence[str | Path], problems: list[Finding]) -> list[Path]:
    files: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found = _manifest_files(path)
            if not found:
                # A guide's folder keeps its manifests one level down (guide/manifests/).
                for sub in sorted(p for p in path.iterdir() if p.is_dir()):
                    below = _manifest_files(sub)
                    if below:
                        found += below
                        message = f"no manifests in the folder itself: read the {len(below)} in {sub}"
                        problems.append(_problem("nested-folder", message, str(path), severity="info"))
            if not found:
                problems.append(_problem("empty-folder", "no .yaml/.yml/.json files in folder", str(path)))
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            problems.append(_problem("read-error", "no such file or folder", str(path)))
    return files


def _documents(text: str, file: str, problems: list[Finding]) -> list[tuple[Origin, dict[str, Any], str]]:
    """Split on `---` lines ourselves so that one unparsable document does not hide the rest."""
    chunks: list[tuple[int, list[str]]] = [(1, [])]
    for number, line in enumerate(text.splitlines(), start=1):
        if _SEPARATOR.match(line):
            chunks.append((number + 1, []))
        elif not _END.match(line):
            chunks[-1][1].append(line)
    out: list[tuple[Origin, dict[str, Any], str]] = []
    index = 0
    for start, lines in chunks:
        content = [i for i, ln in enumerate(lines) if ln.strip() and not ln.lstrip().startswith("#")]
        if not content:
            continue
        # The document starts at its first line of content (leading comments are not part of it).
        body = "\n".join(lines[content[0] :])
        origin = Origin(file, index, start + content[0])
        index += 1
        try:
            data = yaml.safe_load(body)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            error_line = origin.line + int(mark.line) if mark is not None else origin.line
            problems.append(
                _problem(
                    "yaml-error",
                    f"YAML does not parse: {getattr(e, 'problem', None) or e}",
                    file,
                    document=origin.document,
                    line=error_line,
                    fix="fix the YAML syntax (indentation, quoting)",
                )
            )
            continue
        if data is None:
            continue
        if not isinstance(data, dict):
            problems.append(
                _problem(
                    "not-a-resource",
                    f"document is a {type(data).__name__}, not a Kubernetes object",
                    file,
                    document=origin.document,
                    line=start,
                )
            )
            continue
        if data.get("kind") == "List" and isinstance(data.get("items"), list):
            out.extend((origin, item, "") for item in data["items"] if isinstance(item, dict))
            continue
        out.append((origin, data, body))
    return out


class _Reader:
    """Typed access to one document's fields; a wrong type is a finding, never an exception."""

    def __init__(self, bundle: Bundle, origin: Origin, ref: str) -> None:
        self.bundle, self.origin, self.ref = bundle, origin, ref

    def problem(self, path: str, message: str, severity: str = "error", code: str = "invalid-field") -> None:
        self.bundle.problems.append(
            Finding(
                code=code,
                severity=severity,  # type: ignore[arg-type]
                message=message,
                resource=self.ref,
                file=self.origin.file,
                path=path,
                document=self.origin.document,
                line=self.origin.line,
            )
        )

    def get(self, data: Any, path: str, kind: type, default: Any) -> Any:
        node = data
        for part in path.split("."):
            if not isinstance(node, dict):
                return default
            node = node.get(part)
            if node is None:
                return default
        if kind is int and isinstance(node, str) and node.isdigit():
            return int(node)
        if not isinstance(node, kind) or (kind is int and isinstance(node, bool)):
            self.problem(path, f"must be a {kind.__name__}, got {type(node).__name__}")
            return default
        return node

    def strings(self, data: Any, path: str) -> dict[str, str]:
        mapping = self.get(data, path, dict, {})
        return {str(k): "" if v is None else str(v) for k, v in mapping.items()}


def _meta(reader: _Reader, data: dict[str, Any], origin: Origin) -> Meta:
    kind = str(data.get("kind", ""))
    namespace = reader.get(data, "metadata.namespace", str, "")
    if not namespace and kind not in CLUSTER_SCOPED:
        namespace = "default"  # kubectl's namespace when the document names none
    return Meta(
        kind=kind,
        api_version=str(data.get("apiVersion", "")),
        name=reader.get(data, "metadata.name", str, ""),
        namespace=namespace,
        labels=reader.strings(data, "metadata.labels"),
        annotations=reader.strings(data, "metadata.annotations"),
        creation_timestamp=_timestamp(reader, data),
        origin=origin,
    )


def _timestamp(reader: _Reader, data: dict[str, Any]) -> str | None:
    """metadata.creationTimestamp as a UTC RFC 3339 string (sortable): YAML reads an unquoted one
    as a datetime, a quoted one as a string; both must order the same way."""
    value = map_at(data, "metadata").get("creationTimestamp")
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            reader.problem("metadata.creationTimestamp", f"{value!r} is not an RFC 3339 timestamp")
            return None
    if not isinstance(value, datetime):
        reader.problem("metadata.creationTimestamp", "must be an RFC 3339 timestamp")
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _patch(base: dict[str, Any], overlay: dict[str, Any], path: str = "") -> list[str]:
    """Strategic-merge-like: maps merge, lists of named maps merge by name, other lists replace.
    Returns the key paths whose earlier value changed."""
    changed: list[str] = []
    for key, value in overlay.items():
        key_path = f"{path}['{key}']" if "." in str(key) else f"{path}.{key}" if path else str(key)
        old = base.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            changed += _patch(old, value, key_path)
        elif isinstance(value, list) and isinstance(old, list) and _named(value) and _named(old):
            by_name = {item["name"]: item for item in old}
            for item in value:
                if item["name"] in by_name:
                    changed += _patch(by_name[item["name"]], item, f"{key_path}[{item['name']}]")
                else:
                    old.append(copy.deepcopy(item))
        else:
            if key in base and old != value:
                changed.append(key_path)
            base[key] = copy.deepcopy(value)
    return changed


def _named(items: list[Any]) -> bool:
    return bool(items) and all(isinstance(i, dict) and "name" in i for i in items)


def _build(bundle: Bundle) -> None:
    merged: dict[tuple[str, str, str], tuple[dict[str, Any], Origin, list[Origin]]] = {}
    for doc in bundle.documents:
        data = doc.data
        reader = _Reader(bundle, doc.origin, doc.ref)
        kind, api_version = data.get("kind"), data.get("apiVersion")
        if not isinstance(kind, str) or not kind or not isinstance(api_version, str) or not api_version:
            reader.problem("kind" if not kind else "apiVersion", "kind and apiVersion are required")
            continue
        name = reader.get(data, "metadata.name", str, "")
        if not name:
            reader.problem("metadata.name", "metadata.name is required")
            continue
        meta = _meta(reader, data, doc.origin)
        if _builder(kind, api_version) is None:
            bundle.ignored.append(Ignored(kind, api_version, name, meta.namespace, doc.origin))
            continue
        if kind == "Telemetry":
            _check_telemetry(reader, data)
        key = (kind, meta.namespace, name)
        if key in merged:
            base, first, patches = merged[key]
            changed = _patch(base, data)
            patches.append(doc.origin)
            message = (
                f"{doc.ref} is also defined in {first.file} (document {first.document}); "
                "merged into it as a patch, like kubectl apply"
            )
            if changed:
                shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
                message += f": this document's values replace the earlier ones at {shown}"
            reader.problem(
                "metadata.name",
                message,
                severity="warning" if changed else "info",
                code="duplicate-resource",
            )
        else:
            merged[key] = (copy.deepcopy(data), doc.origin, [])
    for (kind, _ns, _name), (data, origin, patches) in merged.items():
        # Fields were checked document by document above: do not report them twice.
        meta = _meta(_Reader(Bundle(), origin, ""), data, origin)
        meta.patches = patches
        reader = _Reader(bundle, origin, meta.ref)
        build = _builder(kind, str(data.get("apiVersion")))
        assert build is not None
        build(bundle, reader, meta, data)
    _build_mesh(bundle)


def _builder(kind: str, api_version: str) -> Callable[[Bundle, _Reader, Meta, dict[str, Any]], None] | None:
    group = api_version.rsplit("/", 1)[0] if "/" in api_version else ""
    table: dict[tuple[str, str], Callable[[Bundle, _Reader, Meta, dict[str, Any]], None]] = {
        ("apps", "Deployment"): _deployment,
        ("", "Service"): _service,
        ("", "Namespace"): _namespace,
        ("", "ConfigMap"): _config_map,
        ("telemetry.istio.io", "Telemetry"): _telemetry,
        ("security.istio.io", "PeerAuthentication"): _security("peer_authentications"),
        ("security.istio.io", "AuthorizationPolicy"): _security("authorization_policies"),
        ("networking.istio.io", "DestinationRule"): _security("destination_rules"),
        ("install.istio.io", "IstioOperator"): _istio_operator,
        ("autoscaling", "HorizontalPodAutoscaler"): _hpa,
        ("monitoring.coreos.com", "PrometheusRule"): _prometheus_rule,
    }
    return table.get((group, kind))


def _deployment(bundle: Bundle, r: _Reader, meta: Meta, data: dict[str, Any]) -> None:
    containers = []
    for i, c in enumerate(r.get(data, "spec.template.spec.containers", list, [])):
        if not isinstance(c, dict):
            r.problem(f"spec.template.spec.containers[{i}]", "container must be a mapping")
            continue
        env: dict[str, str | None] = {}
        for j, e in enumerate(r.get(c, "env", list, [])):
            if isinstance(e, dict) and "name" in e:
                value = e.get("value")
                if value is not None and not isinstance(value, str):
                    # Kubernetes reads YAML 1.1 too (`on`, `yes`, 1.0 are not strings) and refuses a
                    # non-string env value; passing str(True) on would run what kubectl refuses.
                    r.problem(
                        f"spec.template.spec.containers[{i}].env[{j}].value",
                        f"must be a string, got {type(value).__name__} {value!r}: quote it",
                    )
                    continue
                env[str(e["name"])] = value
        ports = [
            ContainerPort(int(p["containerPort"]), str(p.get("name", "")), str(p.get("protocol", "TCP")))
            for p in r.get(c, "ports", list, [])
            if isinstance(p, dict) and isinstance(p.get("containerPort"), int)
        ]
        containers.append(
            Container(
                name=str(c.get("name", "")),
                image=str(c.get("image", "")),
                command=[str(x) for x in r.get(c, "command", list, [])],
                args=[str(x) for x in r.get(c, "args", list, [])],
                env=env,
                ports=ports,
                resources=r.get(c, "resources", dict, {}),
            )
        )
    bundle.deployments.append(
        Deployment(
            meta=meta,
            replicas=r.get(data, "spec.replicas", int, 1),
            selector=r.strings(data, "spec.selector.matchLabels"),
            pod_labels=r.strings(data, "spec.template.metadata.labels"),
            annotations=r.strings(data, "spec.template.metadata.annotations"),
            containers=containers,
            service_account=r.get(data, "spec.template.spec.serviceAccountName", str, None) or "default",
        )
    )


def _service(bundle: Bundle, r: _Reader, meta: Meta, data: dict[str, Any]) -> None:
    ports = []
    for i, p in enumerate(r.get(data, "spec.ports", list, [])):
        port = p.get("port") if isinstance(p, dict) else None
        if not isinstance(port, int) or isinstance(port, bool):
            r.problem(f"spec.ports[{i}].port", "port must be an integer")
            continue
        target = p.get("targetPort")
        ports.append(
            ServicePort(
                port=port,
                name=str(p.get("name", "")),
                target_port=target
                if isinstance(target, (int, str)) and not isinstance(target, bool)
                else None,
                app_protocol=str(p["appProtocol"]) if p.get("appProtocol") else None,
                protocol=str(p.get("protocol", "TCP")),
            )
        )
    selector = r.strings(data, "spec.selector")
    bundle.services.append(Service(meta, selector, ports, r.get(data, "spec.type", str, "ClusterIP")))


def _namespace(bundle: Bundle, r: _Reader, meta: Meta, data: dict[str, Any]) -> None:
    bundle.namespaces[meta.name] = Namespace(meta)


def collector_configs(values: Any) -> tuple[list[tuple[str, dict[str, Any]]], list[tuple[str, str]]]:
    """The OpenTelemetry Collector configs in a ConfigMap's `data` (`config.yaml` first, then any
    other YAML value with `receivers` and `service`, like the Helm chart's `relay`), and the
    (key, error) of `.yaml`/`.yml` values that do not parse."""
    found: list[tuple[str, dict[str, Any]]] = []
    errors: list[tuple[str, str]] = []
    items = values.items() if isinstance(values, dict) else []
    for key, text in sorted(items, key=lambda kv: kv[0] != "config.yaml"):
        if not isinstance(text, str):
            continue
        try:
            parsed = yaml.safe_load(text)
        except yaml.YAMLError as e:
            if str(key).endswith((".yaml", ".yml")):
                errors.append((str(key), str(e)))
            continue
        if isinstance(parsed, dict) and "receivers" in parsed and "service" in parsed:
            found.append((str(key), parsed))
    return found, errors


def _config_map(bundle: Bundle, r: _Reader, meta: Meta, data: dict[str, Any]) -> None:
    values = r.strings(data, "data")
    found, errors = collector_configs(values)
    for key, error in errors:
        r.problem(f"data['{key}']", f"embedded {key} does not parse: {error}", code="yaml-error")
    bundle.config_maps.append(ConfigMap(meta, values, found[0][1] if found else None))


def _check_telemetry(r: _Reader, data: dict[str, Any]) -> bool:
    """Schema checks for one Telemetry document as written; False when the API server would
    reject it."""
    version = str(data.get("apiVersion", "")).rsplit("/", 1)[-1]
    spec_schema = (schema.version_schema("telemetry.json", version) or {}).get("properties", {}).get("spec")
    if spec_schema is None:
        r.problem("apiVersion", f"telemetry.istio.io/{version} is not served (use v1)", code="schema")
        return False
    spec = data.get("spec")
    valid = True
    for err in schema.validate(spec, spec_schema, "spec"):
        r.problem(err.path, err.message, code="schema-unknown-field" if err.unknown_field else "schema")
        valid = valid and err.unknown_field
    if not isinstance(spec, dict):
        return valid
    # The CRD's CEL rules (x-kubernetes-validations) that the schema walk does not evaluate.
    if sum(1 for k in ("selector", "targetRef", "targetRefs") if k in spec) > 1:
        r.problem("spec", "only one of targetRefs or selector can be set", code="schema")
        valid = False
    for mi, metrics in enumerate(list_at(spec, "metrics")):
        for oi, override in enumerate(list_at(metrics, "overrides")):
            for tag, value in map_at(override, "tagOverrides").items():
                if not isinstance(value, dict):
                    continue
                path = f"spec.metrics[{mi}].overrides[{oi}].tagOverrides.{tag}"
                if value.get("operation") == "UPSERT" and not value.get("value"):
                    r.problem(path, "value must be set when operation is UPSERT", code="schema")
                    valid = False
                if value.get("operation") == "REMOVE" and "value" in value:
                    r.problem(path, "value must not be set when operation is REMOVE", code="schema")
                    valid = False
    return valid


def _telemetry(bundle: Bundle, r: _Reader, meta: Meta, data: dict[str, Any]) -> None:
    spec = data.get("spec")
    if not isinstance(spec, dict):
        spec = {}
    # Re-check quietly the merged resource: only its validity matters here.
    quiet = _Reader(Bundle(), meta.origin, meta.ref)
    bundle.telemetries.append(Telemetry(meta, spec, valid=_check_telemetry(quiet, data)))


def _security(attribute: str) -> Callable[[Bundle, _Reader, Meta, dict[str, Any]], None]:
    def build(bundle: Bundle, r: _Reader, meta: Meta, data: dict[str, Any]) -> None:
        getattr(bundle, attribute).append(SecurityResource(meta, r.get(data, "spec", dict, {})))

    return build


def _istio_operator(bundle: Bundle, r: _Reader, meta: Meta, data: dict[str, Any]) -> None:
    bundle.istio_operators.append(IstioOperator(meta, r.get(data, "spec.meshConfig", dict, {})))


def _hpa(bundle: Bundle, r: _Reader, meta: Meta, data: dict[str, Any]) -> None:
    bundle.hpas.append(
        HorizontalPodAutoscaler(
            meta=meta,
            target_kind=r.get(data, "spec.scaleTargetRef.kind", str, ""),
            target_name=r.get(data, "spec.scaleTargetRef.name", str, ""),
            min_replicas=r.get(data, "spec.minReplicas", int, 1),
            max_replicas=r.get(data, "spec.maxReplicas", int, 1),
            metrics=[m for m in r.get(data, "spec.metrics", list, []) if isinstance(m, dict)],
        )
    )


def _prometheus_rule(bundle: Bundle, r: _Reader, meta: Meta, data: dict[str, Any]) -> None:
    groups = [g for g in r.get(data, "spec.groups", list, []) if isinstance(g, dict)]
    bundle.prometheus_rules.append(PrometheusRule(meta, groups))


def _build_mesh(bundle: Bundle) -> None:
    """Overlay every IstioOperator's meshConfig in load order, then the `istio` ConfigMap."""
    for op in bundle.istio_operators:
        _add_layer(bundle, op.meta, op.mesh_config, "spec.meshConfig")
    root = bundle.mesh.root_namespace
    cm = bundle.config_map("istio", root)
    if cm is not None and "mesh" in cm.data:
        try:
            mesh = yaml.safe_load(cm.data["mesh"])
        except yaml.YAMLError as e:
            _Reader(bundle, cm.meta.origin, cm.meta.ref).problem(
                "data.mesh", f"mesh config does not parse: {e}", code="yaml-error"
            )
        else:
            if isinstance(mesh, dict):
                _add_layer(bundle, cm.meta, mesh, "data.mesh")


def _add_layer(bundle: Bundle, meta: Meta, mesh_config: dict[str, Any], prefix: str) -> None:
    config = copy.deepcopy(mesh_config)
    proxy = config.get("defaultConfig")
    if isinstance(proxy, dict):
        config["defaultConfig"], notes = normalize_proxy_config(
            proxy, f"{prefix}.defaultConfig", meta.origin, meta.ref
        )
        bundle.problems.extend(notes)
    bundle.mesh.overlay(Layer(meta.ref, meta.origin, prefix, config))


_PATH_TOKEN = re.compile(r"\['([^']*)'\]|\[(\d+)\]|([^.\[]+)")


def line_of(doc: Document, path: str) -> int:
    """The 1-based line in the file where key `path` (as findings write it: `a.b[0]`,
    `data['config.yaml'].exporters`) is, descending into embedded YAML strings; the nearest
    ancestor found, or the document's first line."""
    if not doc.text or not path:
        return doc.origin.line
    try:
        node: yaml.Node | None = yaml.compose(doc.text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return doc.origin.line
    offset = doc.origin.line - 1
    line = doc.origin.line
    for key, index, word in _PATH_TOKEN.findall(path):
        name = key or word
        if isinstance(node, yaml.ScalarNode) and node.style in ("|", ">"):
            # An embedded document (a collector config in a ConfigMap): its lines start below.
            try:
                inner = yaml.compose(node.value, Loader=yaml.SafeLoader)
            except yaml.YAMLError:
                return line
            offset += node.start_mark.line + 1
            node = inner
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode) and not index:
            child = next((v for k, v in node.value if getattr(k, "value", None) == name), None)
            key_node = next((k for k, _v in node.value if getattr(k, "value", None) == name), None)
            if key_node is not None:
                line = offset + key_node.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and index and int(index) < len(node.value):
            child = node.value[int(index)]
            line = offset + child.start_mark.line + 1
        if child is None:
            return line
        node = child
    return line
