"""From manifests to processes (pure: no process is started here).

Kubernetes -> local mapping: each replica of each Deployment is a pod with its own loopback
address from `network`; its app listens there on its containerPort and its sidecar on Istio's
ports. Images map to commands: the seed's frontend/backend images to the demo services, an
OpenTelemetry Collector image to `meshtrace collector` with its ConfigMap, anything else to the
annotation `meshtrace.dev/command`. What cannot run is reported, not fatal.
"""

from __future__ import annotations

import ipaddress
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshtrace.config import Bundle, load
from meshtrace.config.lint import lint
from meshtrace.config.model import Deployment, Service
from meshtrace.config.protocol import port_protocol
from meshtrace.control import identity
from meshtrace.runtime.collector_config import localize
from meshtrace.runtime.supervisor import ProcessSpec, meshtrace_argv

DEFAULT_MANIFESTS = Path(__file__).resolve().parent.parent / "examples" / "seed"
COMMAND_ANNOTATION = "meshtrace.dev/command"
DEMO_IMAGES = {"frontend": "meshtrace.demo.frontend", "backend": "meshtrace.demo.backend"}
COLLECTOR_IMAGES = ("opentelemetry-collector", "otelcol")
CONTROL_PORT = 15010
SIDECAR_PORTS = (15001, 15006, 15000, 15090)  # outbound, inbound, admin, stats
CONTROL_TLS_PORT = 15012  # istiod's: the API over TLS, what the sidecars use
GATEWAY = ("istio-ingressgateway", "istio-system")
GATEWAY_SERVICE_ACCOUNT = "istio-ingressgateway-service-account"  # Istio's chart names it so
# Collector ports a Service may expose, and where the local collector serves each.
OTLP_ENV = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


@dataclass
class PodPlan:
    name: str
    deployment: str
    namespace: str
    ip: str
    labels: dict[str, str]
    app_port: int
    app_argv: list[str]
    app_env: dict[str, str]
    sidecar: bool = True  # Istio's injection decision (Bundle.sidecar_injected)
    service_account: str = "default"

    def app_spec(self) -> ProcessSpec:
        return ProcessSpec(
            name=f"{self.name}/app", argv=self.app_argv, env=self.app_env, ready_tcp=(self.ip, self.app_port)
        )

    def sidecar_spec(self, control_url: str, tokens: Path, ca_root: Path | None = None) -> ProcessSpec:
        labels = ",".join(f"{k}={v}" for k, v in sorted(self.labels.items()))
        argv = meshtrace_argv(
            "sidecar",
            "--workload",
            self.deployment,
            "--namespace",
            self.namespace,
            "--pod",
            self.name,
            "--ip",
            self.ip,
            "--labels",
            labels,
            "--app-port",
            str(self.app_port),
            "--control",
            control_url,
            "--service-account",
            self.service_account,
            "--token-file",
            str(token_file(tokens, self.namespace, self.name)),
            *(["--ca-root", str(ca_root)] if ca_root else []),
        )
        return ProcessSpec(name=f"{self.name}/sidecar", argv=argv, ready=("inbound", "outbound"))


@dataclass
class CollectorPlan:
    config: dict[str, Any]
    env: dict[str, str]
    ready: tuple[str, ...] = ("otlp-grpc", "query")


