"""The `up` orchestration: plan, check ports, start in readiness order, report, supervise, stop."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from rich.console import Console
from rich.live import Live
from rich.markup import escape

from meshtrace.control import identity
from meshtrace.runtime import ports
from meshtrace.runtime.plan import CONTROL_TLS_PORT, Plan, make_plan
from meshtrace.runtime.prometheus import PROMETHEUS_PORT, prometheus_spec
from meshtrace.runtime.runfolder import PodLogs, data_dir, is_trouble, new_run
from meshtrace.runtime.status import Status, keep_fresh, refresh_once
from meshtrace.runtime.supervisor import ProcessSpec, Supervisor, meshtrace_argv
from meshtrace.runtime.traffic import run_traffic

PLAIN_SUMMARY_S = 30.0
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
    access_log: bool = False  # every child's output on the terminal too, not only in its log file
    fresh: bool = False  # a new, empty store in the run folder instead of the shared traces.db
    otlp_via_sidecar: bool = False  # apps export OTLP/gRPC through their sidecar, as in Istio


class Output:
    """The terminal: `up`'s own messages, the ready lines, children's warnings and errors (or
    every line with `--access-log`) and the status table. Every child line goes to its pod's
    log file."""

    def __init__(self, access_log: bool = False) -> None:
        # Piped output (logs, CI) gets a wide page rather than rich's 80 columns.
        self.console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 140)
        self.access_log = access_log
        self.logs: PodLogs | None = None
        self._colours: dict[str, str] = {}

    def colour(self, name: str) -> str:
        workload = name.split("/", 1)[0].rsplit("-", 1)[0]
        if workload not in self._colours:
            self._colours[workload] = COLOURS[len(self._colours) % len(COLOURS)]
        return self._colours[workload]

    def log(self, name: str, line: str) -> None:
        if self.logs is not None:
            self.logs.write(name, line)
        if self.access_log or self.logs is None or is_trouble(line):
            self.console.print(f"[{self.colour(name)}]{escape(name)}[/] {escape(line)}")

    def say(self, message: str) -> None:
        self.console.print(f"[bold]up[/] {escape(message)}")

    def ready_line(self, component: str, host: str, port: int) -> None:
        # Plain print, not rich: this line is parsed by tests and tools (README.md, Commands).
        self.console.file.write(f"meshtrace: {component} listening on {host}:{port}\n")
        self.console.file.flush()

    def recent(self) -> None:
        """The last lines children printed, to explain a failed start."""
        if self.logs is not None and self.logs.recent and not self.access_log:
            self.say(f"the last lines of the children's logs ({self.logs.folder}):")
            for line in self.logs.recent:
                self.console.print(escape(line))


def _busy_addresses(plan: Plan, prometheus: bool) -> list[str]:
    """Every fixed address the plan binds that something else already holds, with its owner."""
    problems = []
    extra = [(plan.host, PROMETHEUS_PORT)] if prometheus else []
    for host, port in plan.fixed_addresses() + extra:
        if port and not ports.is_free(host, port):
            problems.append(f"{host}:{port} is in use by {ports.owner(host, port) or 'another process'}")
    return problems


def _prepare(options: Options, out: Output) -> tuple[Plan, Path] | int:
    """The plan and this run's folder, or the exit code after saying why `up` cannot start."""
    try:
        rundir = new_run(options.data_dir)
    except OSError as e:
        out.say(f"cannot create the run folder: {e} (--data-dir picks another place)")
        return 2
    store_dir = rundir / "data" if options.fresh else options.data_dir
    try:
        plan = make_plan(
            options.paths,
            options.host,
            options.network,
            options.ingress,
            options.ui,
            store_dir,
            options.otlp_via_sidecar,
        )
    except ValueError as e:
        out.say(f"cannot run these manifests: {e}")
        shutil.rmtree(rundir, ignore_errors=True)
        return 2
    for report in plan.reports:
        out.say(report)
    busy = _busy_addresses(plan, options.prometheus)
    if busy:
        for problem in busy:
            out.say(problem)
        out.say("stop those processes or pick other addresses (--host, --network, --ingress, --ui)")
        shutil.rmtree(rundir, ignore_errors=True)
        return 2
    out.logs = PodLogs(rundir)
    out.say(f"logs: {out.logs.folder} (one file per pod; --access-log shows every line here too)")
    out.say(
        f"traces: {data_dir(store_dir) / 'traces.db'}" + ("" if options.fresh else " (--fresh: start empty)")
    )
    return plan, rundir


