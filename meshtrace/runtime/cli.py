"""`meshtrace up [-f FILE_OR_DIR ...] [--traffic RPS] [--prometheus]`."""

from __future__ import annotations

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
    "Manifest file or folder (repeatable). Default: the built-in demo (examples/seed).",
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
    help="Where the trace store keeps its database (default: $MESHTRACE_DATA_DIR or the user data dir).",
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
    )
    raise SystemExit(aio.run(run(options)))
