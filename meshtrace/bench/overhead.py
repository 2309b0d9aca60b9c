"""`meshtrace bench overhead`: what a request pays for the mesh (the seed's 性能指标 table).

Paths measured in one run, each rate cycling through all of them so they share the machine's load:
  direct:          load -> app
  direct +0.2 ms:  load -> app that spins 0.2 ms before answering (can the method see 0.2 ms?)
  mesh:            load -> client sidecar outbound -> server sidecar inbound -> app (tracing N %)
  nginx pair:      load -> nginx -> nginx -> app                               (the yardstick)
The load comes from Debian's `hey` (Go, fixed rate per connection, one CSV row per request) or,
without it, from a small asyncio generator of our own (open loop, latency from when a request was
due) whose own floor is higher. Every process is a separate OS process on 127.0.0.0/8 sharing this
machine's cores. CPU comes from /proc (utime+stime) over each run, RSS from VmRSS at its end;
added latency and CPU are also given as a ratio to the nginx pair's in the same round.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any, cast

import click

from meshtrace import ready
from meshtrace.bench.report import cpu_seconds, free_port

BODY_SIZE = 1024
CONNECTIONS = 4


# --- the minimal app (also the span sink): every request gets 200 and a 1 KB body -------------


def serve_app(host: str, delay_ms: float = 0.0) -> None:
    """Run the benchmark app on host:0 (prints its ready line); `delay_ms`: spin that long before
    each answer (a busy wait: sleeping would add the event loop's timer granularity)."""
    import httptools

    from meshtrace import aio

    answer = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n\r\n%s" % (
        BODY_SIZE,
        b"x" * BODY_SIZE,
    )

    class App(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
            self.parser = httptools.HttpRequestParser(self)

        def data_received(self, data: bytes) -> None:
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                self.transport.close()

        def on_message_complete(self) -> None:
            if delay_ms:
                until = time.perf_counter() + delay_ms / 1000.0
                while time.perf_counter() < until:
                    pass
            self.transport.write(answer)

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(App, host, 0, backlog=1024)
        ready.announce("app", host, server.sockets[0].getsockname()[1])
        await asyncio.Event().wait()

    aio.run(main())


# --- the load clients -------------------------------------------------------------------------
#
# Both return the latencies (ms) of the requests answered 200 after the warm-up, and the count of
# other answers. Requests are GETs answered with 1 KB, on CONNECTIONS keep-alive connections.


@dataclass(frozen=True)
class Target:
    """Where the load goes: `host:port`, and the request target; an absolute-form target
    (http://server:8080/) means `host:port` is an HTTP proxy (the client sidecar's outbound)."""

    host: str
    port: int
    target: str = "/"
    authority: str = ""

    @property
    def via_proxy(self) -> bool:
        return self.target.startswith("http://")


HEY_RESOLUTION_MS = 0.1  # hey's CSV prints seconds with 4 decimals


def hey_load(target: Target, rate: int, duration: float, warmup: float) -> tuple[list[float], int]:
    """Debian's `hey`: each of CONNECTIONS workers sends at rate/CONNECTIONS (a ticker: a request
    waits for its tick, so the rate holds while answers are faster than the tick); one CSV row per
    answered request with its latency and its start offset, by which the warm-up is dropped."""
    args = ["hey", "-c", str(CONNECTIONS), "-q", f"{rate / CONNECTIONS:g}", "-z", f"{warmup + duration:g}s",
            "-t", "10", "-o", "csv", "-disable-compression"]  # fmt: skip
    if target.via_proxy:
        args += ["-x", f"http://{target.host}:{target.port}", target.target]
    else:
        args += ["-host", target.authority, f"http://{target.host}:{target.port}{target.target}"]
    return parse_hey_csv(_output(args, warmup + duration + 60), warmup)


def parse_hey_csv(out: str, warmup: float) -> tuple[list[float], int]:
    """hey's CSV (response-time,DNS+dialup,DNS,Request-write,Response-delay,Response-read,
    status-code,offset; seconds) -> (latencies in ms of the 200s started after `warmup`, others)."""
    latencies: list[float] = []
    others = 0
    for line in out.splitlines()[1:]:
        cells = line.split(",")
        try:
            if len(cells) != 8 or float(cells[7]) < warmup:
                continue
            latency = float(cells[0]) * 1000.0
        except ValueError:
            raise click.ClickException(f"unexpected line in hey's CSV output: {line[:200]!r}") from None
        if cells[6] == "200":
            latencies.append(latency)
        else:
            others += 1
    return latencies, others


def python_load(target: Target, rate: int, duration: float, warmup: float) -> tuple[list[float], int]:
    """The asyncio generator, in a process of its own (see `run_load`)."""
    spec = {"host": target.host, "port": target.port, "target": target.target,
            "authority": target.authority, "rate": rate, "duration": duration, "warmup": warmup}  # fmt: skip
    code = f"from meshtrace.bench.overhead import run_load; run_load({json.dumps(json.dumps(spec))})"
    out = _output(python_args(code), warmup + duration + 60)
    data = json.loads(out.strip().splitlines()[-1])
    return data["latencies"], data["errors"]


def _output(args: list[str], timeout: float) -> str:
    """A load client's stdout; its stderr in the error when it fails."""
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise click.ClickException(f"{args[0]} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return done.stdout


def run_load(spec_json: str) -> None:
    """Fixed-rate open-loop load (latency counts from when a request was due, so a stalled proxy
    cannot hide queueing); prints one JSON line with the latencies (ms) and errors."""
    from meshtrace import aio
    from meshtrace.sidecar.backend import AsyncioBackend
    from meshtrace.sidecar.conn import Upstream

    spec = json.loads(spec_json)
    host, port, target, authority = spec["host"], spec["port"], spec["target"], spec["authority"]
    rate, duration, warmup = float(spec["rate"]), float(spec["duration"]), float(spec["warmup"])
    request = f"GET {target} HTTP/1.1\r\nhost: {authority}\r\n\r\n".encode()
    latencies: list[float] = []
    errors = [0]
    backend = AsyncioBackend()

    async def connection(i: int, start: float) -> None:
        up = Upstream(await backend.connect(host, port), (host, port, False))
        interval = CONNECTIONS / rate
        k = 0
        # perf_counter, not loop.time(): uvloop's clock has millisecond resolution
        while True:
            due = start + i / rate + k * interval
            if due > start + warmup + duration:
                break
            k += 1
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                up.writer.write(request)
                head = await up.response_head(False)
                while await up.body_chunk() is not None:
                    pass
                ok = head.status == 200
            except Exception:
                ok = False
                up.writer.close()
                up = Upstream(await backend.connect(host, port), (host, port, False))
            if due >= start + warmup:
                if ok:
                    latencies.append(round((time.perf_counter() - due) * 1000.0, 4))
                else:
                    errors[0] += 1
        up.writer.close()

    async def main() -> None:
        start = time.perf_counter() + 0.05
        await asyncio.gather(*(connection(i, start) for i in range(CONNECTIONS)))

    aio.run(main())
    sys.stdout.write(json.dumps({"latencies": latencies, "errors": errors[0]}) + "\n")


def h2load_load(target: Target, rate: int, duration: float, warmup: float) -> tuple[list[float], int]:
    """Debian's h2load, for `--protocol grpc` (overhead_grpc.py)."""
    from meshtrace.bench.overhead_grpc import h2load_load as load

    return load(target, rate, duration, warmup)


CLIENTS = {"hey": (hey_load, HEY_RESOLUTION_MS), "python": (python_load, 0.0), "h2load": (h2load_load, 0.0)}


# --- processes ----------------------------------------------------------------------------------


@dataclass
class Proc:
    popen: subprocess.Popen[str]
    listeners: dict[str, tuple[str, int]] = field(default_factory=dict)

    def pids(self) -> list[int]:
        """The process and its children (nginx workers)."""
        out = [self.popen.pid]
        with suppress(OSError):
            kids = Path(f"/proc/{self.popen.pid}/task/{self.popen.pid}/children").read_text().split()
            out += [int(k) for k in kids]
        return out

    def cpu_seconds(self) -> float:
        total = 0.0
        for pid in self.pids():
            with suppress(OSError):  # a worker may have just exited
                total += cpu_seconds(pid)
        return total

    def rss_mb(self) -> float:
        kb = 0
        for pid in self.pids():
            with suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        kb += int(line.split()[1])
        return kb / 1024.0

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def start_process(
    args: list[str], components: tuple[str, ...], log: Path, timeout: float = 30.0, code: Path | None = None
) -> Proc:
    """Start a process and wait for its ready lines; `code`: a directory whose `meshtrace` package
    it runs instead of this one (the --baseline sidecars)."""
    env = None if code is None else {**os.environ, "PYTHONPATH": str(code)}
    popen = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=log.open("a"), text=True, start_new_session=True, env=env
    )
    proc = Proc(popen)
    deadline = time.monotonic() + timeout
    assert popen.stdout is not None
    while not all(c in proc.listeners for c in components):
        if time.monotonic() > deadline or popen.poll() is not None:
            proc.stop()
            raise click.ClickException(f"{args[:4]} did not start; see {log}")
        line = popen.stdout.readline()
        parsed = ready.parse(line)
        if parsed is not None:
            proc.listeners[parsed[0]] = (parsed[1], parsed[2])
    # keep reading stdout so a chatty process never blocks on a full pipe
    threading.Thread(target=lambda: [None for _ in popen.stdout or []], daemon=True).start()
    return proc


def python_args(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def _sidecar_config(app: str, sink: str, sampling: float, services: dict[str, Any]) -> dict[str, Any]:
    block = {
        "enabled": True,
        "provider": {"name": "sink", "type": "opentelemetry", "protocol": "http", "endpoint": sink,
                     "path": "/v1/traces", "timeout_s": 3.0, "max_tag_length": 256},
        "random_sampling_percentage": sampling,
    }  # fmt: skip
    return {
        "schema": 1,
        "workload": {"name": app, "namespace": "default", "labels": {"app": app, "version": "v1"}},
        "tracing": {"client": block, "server": block},
        "metrics": {"enabled": True},
        "services": services,
    }


@contextmanager
def sidecar_pair(
    work: Path, app: tuple[str, int], sink: str, sampling: float, code: Path | None = None, index: int = 0
) -> Iterator[tuple[Proc, Proc]]:
    """A client and a server sidecar; `index` keeps several pairs' addresses apart."""
    client_ip, server_ip = f"127.0.9.{20 + 2 * index}", f"127.0.9.{21 + 2 * index}"
    common = ["--namespace", "default", "--no-access-log", "--inbound-port", "0", "--outbound-port", "0",
              "--admin-port", "0", "--stats-port", "0", "--health-port", "0"]  # fmt: skip
    started: list[Proc] = []
    try:
        server_cfg = work / f"server-{index}.json"
        server_cfg.write_text(json.dumps(_sidecar_config("server", sink, sampling, {})))
        server = start_process(
            [sys.executable, "-m", "meshtrace", "sidecar", "--workload", "server", "--ip", server_ip,
             "--labels", "app=server", "--app-host", app[0], "--app-port", str(app[1]),
             "--config", str(server_cfg), *common],
            ("inbound",), work / f"server-{index}.log", code=code,
        )  # fmt: skip
        started.append(server)
        services = {
            "server.default.svc.cluster.local": {
                "name": "server", "namespace": "default", "ports": [{"port": 8080}],
                "endpoints": [{"ip": server_ip, "port": server.listeners["inbound"][1], "pod": "server-0"}],
            }
        }  # fmt: skip
        client_cfg = work / f"client-{index}.json"
        client_cfg.write_text(json.dumps(_sidecar_config("client", sink, sampling, services)))
        client = start_process(
            [sys.executable, "-m", "meshtrace", "sidecar", "--workload", "client", "--ip", client_ip,
             "--labels", "app=client", "--app-port", "8080", "--config", str(client_cfg), *common],
            ("outbound",), work / f"client-{index}.log", code=code,
        )  # fmt: skip
        started.append(client)
        yield client, server
    finally:
        for p in started:
            p.stop()


MTLS_MESH = """\
apiVersion: install.istio.io/v1alpha1
kind: IstioOperator
metadata: {{name: control-plane, namespace: istio-system}}
spec:
  meshConfig:
    extensionProviders:
    - name: sink
      opentelemetry: {{service: {sink_host}, port: {sink_port}, http: {{path: /v1/traces, timeout: 3s}}}}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {{name: mesh-default, namespace: istio-system}}
spec:
  tracing: [{{providers: [{{name: sink}}], randomSamplingPercentage: {sampling}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: server, namespace: default}}
spec: {{selector: {{app: server}}, ports: [{{name: http, port: 8080}}{extra_ports}]}}
"""


@contextmanager
def mtls_pair(
    work: Path,
    app: tuple[str, int],
    sink: tuple[str, int],
    sampling: float,
    index: int = 0,
    extra_ports: str = "",
) -> Iterator[tuple[Proc, Proc]]:
    """The same pair, configured by a control plane that signs their certificates: the
    client -> server hop is mutual TLS (auto mTLS, PERMISSIVE), as under `meshtrace up`.
    `index` keeps several pairs' addresses and files apart, as sidecar_pair's; `extra_ports`:
    more Service ports (YAML flow items, each starting with a comma)."""
    from meshtrace.control import identity

    client_ip, server_ip = f"127.0.9.{20 + 2 * index}", f"127.0.9.{21 + 2 * index}"
    folder = work / f"mtls-{index}"
    data = folder / "control-data"
    folder.mkdir()
    (folder / "mesh.yaml").write_text(
        MTLS_MESH.format(sink_host=sink[0], sink_port=sink[1], sampling=sampling, extra_ports=extra_ports)
    )
    key = identity.load_or_create_key(data)
    started: list[Proc] = []
    try:
        control = start_process(
            [sys.executable, "-m", "meshtrace", "control", "-f", str(folder / "mesh.yaml"),
             "--listen", "127.0.0.1:0", "--data-dir", str(data)],
            ("control",), folder / "control.log",
        )  # fmt: skip
        started.append(control)
        url = "http://{}:{}".format(*control.listeners["control"])
        common = ["--namespace", "default", "--no-access-log", "--inbound-port", "0",
                  "--outbound-port", "0", "--admin-port", "0", "--stats-port", "0", "--health-port", "0",
                  "--control", url]  # fmt: skip
        procs = []
        for name, ip, extra in (
            ("server", server_ip, ["--app-host", app[0], "--app-port", str(app[1])]),
            ("client", client_ip, ["--app-port", "8080"]),
        ):
            token = folder / f"{name}.token"
            identity.write_token(
                token, identity.mint(key, identity.Claims("default", "default", f"{name}-0"))
            )
            proc = start_process(
                [sys.executable, "-m", "meshtrace", "sidecar", "--workload", name, "--pod", f"{name}-0",
                 "--ip", ip, "--labels", f"app={name}", "--token-file", str(token), *extra, *common],
                ("inbound", "outbound"), folder / f"{name}.log",
            )  # fmt: skip
            started.append(proc)
            procs.append(proc)
        server, client = procs
        _wait_for_endpoint(client, server_ip)
        yield client, server
    finally:
        for p in reversed(started):
            p.stop()


def _wait_for_endpoint(client: Proc, server_ip: str, timeout: float = 20.0) -> None:
    """Until the client's config lists the server as an mTLS endpoint."""
    admin = "http://{}:{}/config_dump".format(*client.listeners["admin"])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with suppress(OSError, ValueError):
            with urllib.request.urlopen(admin, timeout=2) as answer:
                services = json.load(answer)["config"].get("services", {})
            eps = services.get("server.default.svc.cluster.local", {}).get("endpoints", [])
            if any(e["ip"] == server_ip and e.get("mtls") for e in eps):
                return
        time.sleep(0.1)
    raise click.ClickException("the client sidecar never learned the server endpoint")


NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;{http_options}
  client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy; fastcgi_temp_path {dir}/fcgi;
  uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;
  upstream next {{ server {up_host}:{up_port}; keepalive 16; }}
  server {{
    listen {host}:{port}{listen_options};
    location / {{ {location} }}
  }}
}}
"""


@dataclass(frozen=True)
class NginxProxy:
    """How each nginx of the yardstick pair proxies: the parts of NGINX_CONF that differ."""

    location: str
    listen_options: str = ""
    http_options: str = ""


# HTTP/1.1 to a keep-alive upstream
NGINX_HTTP = NginxProxy('proxy_pass http://next; proxy_http_version 1.1; proxy_set_header Connection "";')


def nginx_binary() -> str | None:
    return shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


def _nginx(work: Path, name: str, host: str, up: tuple[str, int], proxy: NginxProxy) -> Proc:
    port = free_port(host)
    conf = NGINX_CONF.format(
        dir=work / name, host=host, port=port, up_host=up[0], up_port=up[1],
        location=proxy.location, listen_options=proxy.listen_options, http_options=proxy.http_options,
    )  # fmt: skip
    return start_nginx(work, name, host, port, conf)


def start_nginx(work: Path, name: str, host: str, port: int, config: str) -> Proc:
    """nginx with `config` (listening on host:port), ready once it accepts a connection."""
    nginx = nginx_binary() or "/usr/sbin/nginx"
    d = work / name
    d.mkdir(exist_ok=True)
    conf = d / "nginx.conf"
    conf.write_text(config)
    popen = subprocess.Popen(
        [nginx, "-c", str(conf), "-p", str(d), "-e", str(d / "error.log")],
        stdout=subprocess.DEVNULL, stderr=(d / "stderr.log").open("w"), start_new_session=True, text=True,
    )  # fmt: skip
    proc = Proc(popen, {"proxy": (host, port)})
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return proc
        if popen.poll() is not None:
            break
        time.sleep(0.05)
    proc.stop()
    raise click.ClickException(f"nginx did not start; see {d}/error.log")


@contextmanager
def nginx_pair(
    work: Path, app: tuple[str, int], proxy: NginxProxy = NGINX_HTTP, name: str = "nginx"
) -> Iterator[tuple[Proc, Proc]]:
    """The yardstick: two nginx between the load and the app, as the two sidecars are."""
    server = _nginx(work, f"{name}-server", "127.0.9.4", app, proxy)
    try:
        client = _nginx(work, f"{name}-client", "127.0.9.3", server.listeners["proxy"], proxy)
        try:
            yield client, server
        finally:
            client.stop()
    finally:
        server.stop()


# --- measuring --------------------------------------------------------------------------------

DIRECT, CALIBRATION, NGINX, MTLS = "direct", "direct +0.2 ms", "nginx pair", "mesh mTLS"
CALIBRATION_MS = 0.2


@dataclass
class Result:
    path: str
    sampling: str
    rate: int
    client: str
    achieved: float  # answered req/s
    p50: float
    p90: float
    p99: float
    errors: int
    count: int
    cpu: list[float]  # vCPU per 1000 req/s, per proxy (client, server)
    rss: list[float]


def percentile(values: list[float], q: float, resolution: float = 0.0) -> float:
    """The q-quantile of `values`. With `resolution` (values rounded to multiples of it, as hey's
    0.1 ms), interpolated inside the bin where the rank falls, each bin's values taken as spread
    evenly over it: a shift smaller than one bin still moves the figure."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    if not resolution:
        return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]
    rank = q * len(ordered)
    center = ordered[min(len(ordered) - 1, int(rank))]
    low = center - resolution / 2
    below = bisect_left(ordered, low)
    in_bin = bisect_right(ordered, center + resolution / 2) - below
    return low + resolution * (rank - below) / in_bin