async def _start_or_stop(
    plan: Plan, options: Options, supervisor: Supervisor, rundir: Path, out: Output, stop: asyncio.Event
) -> Status | int:
    """Start every part, unless a signal comes first: the status, or the exit code."""
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
        return started.result()
    except (RuntimeError, TimeoutError) as e:
        out.recent()
        out.say(f"failed to start: {e}")
        return 1


def _traffic(
    rps: float, options: Options, status: Status, out: Output, live: Live | None
) -> asyncio.Task[object]:
    """`--traffic`: requests to the gateway, progress shown in the status table (or as lines)."""
    ingress_host, ingress_port = status.gateway.listeners["gateway"]
    url = f"http://{ingress_host}:{ingress_port}"
    out.say(f"traffic: {rps:g} req/s to {url} for at most {options.traffic_duration:g}s")

    def progress(line: str) -> None:
        status.traffic = line
        if live is None:
            out.say(line)

    requests = int(rps * options.traffic_duration)
    return asyncio.create_task(run_traffic(url, rps, options.traffic_duration, requests, progress))


async def run(options: Options) -> int:
    out = Output(options.access_log)
    prepared = _prepare(options, out)
    if isinstance(prepared, int):
        return prepared
    plan, rundir = prepared
    assert out.logs is not None
    supervisor = Supervisor(out.log)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # SIGHUP too: a closed terminal stops the mesh in order rather than killing `up` outright.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    background: list[asyncio.Task[object]] = []
    live: Live | None = None
    try:
        status = await _start_or_stop(plan, options, supervisor, rundir, out, stop)
        if isinstance(status, int):
            return status
        status.logs = str(out.logs.folder)
        live = _show(status, out, background)
        if options.rps:
            background.append(_traffic(options.rps, options, status, out, live))
        await stop.wait()
        if live is not None:
            live.stop()
            live = None
        await refresh_once(status)
        out.say(status.summary())
        out.say("stopping (Ctrl-C again is not needed; children are stopped in reverse order)")
        return 0
    finally:
        for task in background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if live is not None:
            live.stop()
        await supervisor.stop_all()
        out.logs.close()
        out.say(f"stopped; logs kept in {out.logs.folder}")


def _show(status: Status, out: Output, background: list[asyncio.Task[object]]) -> Live | None:
    """The status table: redrawn in place on a terminal; else printed once, then a summary line
    every PLAIN_SUMMARY_S (a log gets no redraws)."""
    if out.console.is_terminal:
        live = Live(status.table(), console=out.console, auto_refresh=False, redirect_stderr=False)
        live.start()
        background.append(
            asyncio.create_task(keep_fresh(status, lambda: live.update(status.table(), refresh=True)))
        )
        return live
    out.console.print(status.table())
    last = [time.monotonic()]

    def summary() -> None:
        now = time.monotonic()
        if now - last[0] >= PLAIN_SUMMARY_S:
            last[0] = now
            out.say(status.summary())

    background.append(asyncio.create_task(keep_fresh(status, summary)))
    return None


async def _start(plan: Plan, options: Options, supervisor: Supervisor, rundir: Path, out: Output) -> Status:
    """Start everything in readiness order; returns what the status table shows."""
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
    await supervisor.start_all(
        [pod.sidecar_spec(control_url, tokens, ca_root) for pod in plan.pods if pod.sidecar]
    )
    prometheus = await supervisor.start(prometheus_spec(plan, rundir)) if options.prometheus else None

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
    return Status(
        plan, collector, control, gateway, f"http://{plan.host}:{PROMETHEUS_PORT}" if prometheus else None
    )