@dataclass
class Plan:
    paths: list[Path]
    host: str
    control_port: int
    ingress: tuple[str, int]
    ui: tuple[str, int]
    collector: CollectorPlan
    pods: list[PodPlan] = field(default_factory=list)
    static_endpoints: list[str] = field(default_factory=list)  # HOST=IP:PORT for the control plane
    default_service: str | None = None
    alert_rule_groups: list[list[dict[str, Any]]] = field(default_factory=list)
    reports: list[str] = field(default_factory=list)

    def mint_tokens(self, key: bytes, tokens: Path) -> None:
        """Each pod's bootstrap credential in its own 0600 file, as Kubernetes projects a
        service-account token into the pod: the sidecar reads it, `ps` never shows it."""
        tokens.mkdir(mode=0o700, parents=True, exist_ok=True)
        name, namespace = GATEWAY
        pods = [(namespace, f"{name}-0", GATEWAY_SERVICE_ACCOUNT)]
        pods += [(p.namespace, p.name, p.service_account) for p in self.pods]
        for ns, pod, sa in pods:
            identity.write_token(
                token_file(tokens, ns, pod), identity.mint(key, identity.Claims(ns, sa, pod))
            )

    def fixed_addresses(self) -> list[tuple[str, int]]:
        """Addresses bound with a fixed port, to check before starting anything."""
        out = [
            (self.host, self.control_port),
            (self.host, CONTROL_TLS_PORT),
            self.ingress,
            self.ui,
            (self.host, 4317),
            (self.host, 4318),
        ]
        for pod in self.pods:
            out.append((pod.ip, pod.app_port))
            if pod.sidecar:
                out += [(pod.ip, port) for port in SIDECAR_PORTS]
        return out

    def gateway_args(self, control_url: str, tokens: Path, ca_root: Path | None = None) -> list[str]:
        name, namespace = GATEWAY
        host, port = self.ingress
        args = [
            "sidecar",
            "--mode",
            "gateway",
            "--workload",
            name,
            "--namespace",
            namespace,
            "--pod",
            f"{name}-0",
            "--ip",
            host,
            "--labels",
            f"app={name},istio=ingressgateway",
            "--gateway-port",
            str(port),
            # The gateway's own admin ports are of no interest locally: any free ones.
            "--admin-port",
            "0",
            "--stats-port",
            "0",
            "--health-port",
            "0",
            "--inbound-port",
            "0",
            "--outbound-port",
            "0",
            "--control",
            control_url,
            "--service-account",
            GATEWAY_SERVICE_ACCOUNT,
            "--token-file",
            str(token_file(tokens, namespace, f"{name}-0")),
            *(["--ca-root", str(ca_root)] if ca_root else []),
        ]
        if self.default_service:
            args += ["--default-service", self.default_service]
        return args


def token_file(tokens: Path, namespace: str, pod: str) -> Path:
    return tokens / f"{namespace}.{pod}.token"


def _image_name(image: str) -> str:
    """`your-registry/frontend:latest` -> `frontend`."""
    return image.rsplit("/", 1)[-1].split("@", 1)[0].split(":", 1)[0]


def _is_collector(dep: Deployment) -> bool:
    return any(any(m in c.image for m in COLLECTOR_IMAGES) for c in dep.containers)


def _app_command(dep: Deployment) -> list[str] | None:
    if COMMAND_ANNOTATION in dep.annotations:
        return shlex.split(dep.annotations[COMMAND_ANNOTATION])
    for container in dep.containers:
        module = DEMO_IMAGES.get(_image_name(container.image))
        if module is not None:
            return [sys.executable, "-m", module]
    return None


def _service_hosts(service: Service) -> set[str]:
    short = service.name
    ns = f"{service.name}.{service.namespace}"
    return {short, ns, f"{ns}.svc", f"{ns}.svc.cluster.local"}