def measure(
    path: str, sampling: str, rate: int, target: Target, proxies: list[Proc], duration: float, warmup: float,
    client: str,
) -> Result:  # fmt: skip
    load, resolution = CLIENTS[client]
    cpu_at: list[list[float]] = []

    def sample_cpu() -> None:  # CPU over the measured part of the run (after the warm-up)
        cpu_at.append([p.cpu_seconds() for p in proxies] + [time.monotonic()])

    start = threading.Timer(warmup, sample_cpu)
    start.start()
    try:
        latencies, errors = load(target, rate, duration, warmup)
    finally:
        start.cancel()
    sample_cpu()
    if len(cpu_at) < 2:  # the load ended before its warm-up did
        cpu_at.insert(0, cpu_at[0])
    elapsed = max(cpu_at[1][-1] - cpu_at[0][-1], 1e-9)
    cpu = [(b - a) / elapsed * 1000.0 / rate for a, b in zip(cpu_at[0][:-1], cpu_at[1][:-1], strict=True)]
    q = {k: percentile(latencies, k / 100, resolution) for k in (50, 90, 99)}
    return Result(path, sampling, rate, client, len(latencies) / duration, q[50], q[90], q[99], errors,
                  len(latencies), cpu, [p.rss_mb() for p in proxies])  # fmt: skip


