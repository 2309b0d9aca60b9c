"""`meshtrace up [-f FILE_OR_DIR ...] [--traffic RPS] [--prometheus]`."""

from __future__ import annotations

import difflib
import ipaddress
from pathlib import Path

import click

from meshtrace.clitools import filename_option
from meshtrace.runtime.plan import DEFAULT_MANIFESTS


def _address(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise click.BadParameter(f"{value!r}: expected HOST:PORT")
    return host, int(port)


@click.command()
@filename_option(
    "Manifest file or folder (repeatable); a folder whose manifests sit one level down (a guide's "
    "manifests/) is read there. Default: the built-in demo (examples/seed).",
    required=False,
)
@click.option(
    "--traffic", "rps", type=click.FloatRange(min=0.1, max=500), help="Send RPS requests/s to the ingress."
)
@click.option(
    "--traffic-duration",
    default=600.0,
    show_default=True,
    type=click.FloatRange(min=1, max=86400),
    help="Seconds of traffic at most.",
)
@click.option(
    "--prometheus", is_flag=True, help="Also run Prometheus (Debian's) scraping every pod and the collector."
)
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address of the control plane and collector."
)
@click.option(
    "--network",
    default="127.0.1.0/24",
    show_default=True,
    help="Loopback range the pods get their addresses from.",
)
@click.option("--ingress", default="127.0.0.1:8080", show_default=True, help="Ingress gateway address.")
@click.option("--ui", default="127.0.0.1:16686", show_default=True, help="Query API and web UI address.")
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    help="Where the trace store keeps traces.db and up its run folders (default: $MESHTRACE_DATA_DIR, "
    "else ~/.local/share/meshtrace).",
)
@click.option(
    "--fresh",
    is_flag=True,
    help="Start with an empty trace store (kept in this run's folder) instead of the shared traces.db.",
)
@click.option(
    "--access-log",
    is_flag=True,
    help="Show every line the children print (access logs, debug exporter) here, not only in log files.",
)
@click.option(
    "--otlp-via-sidecar",
    is_flag=True,
    help="Apps export OTLP/gRPC to the collector Service through their sidecar (as in Istio), "
    "not straight to the local collector.",
)
def up(
    paths: tuple[Path, ...],
    rps: float | None,
    traffic_duration: float,
    prometheus: bool,
    host: str,
    network: str,
    ingress: str,
    ui: str,
    data_dir: Path | None,
    fresh: bool,
    access_log: bool,
    otlp_via_sidecar: bool,
) -> None:
    """Run the mesh locally: control plane, collector with store and UI, ingress gateway, and
    every replica of every Deployment as an app + sidecar on its own loopback address."""
    from meshtrace import aio
    from meshtrace.runtime.up import Options, run

    try:
        net = ipaddress.ip_network(network)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--network") from e
    if not net.is_loopback:
        raise click.BadParameter(f"{network} is not in 127.0.0.0/8", param_hint="--network")
    options = Options(
        paths=list(paths) or [DEFAULT_MANIFESTS],
        rps=rps,
        traffic_duration=traffic_duration,
        prometheus=prometheus,
        host=host,
        network=net,
        ingress=_address(ingress),
        ui=_address(ui),
        data_dir=data_dir,
        access_log=access_log,
        fresh=fresh,
        otlp_via_sidecar=otlp_via_sidecar,
    )
    raise SystemExit(aio.run(run(options)))


@click.command()
@click.argument("pod", required=False)
@click.option("--follow", is_flag=True, help="Keep printing lines as they are written (Ctrl-C stops).")
@click.option(
    "--run",
    "run_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A run folder (default: the newest).",
)
@click.option(
    "--data-dir", type=click.Path(path_type=Path), help="The data dir `up` was given with --data-dir."
)
def logs(pod: str | None, follow: bool, run_dir: Path | None, data_dir: Path | None) -> None:
    """Print a pod's log from `meshtrace up`'s newest run (its app and sidecar lines, or those of
    otel-collector, istiod, istio-ingressgateway); without POD, list the run's log files."""
    from meshtrace.runtime.runfolder import follow_file, latest_run, runs_dir

    run = run_dir or latest_run(data_dir)
    if run is None:
        raise click.UsageError(f"no run of `meshtrace up` in {runs_dir(data_dir)}")
    folder = run / "logs"
    names = sorted(p.stem for p in folder.glob("*.log"))
    if pod is None:
        click.echo(f"{folder}:")
        for name in names:
            click.echo(f"  {name}")
        return
    path = folder / f"{pod}.log"
    if not path.is_file():
        close = difflib.get_close_matches(pod, names, n=1)
        hint = f"; did you mean {close[0]}?" if close else f" (pods: {', '.join(names)})"
        raise click.BadParameter(f"no log {path}{hint}", param_hint="POD")
    follow_file(path, click.echo, follow)
