"""The `up` orchestration: plan, check ports, start in readiness order, report, supervise, stop."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import shutil
import signal
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from meshtrace.control import identity
from meshtrace.runtime import ports
from meshtrace.runtime.plan import CONTROL_TLS_PORT, Plan, make_plan
from meshtrace.runtime.prometheus import PROMETHEUS_PORT, prometheus_spec
from meshtrace.runtime.supervisor import Child, ProcessSpec, Supervisor, meshtrace_argv
from meshtrace.runtime.traffic import run_traffic

COLOURS = ("cyan", "magenta", "green", "yellow", "blue", "bright_red", "bright_cyan", "bright_magenta")


@dataclass
class Options:
    paths: list[Path]
    rps: float | None
    traffic_duration: float
    prometheus: bool
    host: str
    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    ingress: tuple[str, int]
    ui: tuple[str, int]
    data_dir: Path | None


class Output:
    """Prefixed, coloured log lines; one colour per workload."""

    def __init__(self) -> None:
        # Piped output (logs, CI) gets a wide page rather than rich's 80 columns.
        self.console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 140)
        self._colours: dict[str, str] = {}

    def colour(self, name: str) -> str:
        workload = name.split("/", 1)[0].rsplit("-", 1)[0]
        if workload not in self._colours:
            self._colours[workload] = COLOURS[len(self._colours) % len(COLOURS)]
        return self._colours[workload]

    def log(self, name: str, line: str) -> None:
        self.console.print(f"[{self.colour(name)}]{escape(name)}[/] {escape(line)}")

    def say(self, message: str) -> None:
        self.console.print(f"[bold]up[/] {escape(message)}")

    def ready_line(self, component: str, host: str, port: int) -> None:
        # Plain print, not rich: this line is parsed by tests and tools (DESIGN.md).
        self.console.file.write(f"meshtrace: {component} listening on {host}:{port}\n")
        self.console.file.flush()


def _busy_addresses(plan: Plan, prometheus: bool) -> list[str]:
    """Every fixed address the plan binds that something else already holds, with its owner."""
    problems = []
    extra = [(plan.host, PROMETHEUS_PORT)] if prometheus else []
    for host, port in plan.fixed_addresses() + extra:
        if port and not ports.is_free(host, port):
            problems.append(f"{host}:{port} is in use by {ports.owner(host, port) or 'another process'}")
    return problems


async def run(options: Options) -> int:
    out = Output()
    try:
        plan = make_plan(
            options.paths, options.host, options.network, options.ingress, options.ui, options.data_dir
        )
    except ValueError as e:
        out.say(f"cannot run these manifests: {e}")
        return 2
    for report in plan.reports:
        out.say(report)
    busy = _busy_addresses(plan, options.prometheus)
    if busy:
        for problem in busy:
            out.say(problem)
        out.say("stop those processes or pick other addresses (--host, --network, --ingress, --ui)")
        return 2

    rundir = Path(tempfile.mkdtemp(prefix="meshtrace-up-"))
    supervisor = Supervisor(out.log)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    traffic: asyncio.Task[object] | None = None
    try:
        started = asyncio.create_task(_start(plan, options, supervisor, rundir, out))
        waiter = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({started, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if started not in done:
            started.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await started
            return 130
        waiter.cancel()
        try:
            gateway = started.result()
        except (RuntimeError, TimeoutError) as e:
            out.say(f"failed to start: {e}")
            return 1
        ingress_host, ingress_port = gateway.listeners["gateway"]
        if options.rps:
            url = f"http://{ingress_host}:{ingress_port}"
            out.say(f"traffic: {options.rps:g} req/s to {url} for at most {options.traffic_duration:g}s")
            traffic = asyncio.create_task(
                run_traffic(
                    url,
                    options.rps,
                    options.traffic_duration,
                    int(options.rps * options.traffic_duration),
                    out.say,
                )
            )
        await stop.wait()
        out.say("stopping (Ctrl-C again is not needed; children are stopped in reverse order)")
        return 0
    finally:
        if traffic is not None:
            traffic.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await traffic
        await supervisor.stop_all()
        shutil.rmtree(rundir, ignore_errors=True)
        out.say("stopped")


async def _start(plan: Plan, options: Options, supervisor: Supervisor, rundir: Path, out: Output) -> Child:
    """Start everything in readiness order; returns the gateway."""
    collector_config = rundir / "collector.yaml"
    collector_config.write_text(yaml.safe_dump(plan.collector.config, sort_keys=False))
    collector = await supervisor.start(
        ProcessSpec(
            name="otel-collector",
            argv=meshtrace_argv("collector", "--config", str(collector_config)),
            env=plan.collector.env,
            ready=plan.collector.ready,
        )
    )
    # The control plane's key and CA live with the traces when --data-dir is given (kept across
    # runs, as istiod's root is), else in this run's folder.
    control_dir = (options.data_dir or rundir) / "control"
    tokens = rundir / "tokens"
    plan.mint_tokens(identity.load_or_create_key(control_dir), tokens)
    control_args = ["control", "--listen", f"{plan.host}:{plan.control_port}", "--data-dir", str(control_dir)]
    control_args += ["--tls-listen", f"{plan.host}:{CONTROL_TLS_PORT}"]
    for path in plan.paths:
        control_args += ["-f", str(path)]
    for endpoint in plan.static_endpoints:
        control_args += ["--endpoint", endpoint]
    control = await supervisor.start(
        ProcessSpec(name="istiod", argv=meshtrace_argv(*control_args), ready=("control", "control-tls"))
    )
    # sidecars speak to the control plane over TLS, trusting the root it keeps in its data dir
    control_url = "https://{}:{}".format(*control.listeners["control-tls"])
    ca_root = control_dir / "ca" / "root-cert.pem"

    gateway = await supervisor.start(
        ProcessSpec(
            name="istio-ingressgateway",
            argv=meshtrace_argv(*plan.gateway_args(control_url, tokens, ca_root)),
            ready=("gateway",),
        )
    )
    await supervisor.start_all([pod.app_spec() for pod in plan.pods])
    await supervisor.start_all([pod.sidecar_spec(control_url, tokens, ca_root) for pod in plan.pods])
    prometheus = await supervisor.start(prometheus_spec(plan, rundir)) if options.prometheus else None

    _print_status(out, plan, collector, control, gateway, prometheus)
    for component in ("otlp-grpc", "otlp-http", "zipkin"):
        if component in collector.listeners:
            out.ready_line(component, *collector.listeners[component])
    out.ready_line("control", *control.listeners["control"])
    ui = collector.listeners.get("query")
    if ui is not None:
        out.ready_line("ui", *ui)
    if prometheus is not None:
        out.ready_line("prometheus", plan.host, PROMETHEUS_PORT)
    out.ready_line("ingress", *gateway.listeners["gateway"])
    return gateway


def _print_status(
    out: Output, plan: Plan, collector: Child, control: Child, gateway: Child, prometheus: Child | None
) -> None:
    table = Table(title="meshtrace: the mesh is up", title_justify="left")
    table.add_column("what")
    table.add_column("where")
    table.add_column("notes")
    if "query" in collector.listeners:
        table.add_row(
            "web UI + Jaeger API", "http://{}:{}".format(*collector.listeners["query"]), "open this"
        )
    table.add_row(
        "ingress gateway", "http://{}:{}".format(*gateway.listeners["gateway"]), "curl it: / and /api/data"
    )
    for component, (host, port) in sorted(collector.listeners.items()):
        if component != "query":
            table.add_row(f"collector {component}", f"{host}:{port}", "")
    table.add_row("control plane", "http://{}:{}".format(*control.listeners["control"]), "meshtrace status")
    if prometheus is not None:
        table.add_row("prometheus", f"http://{plan.host}:{PROMETHEUS_PORT}", "alerts: /alerts")
    for pod in plan.pods:
        table.add_row(
            f"pod {pod.namespace}/{pod.name}",
            f"{pod.ip}:{pod.app_port}",
            "sidecar :15006 in, :15001 out, :15000 admin; metrics :15090/stats/prometheus",
        )
    out.console.print(table)