def median_result(runs: list[Result]) -> Result:
    """One path's rounds as one row: each figure the median over the rounds; errors summed."""
    first = runs[0]
    return Result(
        first.path, first.sampling, first.rate, first.client,
        median(r.achieved for r in runs), median(r.p50 for r in runs), median(r.p90 for r in runs),
        median(r.p99 for r in runs), sum(r.errors for r in runs), sum(r.count for r in runs),
        [median(c) for c in zip(*(r.cpu for r in runs), strict=True)],
        [median(m) for m in zip(*(r.rss for r in runs), strict=True)],
    )  # fmt: skip


def _ratio(value: float, nginx: float | None) -> str:
    if nginx is None or nginx <= 0.005 or value != value:  # no yardstick, or no figure (NaN)
        return "-"
    return f"{value / nginx:.1f}x"


def table(results: list[Result]) -> str:
    """All rows; added latency over the direct path of the same rate and client, and the added P90
    and per-proxy CPU as multiples of the nginx pair's in the same run."""
    base = {(r.rate, r.client): r for r in results if r.path == DIRECT}
    nginx = {(r.rate, r.client): r for r in results if r.path == NGINX}
    lines = [
        "| req/s | client | path | sampling | answered/s | P50 ms | P90 ms | P99 ms | added P50 "
        "| added P90 | added P99 | added P90 / nginx's | vCPU/1k rps (client, server) | CPU / nginx's "
        "| RSS MB | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        b, n = base.get((r.rate, r.client)), nginx.get((r.rate, r.client))
        added = [r.p50 - b.p50, r.p90 - b.p90, r.p99 - b.p99] if b is not None and r.path != DIRECT else []
        n_p90 = n.p90 - b.p90 if n is not None and b is not None else None
        lat_ratio = _ratio(added[1], n_p90) if added and r.path not in (NGINX, CALIBRATION) else "-"
        cpu_ratio = "-"
        if r.cpu and n is not None and n.cpu and r.path != NGINX:
            cpu_ratio = _ratio(sum(r.cpu) / len(r.cpu), sum(n.cpu) / len(n.cpu))
        lines.append(
            f"| {r.rate} | {r.client} | {r.path} | {r.sampling} | {r.achieved:.0f} "
            f"| {r.p50:.2f} | {r.p90:.2f} | {r.p99:.2f} "
            f"| {' | '.join(f'{a:+.2f}' for a in added) if added else '- | - | -'} "
            f"| {lat_ratio} | {', '.join(f'{c:.3f}' for c in r.cpu) or '-'} | {cpu_ratio} "
            f"| {', '.join(f'{m:.0f}' for m in r.rss) or '-'} | {r.errors} |"
        )
    return "\n".join(lines)


def seed_table(results: list[Result], rate: int, client: str) -> str:
    """The seed's rows (P50, P90, P99, CPU, memory) at `rate`, 10 % sampling."""
    base = next((r for r in results if (r.path, r.rate, r.client) == (DIRECT, rate, client)), None)
    mesh = next(
        (r for r in results if (r.path, r.sampling, r.rate, r.client) == ("mesh", "10%", rate, client)), None
    )
    if base is None or mesh is None:
        return ""
    return "\n".join([
        f"| metric ({rate} req/s, {client}) | no mesh | meshtrace + tracing (10% sampling) |",
        "|---|---|---|",
        f"| P50 latency | {base.p50:.2f} ms | {mesh.p50:.2f} ms ({mesh.p50 - base.p50:+.2f} ms) |",
        f"| P90 latency | {base.p90:.2f} ms | {mesh.p90:.2f} ms ({mesh.p90 - base.p90:+.2f} ms) |",
        f"| P99 latency | {base.p99:.2f} ms | {mesh.p99:.2f} ms ({mesh.p99 - base.p99:+.2f} ms) |",
        f"| CPU per sidecar | 0 | {max(mesh.cpu) * rate / 1000:.3f} vCPU "
        f"({max(mesh.cpu):.3f} vCPU per 1000 req/s) |",
        f"| memory per sidecar | 0 | {max(mesh.rss):.0f} MB RSS |",
    ])  # fmt: skip


def app_process(work: Path, host: str, delay_ms: float = 0.0) -> Proc:
    code = f"from meshtrace.bench.overhead import serve_app; serve_app({host!r}, {delay_ms!r})"
    return start_process(python_args(code), ("app",), work / f"app-{host}.log")


def measure_paths(
    paths: list[tuple[str, str, Target, list[Proc]]], rate_list: list[int], client_list: list[str],
    duration: float, warmup: float, rounds: int,
) -> list[Result]:  # fmt: skip
    """Each rate through every path in turn, `rounds` times; one median row per path and rate."""
    results: list[Result] = []
    for rate in rate_list:
        for load in client_list:
            runs: dict[int, list[Result]] = {}
            for _ in range(rounds):
                for i, (name, pct_label, target, proxies) in enumerate(paths):
                    runs.setdefault(i, []).append(
                        measure(name, pct_label, rate, target, proxies, duration, warmup, load)
                    )
                    _progress(runs[i][-1])
            results += [median_result(r) for r in runs.values()]
    return results


def report(results: list[Result], rate_list: list[int], client_list: list[str]) -> None:
    """The table, baseline and mTLS rows under the mesh rows of the same sampling, then the
    seed's table per rate and client."""
    group = {DIRECT: 0, CALIBRATION: 1, "mesh": 2, "baseline": 2, MTLS: 2, NGINX: 3}
    order = {"mesh": 0, "baseline": 1, MTLS: 2}
    results.sort(key=lambda r: (r.rate, r.client, group[r.path], r.sampling, order.get(r.path, 0)))
    click.echo("\n" + table(results))
    for rate in rate_list:
        for load in client_list:
            seed = seed_table(results, rate, load)
            if seed:
                click.echo("\n" + seed)
    unanswered = sorted({f"{r.path} {r.sampling}" for r in results if r.path != NGINX and not r.count})
    if unanswered:
        click.echo(f"\nno request answered on: {', '.join(unanswered)} (see the lines above)", err=True)


@click.command()
@click.option("--rates", default="250,500,1000", show_default=True, help="Fixed rates (req/s).")
@click.option("--sampling", default="0,10,100", show_default=True, help="Tracing percentages.")
@click.option("--duration", type=float, default=8.0, show_default=True, help="Seconds measured per run.")
@click.option("--warmup", type=float, default=1.0, show_default=True, help="Seconds discarded per run.")
@click.option(
    "--client",
    "clients",
    default="",
    help="Load clients, comma-separated: hey (Debian's, the default when installed), python (ours: "
    "open loop, but its own floor is higher; the default without hey). Both: each path measured by each.",
)
@click.option(
    "--rounds",
    type=click.IntRange(1, 20),
    default=1,
    show_default=True,
    help="Times each rate goes through all paths; each figure is the median over the rounds.",
)
@click.option(
    "--protocol",
    type=click.Choice(["http", "grpc"]),
    default="http",
    show_default=True,
    help="http: GETs over HTTP/1.1; grpc: unary gRPC calls over h2c, driven by h2load (nghttp2-client).",
)
@click.option("--no-nginx", is_flag=True, help="Skip the nginx yardstick.")
@click.option("--no-mtls", is_flag=True, help="Skip the mutual TLS pair (path `mesh mTLS`).")
@click.option(
    "--baseline",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Also measure the sidecars of another meshtrace checkout (a directory holding its "
    "`meshtrace` package, e.g. from `git archive REV meshtrace | tar -x -C DIR`): path `baseline`.",
)
def overhead(
    rates: str,
    sampling: str,
    duration: float,
    warmup: float,
    clients: str,
    rounds: int,
    protocol: str,
    no_nginx: bool,
    no_mtls: bool,
    baseline: Path | None,
) -> None:
    """Latency, CPU and memory a client+server sidecar pair adds (the seed's 性能指标 table)."""
    rate_list = [int(r) for r in rates.split(",") if r]
    samplings = [float(s) for s in sampling.split(",") if s]
    if protocol == "grpc":
        if clients not in ("", "h2load") or baseline is not None:
            raise click.UsageError("--protocol grpc runs h2load only, without --baseline")
        from meshtrace.bench import overhead_grpc

        with tempfile.TemporaryDirectory(prefix="meshtrace-overhead-grpc-") as tmp:
            results = overhead_grpc.run(
                Path(tmp), rate_list, samplings, duration, warmup, rounds, no_nginx, no_mtls
            )
        report(results, rate_list, ["h2load"])
        return
    if baseline is not None and not (baseline / "meshtrace" / "sidecar").is_dir():
        raise click.BadParameter(f"{baseline} has no meshtrace/sidecar package", param_hint="--baseline")
    client_list = [c for c in clients.split(",") if c] or ["hey" if shutil.which("hey") else "python"]
    for c in client_list:
        if c not in ("hey", "python"):  # h2load is the gRPC client
            raise click.BadParameter(f"unknown client {c!r} (hey, python)", param_hint="--client")
    if "hey" in client_list and not shutil.which("hey"):
        raise click.ClickException("hey is not installed (Debian: apt-get install hey)")
    nginx_bin = nginx_binary()
    if not no_nginx and nginx_bin is None:
        click.echo("nginx not found (Debian: apt-get install nginx-light): no yardstick", err=True)
    with tempfile.TemporaryDirectory(prefix="meshtrace-overhead-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        procs = [
            app_process(work, "127.0.9.10"),
            app_process(work, "127.0.9.11"),
            app_process(work, "127.0.9.12", CALIBRATION_MS),
        ]
        for proc in procs:
            stack.callback(proc.stop)
        app, sink, slow_app = (p.listeners["app"] for p in procs)
        sink_url = "http://{}:{}".format(*sink)
        # every path is up for the whole run, and each rate goes through all of them in turn
        paths: list[tuple[str, str, Target, list[Proc]]] = [
            (DIRECT, "-", Target(*app, "/", "{}:{}".format(*app)), []),
            (CALIBRATION, "-", Target(*slow_app, "/", "{}:{}".format(*slow_app)), []),
        ]
        codes: list[tuple[str, Path | None]] = [("mesh", None)]
        if baseline is not None:
            codes.append(("baseline", baseline.resolve()))
        for pct in samplings:
            for name, code in codes:
                pair = sidecar_pair(work, app, sink_url, pct, code, index=len(paths))
                client, server = stack.enter_context(pair)
                outbound = Target(*client.listeners["outbound"], "http://server:8080/", "server:8080")
                paths.append((name, f"{pct:g}%", outbound, [client, server]))
            if not no_mtls:
                client, server = stack.enter_context(mtls_pair(work, app, sink, pct, index=len(paths)))
                outbound = Target(*client.listeners["outbound"], "http://server:8080/", "server:8080")
                paths.append((MTLS, f"{pct:g}%", outbound, [client, server]))
        if not no_nginx and nginx_bin is not None:
            nc, ns = stack.enter_context(nginx_pair(work, app))
            paths.append((NGINX, "-", Target(*nc.listeners["proxy"], "/", "server:8080"), [nc, ns]))
        results = measure_paths(paths, rate_list, client_list, duration, warmup, rounds)
    report(results, rate_list, client_list)


def _progress(r: Result) -> None:
    click.echo(
        f"  {r.client:6} {r.path:14} {r.sampling:>5} {r.rate:5} req/s: P50 {r.p50:.2f} P90 {r.p90:.2f} "
        f"P99 {r.p99:.2f} ms, {r.count} ok, {r.errors} errors, CPU {', '.join(f'{c:.3f}' for c in r.cpu)}",
        err=True,
    )
