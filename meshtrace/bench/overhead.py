"""`meshtrace bench overhead`: what a request pays for the mesh (the seed's 性能指标 table).

Three paths measured in one run, at fixed rates (open loop: latency counts from the moment a
request was due, so a stalled proxy cannot hide queueing):
  no mesh:  load -> app
  mesh:     load -> client sidecar outbound -> server sidecar inbound -> app   (tracing 0/10/100 %)
  nginx:    load -> nginx -> nginx -> app                                      (the yardstick)
Every process is a separate OS process on 127.0.0.0/8 sharing this machine's cores; the load
generator is a small asyncio process of its own (fixed rate, 4 keep-alive connections, 1 KB
bodies). CPU comes from /proc (utime+stime) over each run, RSS from VmRSS at its end.
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
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import click

from meshtrace import ready

BODY_SIZE = 1024
CONNECTIONS = 4
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- the minimal app (also the span sink): every request gets 200 and a 1 KB body -------------


def serve_app(host: str) -> None:
    """Run the benchmark app on host:0 (prints its ready line)."""
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
            self.transport.write(answer)

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(App, host, 0, backlog=1024)
        ready.announce("app", host, server.sockets[0].getsockname()[1])
        await asyncio.Event().wait()

    aio.run(main())


# --- the load generator -----------------------------------------------------------------------


def run_load(spec_json: str) -> None:
    """Fixed-rate load; prints one JSON line with the latencies (ms) and errors."""
    from meshtrace import aio
    from meshtrace.sidecar.conn import Upstream, connect

    spec = json.loads(spec_json)
    host, port, target, authority = spec["host"], spec["port"], spec["target"], spec["authority"]
    rate, duration, warmup = float(spec["rate"]), float(spec["duration"]), float(spec["warmup"])
    request = (
        f"POST {target} HTTP/1.1\r\nhost: {authority}\r\ncontent-type: text/plain\r\n"
        f"content-length: {BODY_SIZE}\r\n\r\n"
    ).encode() + b"y" * BODY_SIZE
    latencies: list[float] = []
    errors = [0]

    async def connection(i: int, start: float) -> None:
        up = Upstream(await connect(host, port), (host, port, False))
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
                up = Upstream(await connect(host, port), (host, port, False))
            if due >= start + warmup:
                if ok:
                    latencies.append((time.perf_counter() - due) * 1000.0)
                else:
                    errors[0] += 1
        up.writer.close()

    async def main() -> None:
        start = time.perf_counter() + 0.05
        await asyncio.gather(*(connection(i, start) for i in range(CONNECTIONS)))

    aio.run(main())
    latencies.sort()
    summary = {f"p{q}": _percentile(latencies, q / 100) for q in (50, 90, 99)}
    sys.stdout.write(json.dumps({**summary, "count": len(latencies), "errors": errors[0]}) + "\n")


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
        total = 0
        for pid in self.pids():
            with suppress(OSError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])
        return total / CLK_TCK

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


def _start(
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


def _py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


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
    work: Path, app: tuple[str, int], sink: str, sampling: float, code: Path | None = None
) -> Iterator[tuple[Proc, Proc]]:
    client_ip, server_ip = "127.0.9.1", "127.0.9.2"
    common = ["--namespace", "default", "--no-access-log", "--inbound-port", "0", "--outbound-port", "0",
              "--admin-port", "0", "--stats-port", "0", "--health-port", "0"]  # fmt: skip
    started: list[Proc] = []
    try:
        server_cfg = work / f"server-{sampling}.json"
        server_cfg.write_text(json.dumps(_sidecar_config("server", sink, sampling, {})))
        server = _start(
            [sys.executable, "-m", "meshtrace", "sidecar", "--workload", "server", "--ip", server_ip,
             "--labels", "app=server", "--app-host", app[0], "--app-port", str(app[1]),
             "--config", str(server_cfg), *common],
            ("inbound",), work / "server.log", code=code,
        )  # fmt: skip
        started.append(server)
        services = {
            "server.default.svc.cluster.local": {
                "name": "server", "namespace": "default", "ports": [{"port": 8080}],
                "endpoints": [{"ip": server_ip, "port": server.listeners["inbound"][1], "pod": "server-0"}],
            }
        }  # fmt: skip
        client_cfg = work / f"client-{sampling}.json"
        client_cfg.write_text(json.dumps(_sidecar_config("client", sink, sampling, services)))
        client = _start(
            [sys.executable, "-m", "meshtrace", "sidecar", "--workload", "client", "--ip", client_ip,
             "--labels", "app=client", "--app-port", "8080", "--config", str(client_cfg), *common],
            ("outbound",), work / "client.log", code=code,
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
spec: {{selector: {{app: server}}, ports: [{{name: http, port: 8080}}]}}
"""