def _pods(
    bundle: Bundle,
    collectors: list[Deployment],
    network: ipaddress.IPv4Network | ipaddress.IPv6Network,
    host: str,
    otlp_target: str,
    app_otlp: str | None,
    collector_hosts: set[str],
    defined: set[str],
    plan: Plan,
) -> list[PodPlan]:
    """One pod per replica of every Deployment that can run here (the collector runs apart), each
    on its own address of `network`; what cannot run is said in `plan.reports`. `app_otlp`: where
    apps with a sidecar send OTLP when it goes through their sidecar (`--otlp-via-sidecar`)."""
    pods: list[PodPlan] = []
    addresses = (str(a) for a in network.hosts())
    for dep in bundle.deployments:
        if dep in collectors:
            continue
        argv = _app_command(dep)
        if argv is None:
            images = ", ".join(c.image for c in dep.containers) or "no image"
            plan.reports.append(
                f"Deployment {dep.namespace}/{dep.name} ({images}) cannot run locally: "
                f"give its command in the annotation {COMMAND_ANNOTATION}"
            )
            continue
        container = dep.containers[0]
        app_port = container.ports[0].container_port if container.ports else 8080
        sidecar = _injection(bundle, dep, plan.reports)
        for i in range(dep.replicas):
            try:
                ip = next(addresses)
            except StopIteration:
                raise ValueError(f"--network {network} has too few addresses for every replica") from None
            pod = PodIdentity(f"{dep.name}-{i}", dep.namespace, ip)
            env = _app_env(
                container.env, pod, app_port, host, otlp_target, collector_hosts, defined, plan.reports
            )
            if sidecar and app_otlp is not None:
                env["OTEL_EXPORTER_OTLP_ENDPOINT"] = app_otlp
                env.pop("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", None)
            if not sidecar:
                _without_sidecar(bundle, dep, ip, app_port, env, plan.static_endpoints)
            pods.append(
                PodPlan(
                    name=pod.name,
                    deployment=dep.name,
                    namespace=dep.namespace,
                    ip=ip,
                    labels=dict(dep.pod_labels),
                    app_port=app_port,
                    app_argv=argv,
                    app_env=env,
                    sidecar=sidecar,
                    service_account=dep.service_account,
                )
            )
    return pods


def make_plan(
    paths: list[Path],
    host: str,
    network: ipaddress.IPv4Network | ipaddress.IPv6Network,
    ingress: tuple[str, int],
    ui: tuple[str, int],
    data_dir: Path | None,
    otlp_via_sidecar: bool = False,
) -> Plan:
    """The plan; `otlp_via_sidecar`: apps export OTLP/gRPC to the collector Service through their
    sidecar (as in Istio) instead of straight to the local collector."""
    bundle = load(paths)
    if bundle.unreadable:
        raise ValueError("; ".join(f"{p.file}: {p.message}" for p in bundle.unreadable))
    if not bundle.deployments:
        raise ValueError("no Deployment in " + ", ".join(map(str, paths)))

    reports = [f"{p.file}: {p.message}" for p in bundle.problems if p.code == "nested-folder"]
    reports += _lint_summary(bundle, paths)
    defined: set[str] = set()
    for service in bundle.services:
        defined |= _service_hosts(service)

    collectors = [d for d in bundle.deployments if _is_collector(d)]
    config, collector_service = _collector_config(bundle, collectors, reports)
    store: dict[str, Any] = {}
    if data_dir is not None:
        store["path"] = str(data_dir / "traces.db")
    run_config, notes = localize(config, host, ui, store, lambda h: h in defined)
    reports += notes
    reports += _not_run_locally(run_config)

    plan = Plan(
        paths=list(paths),
        host=host,
        control_port=CONTROL_PORT,
        ingress=ingress,
        ui=ui,
        collector=CollectorPlan(run_config, env={"MY_POD_IP": host, "POD_IP": host}),
        reports=reports,
    )
    otlp_target = f"http://{host}:4317"
    collector_hosts: set[str] = set()
    if collector_service is not None:
        collector_hosts = _service_hosts(collector_service)
        for port in collector_service.ports:
            target = port.target_port if isinstance(port.target_port, int) else port.port
            plan.static_endpoints.append(f"{collector_service.host}={host}:{target}")
    app_otlp = _app_otlp_target(collector_service, otlp_target, plan.reports) if otlp_via_sidecar else None

    plan.pods = _pods(
        bundle, collectors, network, host, otlp_target, app_otlp, collector_hosts, defined, plan
    )
    # The gateway sends requests whose Host names no Service to the first Service (in manifest
    # order) that selects a running Deployment: the seed's and the demo's frontend.
    served = [d for d in bundle.deployments if any(p.deployment == d.name for p in plan.pods)]
    plan.default_service = next(
        (
            s.host
            for s in bundle.services
            if s.selector and any(s.selector.items() <= d.pod_labels.items() for d in served)
        ),
        None,
    )
    plan.alert_rule_groups = [rule.groups for rule in bundle.prometheus_rules]
    return plan


