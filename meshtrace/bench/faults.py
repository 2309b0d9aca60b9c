"""`meshtrace bench faults`: kill components under load and count what an acknowledgement was worth.

Each scenario runs real `meshtrace` processes on loopback and a load of raw OTLP/gRPC export
requests (10 spans each, every span id unique). A span is *acknowledged* when its request was
answered OK, *stored* when the backend's trace store (the SQLite file of its `store` exporter)
holds it at the end, and *lost* when it was acknowledged and is not stored: the number every row
must show as 0. Requests answered with an error were refused (the client still has them and
would retry); `served`/`failed` count requests. Peak RSS is the largest VmHWM of the collector
processes of the scenario (each process's own peak, read before it is killed or stopped).

Scenarios (`SCENARIOS`):
- `collector-sigkill`: the default collector config (what `meshtrace collector` and `up` run),
  SIGKILLed under load and restarted on the same ports and database, as `up`'s supervisor does.
- `agent-sigkill-in-outage`: an agent collector (otlp -> otlp_grpc with a persistent
  `sending_queue` on `file_storage`) whose backend is down, SIGKILLed while retrying, restarted;
  then the backend comes up.
- `backend-outage`: the agent's backend is SIGKILLed under load and restarted later.
- `store-disk-full`: the default collector with its data directory on a small tmpfs (or, where
  mounting is not allowed, a file-size limit on the process), `--seconds` of load once the disk is
  full; the query API must keep answering.
- `mesh-kills` (`meshtrace up`): the control plane, a frontend sidecar and the collector are
  SIGKILLed in turn while HTTP requests go through the ingress gateway and OTLP load goes to the
  collector; `up` restarts each.

The tests in tests/faults/ run the same scenarios for a few seconds each.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import resource
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import grpc
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from meshtrace import ready
from meshtrace.bench.collector import EXPORT
from meshtrace.bench.report import free_port, markdown_table, peak_rss_mib
from meshtrace.runtime import ports

SPANS_PER_REQUEST = 10


class Proc:
    """`python -m meshtrace ARGS` with its output read on a thread and its ready lines parsed."""

    def __init__(
        self,
        args: list[str],
        env: dict[str, str] | None = None,
        preexec: Callable[[], None] | None = None,
    ) -> None:
        full_env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        full_env.update(env or {}, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "meshtrace", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=full_env,
            start_new_session=True,
            preexec_fn=preexec,
        )
        self.lines: list[str] = []
        self.listeners: dict[str, tuple[str, int]] = {}
        self.peak_rss_mib = 0.0
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            parsed = ready.parse(line)
            if parsed is not None:
                self.listeners[parsed[0]] = (parsed[1], parsed[2])

    def wait_ready(self, *components: str, timeout: float = 60.0) -> Proc:
        deadline = time.monotonic() + timeout
        while not all(c in self.listeners for c in components):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"no ready line for {components}:\n" + "\n".join(self.lines[-40:]))
            time.sleep(0.05)
        return self

    def address(self, component: str) -> str:
        host, port = self.listeners[component]
        return f"{host}:{port}"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):  # it may have just exited
                self.peak_rss_mib = max(self.peak_rss_mib, peak_rss_mib(self.proc.pid))
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._reader.join(5)


class Load:
    """Threads sending OTLP/gRPC export requests to `target` at about `rate` requests/s in total,
    recording acknowledged span ids."""

    def __init__(self, target: str, rate: float = 100.0, senders: int = 4) -> None:
        self.target = target
        self.interval = senders / rate
        self.nonce = random.getrandbits(64).to_bytes(8, "big")
        self.acknowledged: set[bytes] = set()
        self.sent = 0
        self.served = 0
        self.failed = 0
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(senders)]

    def _request(self) -> tuple[bytes, list[bytes]]:
        req = ExportTraceServiceRequest()
        rs = req.resource_spans.add()
        rs.resource.attributes.add(key="service.name", value=AnyValue(string_value="faults"))
        scope = rs.scope_spans.add()
        ids = []
        now = time.time_ns()
        for _ in range(SPANS_PER_REQUEST):
            n = next(self._ids).to_bytes(8, "big")
            ids.append(n)
            scope.spans.add(
                trace_id=self.nonce + n,
                span_id=n,
                name="fault-load",
                kind=2,
                start_time_unix_nano=now,
                end_time_unix_nano=now + 1000,
            )
        return req.SerializeToString(), ids

    def _run(self) -> None:
        # Reconnect quickly after a kill (gRPC's default backoff starts at 1 s, up to 120 s).
        options = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 500)]
        channel = grpc.insecure_channel(self.target, options=options)
        export = channel.unary_unary(EXPORT)
        while not self._stop.is_set():
            started = time.monotonic()
            payload, ids = self._request()
            try:
                export(payload, timeout=5)
                ok = True
            except grpc.RpcError:
                ok = False
            with self._lock:
                self.sent += len(ids)
                if ok:
                    self.served += 1
                    self.acknowledged.update(ids)
                else:
                    self.failed += 1
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))
        channel.close()

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)


def stored_ids(db: Path, nonce: bytes) -> set[bytes]:
    """Span ids of this run's spans in a trace store file (read-only; the writer may be running)."""
    if not db.exists():
        return set()
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)) as conn:
            rows = conn.execute(
                "SELECT span_id FROM spans WHERE trace_id >= ? AND trace_id < ?",
                (nonce + bytes(8), nonce + b"\xff" * 8 + b"\xff"),
            ).fetchall()
    except sqlite3.Error:
        return set()
    return {bytes(r[0]) for r in rows}


