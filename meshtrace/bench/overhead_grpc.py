"""`meshtrace bench overhead --protocol grpc`: what a unary gRPC call pays for the mesh, with the
HTTP/1.1 benchmark's paths and table (overhead.py). The app is a grpcio server answering
`/bench.Echo/Call` with 1 KB; the load is Debian's `h2load` (nghttp2-client: native, h2c with
prior knowledge, `--rps` per connection) posting one gRPC-framed message (the 5-byte gRPC prefix,
then the payload) with `content-type: application/grpc` and `te: trailers`. The direct path is
the floor: h2load straight to the grpc server. The mesh paths send to the client sidecar's
outbound listener with `:authority: server:8080`; the nginx pair proxies with `grpc_pass`.

A sidecar pair that does not speak HTTP/2 answers no call: its rows show 0 answered and every
call as an error, and the command says why (h2load's own verdict) instead of waiting."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Final

import click

from meshtrace import ready
from meshtrace.bench import overhead as http

SERVICE: Final = "bench.Echo"
METHOD: Final = "Call"
PATH: Final = f"/{SERVICE}/{METHOD}"
REQUEST: Final = b"x" * 64
_SUMMARY = re.compile(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded")


def grpc_message(payload: bytes) -> bytes:
    """One gRPC length-prefixed message: not compressed (0), the 4-byte big-endian length, the bytes."""
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


def serve_grpc_app(host: str, delay_ms: float = 0.0) -> None:
    """The benchmark's gRPC server on host:0 (prints its ready line `app`): every call to
    /bench.Echo/Call answers 1 KB; `delay_ms`: spin that long first, as the HTTP app does."""
    import grpc

    from meshtrace import aio

    answer = b"x" * http.BODY_SIZE

    async def call(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        if delay_ms:
            until = time.perf_counter() + delay_ms / 1000.0
            while time.perf_counter() < until:
                pass
        return answer

    async def main() -> None:
        server = grpc.aio.server()
        handler = grpc.unary_unary_rpc_method_handler(call)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {METHOD: handler}),))
        port = server.add_insecure_port(f"{host}:0")
        await server.start()
        ready.announce("app", host, port)
        await asyncio.Event().wait()

    aio.run(main())


def h2load_load(target: http.Target, rate: int, duration: float, warmup: float) -> tuple[list[float], int]:
    """Debian's h2load: CONNECTIONS clients, one stream each, each at rate/CONNECTIONS calls/s;
    the per-request log (start µs, status, duration µs) of the measured phase gives the latencies
    of the calls answered 200; every other issued call is an error."""
    with tempfile.TemporaryDirectory(prefix="meshtrace-h2load-") as tmp:
        body, log = Path(tmp) / "body", Path(tmp) / "requests.log"
        body.write_bytes(grpc_message(REQUEST))
        per_client = max(1, round(rate / http.CONNECTIONS))
        args = ["h2load", "-c", str(http.CONNECTIONS), "-m", "1", "--rps", str(per_client),
                "-D", f"{duration:g}", "--warm-up-time", f"{int(warmup * 1000)}ms", "-T", "10",
                "-d", str(body), "-H", "content-type: application/grpc", "-H", "te: trailers",
                "-H", f":authority: {target.authority}", "--log-file", str(log),
                f"http://{target.host}:{target.port}{target.target}"]  # fmt: skip
        done = subprocess.run(args, capture_output=True, text=True, timeout=warmup + duration + 60)
        summary = _SUMMARY.search(done.stdout)
        if summary is None:
            raise click.ClickException(f"h2load failed ({done.returncode}): {done.stderr.strip()[-500:]}")
        latencies: list[float] = []
        if log.exists():
            for line in log.read_text().splitlines():
                cells = line.split("\t")
                if len(cells) == 3 and cells[1] == "200":
                    latencies.append(int(cells[2]) / 1000.0)
        issued = int(summary[1])
        if latencies:
            return latencies, max(0, issued - len(latencies))
        # nothing answered (a listener that does not speak HTTP/2 breaks every connection at once):
        # every call the rate asked for is an error, and h2load's own count is shown
        click.echo(f"  h2load: no call answered at {target.host}:{target.port}: {summary[0]}", err=True)
        return [], max(issued, round(rate * duration))


# HTTP/2 listeners and grpc_pass; nginx ends an HTTP/2 connection after 1000 requests by default,
# which h2load does not reopen
NGINX_GRPC = http.NginxProxy("grpc_pass grpc://next;", " http2", "\n  keepalive_requests 1000000;")


def run(
    work: Path, rate_list: list[int], samplings: list[float], duration: float, warmup: float, rounds: int,
    no_nginx: bool, no_mtls: bool,
) -> list[http.Result]:  # fmt: skip
    """Every path up for the whole run, each rate through all of them in turn (as for HTTP/1.1)."""
    if shutil.which("h2load") is None:
        raise click.ClickException("h2load is not installed (Debian: apt-get install nghttp2-client)")
    with ExitStack() as stack:
        procs = [
            _grpc_app(work, "127.0.9.10"),
            http.app_process(work, "127.0.9.11"),  # the span sink
            _grpc_app(work, "127.0.9.12", http.CALIBRATION_MS),
        ]
        for proc in procs:
            stack.callback(proc.stop)
        app, sink, slow_app = (p.listeners["app"] for p in procs)
        sink_url = "http://{}:{}".format(*sink)
        paths: list[tuple[str, str, http.Target, list[http.Proc]]] = [
            (http.DIRECT, "-", http.Target(*app, PATH, "{}:{}".format(*app)), []),
            (http.CALIBRATION, "-", http.Target(*slow_app, PATH, "{}:{}".format(*slow_app)), []),
        ]

        def add(name: str, label: str, pair: tuple[http.Proc, http.Proc]) -> None:
            outbound = http.Target(*pair[0].listeners["outbound"], PATH, "server:8080")
            paths.append((name, label, outbound, list(pair)))

        for pct in samplings:
            add(
                "mesh",
                f"{pct:g}%",
                stack.enter_context(http.sidecar_pair(work, app, sink_url, pct, index=len(paths))),
            )
            if not no_mtls:
                add(
                    http.MTLS,
                    f"{pct:g}%",
                    stack.enter_context(http.mtls_pair(work, app, sink, pct, index=len(paths))),
                )
        if not no_nginx and http.nginx_binary() is not None:
            nc, ns = stack.enter_context(http.nginx_pair(work, app, NGINX_GRPC, "nginx-grpc"))
            paths.append(
                (http.NGINX, "-", http.Target(*nc.listeners["proxy"], PATH, "server:8080"), [nc, ns])
            )
        return http.measure_paths(paths, rate_list, ["h2load"], duration, warmup, rounds)


def _grpc_app(work: Path, host: str, delay_ms: float = 0.0) -> http.Proc:
    code = f"from meshtrace.bench.overhead_grpc import serve_grpc_app; serve_grpc_app({host!r}, {delay_ms!r})"
    return http.start_process(http.python_args(code), ("app",), work / f"grpc-app-{host}.log")