def _app_otlp_target(service: Service | None, direct: str, reports: list[str]) -> str | None:
    """The collector Service's OTLP/gRPC address for apps that export through their sidecar: the
    port Istio takes for gRPC (by appProtocol or name), else 4317; None (and a report) without
    a collector Service, where apps keep exporting to `direct`."""
    if service is None:
        reports.append(f"--otlp-via-sidecar: no collector Service in the manifests; apps export to {direct}")
        return None
    grpc_ports = [
        p.port for p in service.ports if port_protocol(p.port, p.name, p.protocol, p.app_protocol) == "grpc"
    ]
    port = next(iter(grpc_ports), 4317)
    return f"http://{service.host}:{port}"


def _injection(bundle: Bundle, dep: Deployment, reports: list[str]) -> bool:
    """Whether Istio would inject a sidecar into this Deployment's pods, said when it would not
    or when the manifests do not say (a namespace they do not define is taken as labelled for
    injection, as the guide's `kubectl label namespace default istio-injection=enabled` does)."""
    injected, why = bundle.sidecar_injected(dep.namespace, dep.pod_labels, dep.annotations)
    if injected is None:
        reports.append(f"Deployment {dep.namespace}/{dep.name}: {why}; taken as istio-injection=enabled")
        return True
    if not injected:
        reports.append(
            f"Deployment {dep.namespace}/{dep.name}: no sidecar ({why}): runs plain, as in Istio "
            "(`meshtrace lint` explains)"
        )
    return injected


def _without_sidecar(
    bundle: Bundle, dep: Deployment, ip: str, app_port: int, env: dict[str, str], endpoints: list[str]
) -> None:
    """A pod without a sidecar: its outbound calls go direct (no proxy), and every Service that
    selects it reaches its app directly, as a static endpoint of the control plane."""
    for name in ("HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy", "no_grpc_proxy"):
        env.pop(name, None)
    for service in bundle.services:
        if (
            service.namespace == dep.namespace
            and service.selector
            and service.selector.items() <= dep.pod_labels.items()
        ):
            endpoints.append(f"{service.host}={ip}:{app_port}")


def _lint_summary(bundle: Bundle, paths: list[Path]) -> list[str]:
    """Each lint error (a real cluster would misbehave the same way) and a count of the rest."""
    findings = lint(bundle)
    errors = [f for f in findings if f.severity == "error"]
    out = [f"lint error [{f.code}] {f.resource or f.file}: {f.message.splitlines()[0]}" for f in errors]
    warnings = sum(f.severity == "warning" for f in findings)
    if errors or warnings:
        where = " ".join(f"-f {p}" for p in paths)
        out.append(
            f"lint: {len(errors)} error(s), {warnings} warning(s): `meshtrace lint {where}` explains each"
        )
    return out


def _not_run_locally(config: dict[str, Any]) -> list[str]:
    """What of the collector config upstream runs and the local collector skips (said before it
    starts, not only in its log)."""
    from meshtrace.collector.config import check
    from meshtrace.collector.schema import NOT_RUN_LOCALLY

    return [
        f"collector: {p.path}: {p.message} [{p.code}]" for p in check(config) if p.code == NOT_RUN_LOCALLY
    ]