@contextmanager
def mtls_pair(
    work: Path, app: tuple[str, int], sink: tuple[str, int], sampling: float
) -> Iterator[tuple[Proc, Proc]]:
    """The same pair, configured by a control plane that signs their certificates: the
    client -> server hop is mutual TLS (auto mTLS, PERMISSIVE), as under `meshtrace up`."""
    from meshtrace.control import identity

    client_ip, server_ip = "127.0.9.5", "127.0.9.6"
    folder = work / f"mtls-{sampling}"
    data = folder / "control-data"
    folder.mkdir()
    (folder / "mesh.yaml").write_text(
        MTLS_MESH.format(sink_host=sink[0], sink_port=sink[1], sampling=sampling)
    )
    key = identity.load_or_create_key(data)
    started: list[Proc] = []
    try:
        control = _start(
            [sys.executable, "-m", "meshtrace", "control", "-f", str(folder / "mesh.yaml"),
             "--listen", "127.0.0.1:0", "--data-dir", str(data)],
            ("control",), work / "control.log",
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
            proc = _start(
                [sys.executable, "-m", "meshtrace", "sidecar", "--workload", name, "--pod", f"{name}-0",
                 "--ip", ip, "--labels", f"app={name}", "--token-file", str(token), *extra, *common],
                ("inbound", "outbound"), work / f"mtls-{name}.log",
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
  access_log off;
  client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy; fastcgi_temp_path {dir}/fcgi;
  uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;
  upstream next {{ server {up_host}:{up_port}; keepalive 16; }}
  server {{
    listen {host}:{port};
    location / {{ proxy_pass http://next; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}
}}
"""


def _nginx(work: Path, name: str, host: str, up: tuple[str, int]) -> Proc:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    d = work / name
    d.mkdir(exist_ok=True)
    port = _free_port(host)
    conf = d / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=d, host=host, port=port, up_host=up[0], up_port=up[1]))
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
def nginx_pair(work: Path, app: tuple[str, int]) -> Iterator[tuple[Proc, Proc]]:
    server = _nginx(work, "nginx-server", "127.0.9.4", app)
    try:
        client = _nginx(work, "nginx-client", "127.0.9.3", server.listeners["proxy"])
        try:
            yield client, server
        finally:
            client.stop()
    finally:
        server.stop()


# --- measuring --------------------------------------------------------------------------------


@dataclass
class Result:
    path: str
    sampling: str
    rate: int
    p50: float
    p90: float
    p99: float
    errors: int
    count: int
    cpu: list[float]  # vCPU per 1000 req/s, per proxy (client, server)
    rss: list[float]


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    idx = min(len(sorted_values) - 1, max(0, round(q * len(sorted_values)) - 1))
    return sorted_values[idx]


def measure(
    path: str, sampling: str, rate: int, target: tuple[str, int, str, str], proxies: list[Proc],
    duration: float, warmup: float,
) -> Result:  # fmt: skip
    spec = {"host": target[0], "port": target[1], "target": target[2], "authority": target[3],
            "rate": rate, "duration": duration, "warmup": warmup}  # fmt: skip
    load = subprocess.Popen(
        _py(f"from meshtrace.bench.overhead import run_load; run_load({json.dumps(json.dumps(spec))})"),
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(warmup + 0.05)
    before = [p.cpu_seconds() for p in proxies]
    t0 = time.monotonic()
    out, _ = load.communicate(timeout=warmup + duration + 60)
    elapsed = time.monotonic() - t0
    cpu = [(p.cpu_seconds() - b) / elapsed * 1000.0 / rate for p, b in zip(proxies, before, strict=True)]
    rss = [p.rss_mb() for p in proxies]
    data = json.loads(out.strip().splitlines()[-1])
    return Result(path, sampling, rate, data["p50"], data["p90"], data["p99"], data["errors"], data["count"],
                  cpu, rss)  # fmt: skip


def table(results: list[Result]) -> str:
    base = {r.rate: r for r in results if r.path == "no mesh"}
    lines = [
        "| req/s | path | sampling | P50 ms | P90 ms | P99 ms | added P50 | added P90 | added P99 "
        "| vCPU/1k rps (client, server) | RSS MB (client, server) | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        b = base.get(r.rate)
        added = ["-", "-", "-"] if b is None or r.path == "no mesh" else [
            f"{r.p50 - b.p50:+.2f}", f"{r.p90 - b.p90:+.2f}", f"{r.p99 - b.p99:+.2f}"]  # fmt: skip
        cpu = ", ".join(f"{c:.3f}" for c in r.cpu) or "-"
        rss = ", ".join(f"{m:.0f}" for m in r.rss) or "-"
        lines.append(
            f"| {r.rate} | {r.path} | {r.sampling} | {r.p50:.2f} | {r.p90:.2f} | {r.p99:.2f} | "
            f"{' | '.join(added)} | {cpu} | {rss} | {r.errors} |"
        )
    return "\n".join(lines)


def seed_table(results: list[Result], rate: int) -> str:
    """The seed's four rows (P50, P99, CPU, memory) at `rate`, 10 % sampling."""
    base = next((r for r in results if r.path == "no mesh" and r.rate == rate), None)
    mesh = next((r for r in results if r.path == "mesh" and r.sampling == "10%" and r.rate == rate), None)
    if base is None or mesh is None:
        return ""
    return "\n".join([
        f"| metric ({rate} req/s) | no mesh | meshtrace + tracing (10% sampling) |",
        "|---|---|---|",
        f"| P50 latency | {base.p50:.2f} ms | {mesh.p50:.2f} ms ({mesh.p50 - base.p50:+.2f} ms) |",
        f"| P90 latency | {base.p90:.2f} ms | {mesh.p90:.2f} ms ({mesh.p90 - base.p90:+.2f} ms) |",
        f"| P99 latency | {base.p99:.2f} ms | {mesh.p99:.2f} ms ({mesh.p99 - base.p99:+.2f} ms) |",
        f"| CPU per sidecar | 0 | {max(mesh.cpu) * rate / 1000:.3f} vCPU "
        f"({max(mesh.cpu):.3f} vCPU per 1000 req/s) |",
        f"| memory per sidecar | 0 | {max(mesh.rss):.0f} MB RSS |",
    ])  # fmt: skip


@click.command()
@click.option("--rates", default="100,250,500,1000", show_default=True, help="Fixed rates (req/s).")
@click.option("--sampling", default="0,10,100", show_default=True, help="Tracing percentages.")
@click.option("--duration", type=float, default=8.0, show_default=True, help="Seconds measured per run.")
@click.option("--warmup", type=float, default=1.0, show_default=True, help="Seconds discarded per run.")
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
    no_nginx: bool,
    no_mtls: bool,
    baseline: Path | None,
) -> None:
    """Latency, CPU and memory a client+server sidecar pair adds (the seed's 性能指标 table)."""
    if baseline is not None and not (baseline / "meshtrace" / "sidecar").is_dir():
        raise click.BadParameter(f"{baseline} has no meshtrace/sidecar package", param_hint="--baseline")
    rate_list = [int(r) for r in rates.split(",") if r]
    samplings = [float(s) for s in sampling.split(",") if s]
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="meshtrace-overhead-") as tmp:
        work = Path(tmp)
        app = _start(_py("from meshtrace.bench.overhead import serve_app; serve_app('127.0.9.10')"),
                     ("app",), work / "app.log")  # fmt: skip
        sink = _start(_py("from meshtrace.bench.overhead import serve_app; serve_app('127.0.9.11')"),
                      ("app",), work / "sink.log")  # fmt: skip
        try:
            app_addr = app.listeners["app"]
            sink_url = "http://{}:{}".format(*sink.listeners["app"])
            for rate in rate_list:
                target = (app_addr[0], app_addr[1], "/", f"{app_addr[0]}:{app_addr[1]}")
                results.append(measure("no mesh", "-", rate, target, [], duration, warmup))
                _progress(results[-1])
            paths: list[tuple[str, Path | None]] = [("mesh", None)]
            if baseline is not None:
                paths.append(("baseline", baseline.resolve()))
            for pct in samplings:
                # interleaved, so the two code versions see the same machine load
                for path, code in paths:
                    with sidecar_pair(work, app_addr, sink_url, pct, code) as (client, server):
                        out = client.listeners["outbound"]
                        target = (out[0], out[1], "http://server:8080/", "server:8080")
                        for rate in rate_list:
                            results.append(
                                measure(path, f"{pct:g}%", rate, target, [client, server], duration, warmup)
                            )
                            _progress(results[-1])
                if not no_mtls:
                    with mtls_pair(work, app_addr, sink.listeners["app"], pct) as (client, server):
                        out = client.listeners["outbound"]
                        target = (out[0], out[1], "http://server:8080/", "server:8080")
                        for rate in rate_list:
                            results.append(
                                measure(
                                    "mesh mTLS", f"{pct:g}%", rate, target, [client, server], duration, warmup
                                )
                            )
                            _progress(results[-1])
            if not no_nginx and (shutil.which("nginx") or Path("/usr/sbin/nginx").exists()):
                with nginx_pair(work, app_addr) as (nc, ns):
                    front = nc.listeners["proxy"]
                    target = (front[0], front[1], "/", "server:8080")
                    for rate in rate_list:
                        results.append(measure("nginx pair", "-", rate, target, [nc, ns], duration, warmup))
                        _progress(results[-1])
        finally:
            app.stop()
            sink.stop()
    # baseline and mTLS rows under the mesh rows of the same sampling
    group = {"no mesh": 0, "mesh": 1, "baseline": 1, "mesh mTLS": 1, "nginx pair": 2}
    order = {"mesh": 0, "baseline": 1, "mesh mTLS": 2}
    results.sort(key=lambda r: (r.rate, group[r.path], r.sampling, order.get(r.path, 0)))
    click.echo("\n" + table(results))
    for rate in rate_list:
        seed = seed_table(results, rate)
        if seed:
            click.echo("\n" + seed)


def _progress(r: Result) -> None:
    click.echo(
        f"  {r.path:10} {r.sampling:>5} {r.rate:5} req/s: "
        f"P50 {r.p50:.2f} P90 {r.p90:.2f} P99 {r.p99:.2f} ms, {r.count} ok, {r.errors} errors",
        err=True,
    )
