"""`meshtrace sidecar`: the Envoy role beside one workload (or the ingress gateway)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
from dataclasses import dataclass

import click

from meshtrace import aio, ready
from meshtrace.sidecar.admin import admin_page, health_page, local_server, stats_page
from meshtrace.sidecar.certs import WorkloadCerts
from meshtrace.sidecar.config import ConfigError, parse
from meshtrace.sidecar.conn import SniffingServer, Timeouts, serve, serve_sniffing
from meshtrace.sidecar.control import ControlSource, FileSource
from meshtrace.sidecar.metrics import EVICTION_INTERVAL_S, SERIES_LIMIT, IstioMetrics
from meshtrace.sidecar.proxy import Identity, Proxy
from meshtrace.sidecar.routing import GATEWAY, INBOUND, OUTBOUND
from meshtrace.sidecar.tracing import SPAN_BUFFER_BYTES

log = logging.getLogger("meshtrace.sidecar")


def parse_labels(text: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not key=value", param_hint="--labels")
        labels[key.strip()] = value.strip()
    return labels


@dataclass
class Options:
    ident: Identity
    control: str | None
    config: str | None
    ports: dict[str, int]
    token_file: str | None
    ca_root: str | None
    timeouts: Timeouts
    access_log: bool
    series_limit: int = SERIES_LIMIT
    eviction_interval: float = EVICTION_INTERVAL_S
    span_buffer_bytes: int = SPAN_BUFFER_BYTES


async def evict_idle_series(metrics: IstioMetrics, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        metrics.sweep()


async def run(opts: Options) -> None:
    ident = opts.ident
    proxy = Proxy(
        ident,
        parse({}, "none", ident.workload, ident.namespace, ident.labels),
        opts.timeouts,
        opts.access_log,
        opts.series_limit,
        opts.span_buffer_bytes,
    )
    listeners = {
        "admin": local_server(proxy, admin_page, opts.timeouts),
        "stats": local_server(proxy, stats_page, opts.timeouts),
        "health": local_server(proxy, health_page, opts.timeouts),
    }
    if ident.mode == GATEWAY:
        listeners["gateway"] = proxy.handler(GATEWAY)
    else:
        listeners["inbound"] = proxy.handler(INBOUND)
        listeners["outbound"] = proxy.handler(OUTBOUND)
    servers: dict[str, asyncio.Server | SniffingServer] = {}
    for name, handler in listeners.items():
        if name == "inbound":  # mTLS and plaintext on one port, by the first byte
            listener = await serve_sniffing(
                handler, ident.ip, opts.ports[name], proxy.inbound_tls, opts.timeouts
            )
            proxy.inbound_listener = servers[name] = listener
        else:
            servers[name] = await serve(handler, ident.ip, opts.ports[name])
    real = {name: s.sockets[0].getsockname()[1] for name, s in servers.items()}
    proxy.listening({name: (ident.ip, port) for name, port in real.items()})

    tasks: list[asyncio.Task[None]] = []
    loop = asyncio.get_running_loop()
    if opts.eviction_interval:
        tasks.append(loop.create_task(evict_idle_series(proxy.metrics, opts.eviction_interval)))
    if opts.control:
        # a gateway has no inbound/outbound pair: its listener stands in as the inbound port
        inbound = real["gateway"] if ident.mode == GATEWAY else real["inbound"]
        ports = {"inbound": inbound, "outbound": real.get("outbound"), "admin": real["admin"]}
        assert opts.token_file is not None
        source = ControlSource(opts.control, ident, ports, opts.token_file, opts.ca_root)
        proxy.certs = WorkloadCerts()
        proxy.apply(await source.first(proxy.certs))
        tasks += [
            loop.create_task(source.watch(proxy.apply)),
            loop.create_task(source.heartbeat()),
            loop.create_task(source.rotate(proxy.certs)),
        ]
    else:
        assert opts.config is not None
        file_source = FileSource(opts.config, ident)
        try:
            proxy.apply(file_source.load())
        except (ConfigError, OSError) as exc:
            raise click.ClickException(f"--config {opts.config}: {exc}") from exc
        tasks.append(loop.create_task(file_source.watch(proxy.apply)))
    proxy.exporter.start()
    # everything built so far lives for the whole run: keep it out of the collector's scans
    gc.collect()
    gc.freeze()
    for name, server in servers.items():
        await server.start_serving()
        ready.announce(name, ident.ip, real[name])

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for server in servers.values():
        server.close()
    for task in tasks:
        task.cancel()
    await proxy.exporter.close()
    proxy.pool.close_all()
    proxy.h2.close()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


@click.command()
@click.option("--workload", required=True, help="Workload (Deployment) name.")
@click.option("--namespace", default="default", show_default=True)
@click.option("--pod", default=None, help="Pod name (default: <workload>-0).")
@click.option("--ip", default="127.0.0.1", show_default=True, help="The pod address all listeners bind.")
@click.option("--labels", default="", help="Pod labels, k=v,k=v.")
@click.option("--app-port", type=int, default=8080, show_default=True, help="The app's containerPort.")
@click.option("--app-host", default=None, help="Where the app listens (default: --ip).")
@click.option("--control", default=None, help="Control plane URL, e.g. http://127.0.0.1:15010.")
@click.option("--config", "config_file", default=None, help="Effective config document (JSON or YAML).")
@click.option(
    "--token-file",
    envvar="MESHTRACE_TOKEN_FILE",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="With --control: the bootstrap credential the control plane minted for this pod.",
)
@click.option("--service-account", default="default", show_default=True, help="The pod's service account.")
@click.option(
    "--ca-root",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="With an https:// --control: the mesh root certificate that signed the control plane's.",
)
@click.option("--mode", type=click.Choice(["sidecar", "gateway"]), default="sidecar", show_default=True)
@click.option("--default-service", default=None, help="Gateway: Service for hosts that name none.")
@click.option("--inbound-port", type=int, default=15006, show_default=True)
@click.option("--outbound-port", type=int, default=15001, show_default=True)
@click.option("--admin-port", type=int, default=15000, show_default=True)
@click.option("--stats-port", type=int, default=15090, show_default=True)
@click.option("--health-port", type=int, default=15021, show_default=True)
@click.option("--gateway-port", type=int, default=8080, show_default=True)
@click.option("--access-log/--no-access-log", default=True, show_default=True)
@click.option("--header-timeout", type=float, default=10.0, show_default=True, help="Slowloris guard (s).")
@click.option("--idle-timeout", type=float, default=300.0, show_default=True, help="Idle keep-alive (s).")
@click.option("--connect-timeout", type=float, default=10.0, show_default=True, help="Upstream connect (s).")
@click.option(
    "--upstream-timeout", type=float, default=0.0, show_default=True, help="Response headers (s); 0 = none."
)
@click.option(
    "--metric-series-limit",
    type=click.IntRange(min=1),
    default=SERIES_LIMIT,
    show_default=True,
    help="Label sets per Istio metric; more go to an overflow series.",
)
@click.option(
    "--stats-eviction-interval",
    type=click.FloatRange(min=0),
    default=EVICTION_INTERVAL_S,
    show_default=True,
    help="Evict metric series idle for a whole interval (s); 0 = never.",
)
@click.option(
    "--span-buffer-bytes",
    type=click.IntRange(min=1),
    default=SPAN_BUFFER_BYTES,
    show_default=True,
    help="Spans waiting for export or being retried, in bytes; more are dropped and counted.",
)
def sidecar(
    workload: str,
    namespace: str,
    pod: str | None,
    ip: str,
    labels: str,
    app_port: int,
    app_host: str | None,
    control: str | None,
    config_file: str | None,
    token_file: str | None,
    service_account: str,
    ca_root: str | None,
    mode: str,
    default_service: str | None,
    inbound_port: int,
    outbound_port: int,
    admin_port: int,
    stats_port: int,
    health_port: int,
    gateway_port: int,
    access_log: bool,
    header_timeout: float,
    idle_timeout: float,
    connect_timeout: float,
    upstream_timeout: float,
    metric_series_limit: int,
    stats_eviction_interval: float,
    span_buffer_bytes: int,
) -> None:
    """Run the proxy beside one workload: inbound/outbound listeners, tracing, metrics."""
    if (control is None) == (config_file is None):
        raise click.UsageError("give exactly one of --control URL or --config FILE")
    if control is not None and token_file is None:
        raise click.UsageError("--control needs --token-file (the pod's bootstrap credential)")
    if control is not None and control.startswith("https://") and ca_root is None:
        raise click.UsageError("an https:// --control needs --ca-root (the mesh root certificate)")
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="meshtrace sidecar: %(message)s")
    ident = Identity(
        workload=workload,
        namespace=namespace,
        pod=pod or f"{workload}-0",
        ip=ip,
        labels=parse_labels(labels),
        app_host=app_host or ip,
        app_port=app_port,
        mode=mode,
        default_service=default_service,
        service_account=service_account,
    )
    ports = {
        "inbound": inbound_port,
        "outbound": outbound_port,
        "admin": admin_port,
        "stats": stats_port,
        "health": health_port,
        "gateway": gateway_port,
    }
    timeouts = Timeouts(
        idle=idle_timeout, headers=header_timeout, connect=connect_timeout, upstream=upstream_timeout
    )
    opts = Options(
        ident,
        control,
        config_file,
        ports,
        token_file,
        ca_root,
        timeouts,
        access_log,
        metric_series_limit,
        stats_eviction_interval,
        span_buffer_bytes,
    )
    aio.run(run(opts))