def _collector_config(
    bundle: Bundle, collectors: list[Deployment], reports: list[str]
) -> tuple[dict[str, Any] | None, Service | None]:
    """The collector config to run (None: the built-in default) and the Service in front of it."""
    if not collectors:
        reports.append("no OpenTelemetry Collector Deployment: running the built-in default collector")
        return None, None
    dep = collectors[0]
    for other in collectors[1:]:
        reports.append(f"Deployment {other.namespace}/{other.name}: a second collector is not run locally")
    if dep.replicas != 1:
        reports.append(
            f"Deployment {dep.namespace}/{dep.name}: {dep.replicas} replicas -> 1 locally "
            "(the embedded store is single-node)"
        )
    maps = [m for m in bundle.config_maps if m.collector_config is not None and m.namespace == dep.namespace]
    maps.sort(key=lambda m: "collector" not in m.name)
    config = maps[0].collector_config if maps else None
    if config is None:
        reports.append(
            f"Deployment {dep.namespace}/{dep.name}: no collector ConfigMap found, using the default"
        )
    service = next(
        (
            s
            for s in bundle.services
            if s.namespace == dep.namespace and s.selector and s.selector.items() <= dep.pod_labels.items()
        ),
        None,
    )
    return config, service


@dataclass(frozen=True)
class PodIdentity:
    """What Kubernetes' downward API tells a container about its pod."""

    name: str
    namespace: str
    ip: str

    def downward(self, env_name: str) -> str | None:
        """The value of a `valueFrom` variable, going by the usual names (`POD_IP`, `MY_POD_NAME`,
        ...): status.podIP, metadata.name, metadata.namespace."""
        fields = (("POD_IP", self.ip), ("POD_NAME", self.name), ("POD_NAMESPACE", self.namespace))
        for suffix, value in fields:
            if env_name.endswith(suffix):
                return value
        return None


def _resource_attributes(declared: str | None, pod: PodIdentity) -> str:
    """OTEL_RESOURCE_ATTRIBUTES with the pod's k8s.pod.name and k8s.namespace.name added (what the
    Collector's k8sattributes processor adds in a cluster), so replicas can be told apart; keys the
    manifest sets itself win."""
    given = [part for part in (declared or "").split(",") if part.strip()]
    keys = {part.split("=", 1)[0].strip() for part in given}
    for key, value in (("k8s.pod.name", pod.name), ("k8s.namespace.name", pod.namespace)):
        if key not in keys:
            given.append(f"{key}={value}")
    return ",".join(given)


def _app_env(
    declared: dict[str, str | None],
    pod: PodIdentity,
    port: int,
    host: str,
    otlp_target: str,
    collector_hosts: set[str],
    defined: set[str],
    reports: list[str],
) -> dict[str, str]:
    """The app's environment: its own, with collector addresses made local, plus the pod's."""
    ip = pod.ip
    env: dict[str, str] = {}
    for name, value in declared.items():
        if value is None:
            known = pod.downward(name)
            if known is not None:
                env[name] = known
            continue
        if name in OTLP_ENV:
            target = value.split("://", 1)[-1].rsplit(":", 1)[0]
            if (
                target not in collector_hosts
                and target not in defined
                and f"{name}={value}" not in str(reports)
            ):
                reports.append(
                    f"{name}={value}: host {target!r} is not defined by any manifest; using {otlp_target}"
                )
            value = otlp_target
        env[name] = value
    proxy = f"http://{ip}:15001"
    no_proxy = ",".join(sorted({"localhost", "127.0.0.1", host}))
    env.update(
        {
            "POD_IP": ip,
            "POD_NAME": pod.name,
            "POD_NAMESPACE": pod.namespace,
            "OTEL_RESOURCE_ATTRIBUTES": _resource_attributes(env.get("OTEL_RESOURCE_ATTRIBUTES"), pod),
            "PORT": str(port),
            "HTTP_PROXY": proxy,
            "http_proxy": proxy,
            "NO_PROXY": no_proxy,
            "no_proxy": no_proxy,
            # gRPC reads its own variable too; telemetry must never loop through the sidecar.
            "no_grpc_proxy": no_proxy,
            "OTEL_EXPORTER_OTLP_ENDPOINT": env.get("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_target),
        }
    )
    return env