def wait_stored(db: Path, load: Load, timeout: float) -> set[bytes]:
    """The stored ids once every acknowledged span is stored, or at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        stored = stored_ids(db, load.nonce)
        if load.acknowledged <= stored or time.monotonic() > deadline:
            return stored
        time.sleep(0.25)


@dataclass
class Result:
    fault: str
    sent: int
    acknowledged: int
    stored: int
    peak_rss_mib: float
    served: int
    failed: int
    notes: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # what a scenario checks beyond the row

    @property
    def lost(self) -> int:
        return self.acknowledged - self.stored


def result(fault: str, load: Load, stored: set[bytes], peak_rss: float, **extra: Any) -> Result:
    return Result(
        fault,
        load.sent,
        len(load.acknowledged),
        len(load.acknowledged & stored),
        peak_rss,
        extra.pop("served", load.served),
        extra.pop("failed", load.failed),
        **extra,
    )


def peak(procs: list[Proc]) -> float:
    return max(p.peak_rss_mib for p in procs)


# --- collectors ---------------------------------------------------------------------------


# The listeners of the built-in default config, and the components their ready lines name.
DEFAULT_LISTENERS = {
    "receivers.otlp.protocols.grpc.endpoint": "otlp-grpc",
    "receivers.otlp.protocols.http.endpoint": "otlp-http",
    "receivers.zipkin.endpoint": "zipkin",
    "extensions.health_check.endpoint": "health-check",
    "extensions.query.endpoint": "query",
    "service.telemetry.metrics.address": "metrics",
}


def default_collector_args(*sets: str) -> list[str]:
    """`collector` arguments for the built-in default config (no --config) with the `--set`
    overrides `sets` (KEY=VALUE); every listener they do not set is on a free loopback port."""
    named = {item.split("=", 1)[0] for item in sets}
    args = ["collector"]
    for key in DEFAULT_LISTENERS:
        if key not in named:
            args += ["--set", f"{key}=127.0.0.1:0"]
    for item in sets:
        args += ["--set", item]
    return args


def store_collector(port: int, data_dir: Path, preexec: Callable[[], None] | None = None) -> Proc:
    """The built-in default config (no --config), OTLP/gRPC on `port`, every other listener on 0."""
    args = default_collector_args(f"receivers.otlp.protocols.grpc.endpoint=127.0.0.1:{port}")
    return Proc(args, env={"MESHTRACE_DATA_DIR": str(data_dir)}, preexec=preexec).wait_ready(
        "otlp-grpc", "query"
    )


def agent_collector(port: int, backend_port: int, workdir: Path) -> Proc:
    """otlp -> otlp_grpc to the backend, with a persistent queue on file_storage, retrying forever."""
    config = {
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{port}"}}}},
        "exporters": {
            "otlp_grpc": {
                "endpoint": f"127.0.0.1:{backend_port}",
                "tls": {"insecure": True},
                "sending_queue": {"storage": "file_storage", "queue_size": 100_000},
                "retry_on_failure": {
                    "initial_interval": "200ms",
                    "max_interval": "1s",
                    "max_elapsed_time": 0,
                },
            }
        },
        "extensions": {"file_storage": {"directory": str(workdir / "queue"), "create_directory": True}},
        "service": {
            "extensions": ["file_storage"],
            "pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["otlp_grpc"]}},
            "telemetry": {"metrics": {"address": "127.0.0.1:0"}},
        },
    }
    path = workdir / "agent.yaml"
    path.write_text(yaml.safe_dump(config))
    return Proc(["collector", "--config", str(path)]).wait_ready("otlp-grpc")


# --- scenarios ----------------------------------------------------------------------------


def collector_sigkill(workdir: Path, seconds: float, rate: float) -> Result:
    port, data = free_port(), workdir / "data"
    procs = [store_collector(port, data)]
    with Load(f"127.0.0.1:{port}", rate) as load:
        for _ in range(2):
            time.sleep(seconds / 3)
            procs[-1].stop(signal.SIGKILL)
            procs.append(store_collector(port, data))
        served_before = load.served
        time.sleep(seconds / 3)
    stored = wait_stored(data / "traces.db", load, 30)
    procs[-1].stop()
    counts = {"served_after_restart": load.served - served_before}
    return result("SIGKILL the default collector (x2, restarted)", load, stored, peak(procs), counts=counts)


def agent_sigkill_in_outage(workdir: Path, seconds: float, rate: float) -> Result:
    port, backend_port, data = free_port(), free_port(), workdir / "data"
    procs = [agent_collector(port, backend_port, workdir)]
    with Load(f"127.0.0.1:{port}", rate) as load:
        time.sleep(seconds / 2)  # the backend is down: everything waits in the agent's queue
        queued = len(load.acknowledged)
        procs[-1].stop(signal.SIGKILL)
        procs.append(agent_collector(port, backend_port, workdir))
        time.sleep(seconds / 4)
        procs.append(store_collector(backend_port, data))
        time.sleep(seconds / 4)
    stored = wait_stored(data / "traces.db", load, 60)
    for p in procs[1:]:
        p.stop()
    return result(
        "SIGKILL an agent retrying in a backend outage",
        load,
        stored,
        peak(procs),
        notes=[f"{queued:,} spans were queued on the agent's disk when it was killed"],
        counts={"queued_at_kill": queued},
    )


def backend_outage(workdir: Path, seconds: float, rate: float) -> Result:
    port, backend_port, data = free_port(), free_port(), workdir / "data"
    backend = store_collector(backend_port, data)
    procs = [agent_collector(port, backend_port, workdir), backend]
    with Load(f"127.0.0.1:{port}", rate) as load:
        time.sleep(seconds / 4)
        backend.stop(signal.SIGKILL)
        time.sleep(seconds / 2)
        procs.append(store_collector(backend_port, data))
        time.sleep(seconds / 4)
    stored = wait_stored(data / "traces.db", load, 60)
    for p in (procs[0], procs[2]):
        p.stop()
    return result("backend SIGKILLed, down for half the run", load, stored, peak(procs))


@contextlib.contextmanager
def small_disk(workdir: Path, mib: int) -> Iterator[tuple[Path, Callable[[], None] | None, str]]:
    """(data directory, preexec for the collector, how): a tmpfs of `mib` MiB when this process
    may mount one (root), else a file-size limit of `mib` MiB on the collector process (writes
    past it fail with EFBIG, as a full disk fails them with ENOSPC)."""
    data = workdir / "small-disk"
    data.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={mib}m", "tmpfs", str(data)], capture_output=True
    )
    if mounted.returncode == 0:
        try:
            yield data, None, f"tmpfs of {mib} MiB"
        finally:
            subprocess.run(["umount", "-l", str(data)], capture_output=True)
        return
    limit = mib << 20

    def limit_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    yield data, limit_files, f"file-size limit of {mib} MiB (no tmpfs: not root)"


def _query_ok(proc: Proc) -> bool:
    try:
        with urllib.request.urlopen(f"http://{proc.address('query')}/api/services", timeout=5) as resp:
            return bool(resp.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def store_disk_full(workdir: Path, seconds: float, rate: float) -> Result:
    port = free_port()
    with small_disk(workdir, 8) as (data, preexec, how):
        proc = store_collector(port, data, preexec)
        queries_ok = queries_failed = 0
        with Load(f"127.0.0.1:{port}", rate * 4) as load:
            # `seconds` of load once the disk is full (waiting for that at most 60 s)
            full_by = time.monotonic() + 60
            deadline = full_by + seconds
            while time.monotonic() < deadline:
                if load.failed == 0 and time.monotonic() < full_by:
                    deadline = time.monotonic() + seconds
                if _query_ok(proc):
                    queries_ok += 1
                else:
                    queries_failed += 1
                time.sleep(0.2)
        stored = wait_stored(data / "traces.db", load, 10)
        proc.stop()
    notes = [
        how,
        f"{load.failed:,} export requests refused once the disk was full",
        f"query API during the run: {queries_ok} answered, {queries_failed} failed",
    ]
    counts = {"queries_ok": queries_ok, "queries_failed": queries_failed}
    return result("store's disk full", load, stored, peak([proc]), notes=notes, counts=counts)


def listener_pid(host: str, port: int) -> int | None:
    owner = ports.owner(host, port)  # "pid N (command line)" when /proc tells
    return int(owner.split()[1]) if owner and owner.startswith("pid ") else None


def mesh_kills(workdir: Path, seconds: float, rate: float) -> Result:
    a, b = random.randint(100, 250), random.randint(1, 250)
    host, network = f"127.{a}.{b}.200", f"127.{a}.{b}.0/25"
    data = workdir / "data"
    up = Proc(
        [
            "up",
            "--host",
            host,
            "--network",
            network,
            "--ingress",
            f"{host}:8080",
            "--ui",
            f"{host}:16686",
            "--data-dir",
            str(data),
        ],
        env={"MESHTRACE_DATA_DIR": str(data)},
    )
    try:
        up.wait_ready("ingress", "ui", timeout=180)
        http = HttpLoad(f"http://{host}:8080/api/data", rate / 4)
        killed: list[str] = []
        collector_peak = 0.0
        with Load(f"{host}:4317", rate) as load, http:
            for what, address in (
                ("control plane", (host, 15010)),
                ("frontend-0 sidecar", (f"127.{a}.{b}.1", 15006)),
                # by its health_check port: ports.owner reads /proc/net/tcp only, and gRPC listens
                # on an IPv6 socket with a v4-mapped address
                ("collector", (host, 13133)),
            ):
                time.sleep(seconds / 4)
                pid = listener_pid(*address)
                if pid is not None:
                    if what == "collector":
                        collector_peak = peak_rss_mib(pid)
                    os.kill(pid, signal.SIGKILL)
                    killed.append(what)
            time.sleep(seconds / 4)
        stored = wait_stored(data / "traces.db", load, 30)
        pid = listener_pid(host, 13133)
        if pid is not None:
            collector_peak = max(collector_peak, peak_rss_mib(pid))
    finally:
        up.stop(signal.SIGINT, timeout=60)
    return result(
        "meshtrace up: SIGKILL " + ", ".join(killed),
        load,
        stored,
        collector_peak,
        served=http.served,
        failed=http.failed,
        notes=[f"OTLP export requests: {load.served:,} answered, {load.failed:,} failed (collector down)"],
        counts={"killed": len(killed)},
    )


class HttpLoad:
    """One thread of GETs at `rate`/s through the ingress gateway, counting 200s and the rest."""

    def __init__(self, url: str, rate: float) -> None:
        self.url = url
        self.interval = 1 / rate
        self.served = 0
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                with self._opener.open(self.url, timeout=10) as resp:
                    ok = resp.status == 200
            except (OSError, urllib.error.URLError):
                ok = False
            if ok:
                self.served += 1
            else:
                self.failed += 1

    def __enter__(self) -> HttpLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)


SCENARIOS: dict[str, Callable[[Path, float, float], Result]] = {
    "collector-sigkill": collector_sigkill,
    "agent-sigkill-in-outage": agent_sigkill_in_outage,
    "backend-outage": backend_outage,
    "store-disk-full": store_disk_full,
    "mesh-kills": mesh_kills,
}

HEADER = [
    "fault",
    "spans sent",
    "acknowledged",
    "stored",
    "lost",
    "peak RSS MiB",
    "requests served",
    "failed",
]


def table(results: list[Result]) -> str:
    return markdown_table(
        HEADER,
        [
            [
                r.fault,
                f"{r.sent:,}",
                f"{r.acknowledged:,}",
                f"{r.stored:,}",
                f"{r.lost:,}",
                f"{r.peak_rss_mib:.0f}",
                f"{r.served:,}",
                f"{r.failed:,}",
            ]
            for r in results
        ],
    )


@click.command()
@click.option("--seconds", default=30.0, show_default=True, help="Length of each scenario's load.")
@click.option("--rate", default=100.0, show_default=True, help="OTLP export requests/s (10 spans each).")
@click.option(
    "--only",
    type=click.Choice(sorted(SCENARIOS)),
    multiple=True,
    help="Run only these scenarios (repeatable).",
)
def faults(seconds: float, rate: float, only: tuple[str, ...]) -> None:
    """Kill components under load: spans sent / acknowledged / stored / lost, peak RSS, requests."""
    results: list[Result] = []
    for name in only or SCENARIOS:
        click.echo(f"running {name} ({seconds:.0f}s of load)...", err=True)
        with tempfile.TemporaryDirectory(prefix=f"meshtrace-faults-{name}-") as tmp:
            results.append(SCENARIOS[name](Path(tmp), seconds, rate))
    click.echo(f"\nmeshtrace bench faults --seconds {seconds:g} --rate {rate:g}\n")
    click.echo(table(results))
    notes = [f"- {r.fault}: {note}" for r in results for note in r.notes]
    if notes:
        click.echo("\n" + "\n".join(notes))
    if any(r.lost for r in results):
        raise click.ClickException("acknowledged spans were lost")
