"""`meshtrace control` (the control plane server) and `meshtrace status` (like istioctl
proxy-status)."""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import click

from meshtrace.clitools import filename_option

DEFAULT_LISTEN = "127.0.0.1:15010"
DEFAULT_CONTROL = f"http://{DEFAULT_LISTEN}"
WORKLOAD_CERT_TTL_S = 24 * 3600.0  # istiod's DEFAULT_WORKLOAD_CERT_TTL
CONTROL_SERVICE_ACCOUNT = "istiod"  # the identity its TLS certificate names, as istiod's
DEFAULT_DATA_DIR = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / (
    "meshtrace/control"
)


def parse_listen(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not port.isdigit() or int(port) > 65535:
        raise click.BadParameter(
            f"{text!r}: expected HOST:PORT (port 0 picks a free port)", param_hint="--listen"
        )
    return host.strip("[]") or "127.0.0.1", int(port)


@click.command()
@filename_option("YAML file or folder (repeatable); watched for edits.")
@click.option(
    "--listen", default=DEFAULT_LISTEN, show_default=True, help="HOST:PORT of the API (port 0: any)."
)
@click.option(
    "--endpoint",
    "endpoints",
    multiple=True,
    metavar="HOST=ADDR:PORT",
    help="A host outside the registry, like a ServiceEntry (repeatable), e.g. the local collector.",
)
@click.option(
    "--heartbeat",
    "heartbeat_s",
    type=click.FloatRange(min=0.05),
    default=2.0,
    show_default=True,
    help="Heartbeat interval announced to sidecars, s; 3 missed heartbeats remove an endpoint.",
)
@click.option(
    "--poll",
    "poll_s",
    type=click.FloatRange(min=0.01),
    default=0.25,
    show_default=True,
    help="How often the -f files are checked for edits, s.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_DATA_DIR,
    show_default=True,
    help="Where the credential signing key (token-key) and the CA are kept; created if missing.",
)
@click.option(
    "--cacerts",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="A plugged-in CA: ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem (istiod's "
    "cacerts). Default: a root generated in --data-dir.",
)
@click.option(
    "--workload-cert-ttl",
    "cert_ttl_s",
    type=click.FloatRange(min=1),
    default=WORKLOAD_CERT_TTL_S,
    show_default=True,
    help="Lifetime of workload certificates, s (istiod's DEFAULT_WORKLOAD_CERT_TTL).",
)
@click.option(
    "--tls-listen",
    default=None,
    metavar="HOST:PORT",
    help="Also serve the API over TLS here with a certificate from the CA, as istiod's 15012 "
    "(off by default).",
)
def control(
    paths: tuple[Path, ...],
    listen: str,
    endpoints: tuple[str, ...],
    heartbeat_s: float,
    poll_s: float,
    data_dir: Path,
    cacerts: Path | None,
    cert_ttl_s: float,
    tls_listen: str | None,
) -> None:
    """Run the control plane: service registry and config push to sidecars (like istiod)."""
    from meshtrace import aio
    from meshtrace.control import identity
    from meshtrace.control.ca import load_authority, serving_context
    from meshtrace.control.core import BadRequest, parse_static_endpoint
    from meshtrace.control.server import ControlServer, log, serve
    from meshtrace.control.source import load_snapshot

    host, port = parse_listen(listen)
    try:
        static = [parse_static_endpoint(e) for e in endpoints]
    except BadRequest as exc:
        raise click.BadParameter(str(exc), param_hint="--endpoint") from None
    snapshot = load_snapshot(list(paths))
    for message in sorted(snapshot.errors.values()):
        log(f"configuration error (serving anyway, as istiod would): {message}")
    try:
        token_key = identity.load_or_create_key(data_dir)
        ca = load_authority(data_dir, cacerts, snapshot.trust_domain)
    except (OSError, ValueError) as exc:
        raise click.BadParameter(str(exc), param_hint="--cacerts" if cacerts else "--data-dir") from None
    log(f"certificate authority: {ca.source}, trust domain {snapshot.trust_domain}")
    server = ControlServer(
        list(paths), load_snapshot, snapshot, static, heartbeat_s, poll_s, token_key, ca, cert_ttl_s
    )
    tls = None
    if tls_listen is not None:
        tls_host, tls_port = parse_listen(tls_listen)
        spiffe = identity.spiffe_id(snapshot.trust_domain, "istio-system", CONTROL_SERVICE_ACCOUNT)
        tls = (tls_host, tls_port, serving_context(ca, spiffe, tls_host))
    try:
        aio.run(serve(server, host, port, tls))
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {listen}: {exc}") from None


def fetch_status(url: str, timeout: float = 5.0) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url.rstrip('/')}/v1/status", timeout=timeout) as response:
        body: dict[str, Any] = json.load(response)
        return body


def _age(seconds: float) -> str:
    return f"{seconds:.1f}s" if seconds < 120 else f"{seconds / 60:.0f}m"


def _expiry(expires_at: float | None, now: float) -> str:
    if expires_at is None:
        return "-"
    left = expires_at - now
    if left <= 0:
        return "EXPIRED"
    return f"in {_age(left)}" if left < 3600 else f"in {left / 3600:.1f}h"


def status_rows(status: dict[str, Any], now: float | None = None) -> list[list[str]]:
    """One row per node, istioctl proxy-status style: SYNCED when the sent version is ACKed;
    then its identity and when its certificate expires."""
    now = time.time() if now is None else now
    rows = []
    for node in status.get("nodes", []):
        sent, acked, nack = node.get("sent_version"), node.get("acked_version"), node.get("last_nack")
        if sent is None:
            sync = "NOT SENT"
        elif acked == sent == node.get("version"):
            sync = "SYNCED"
        elif nack and nack.get("version") == sent:
            sync = "NACKED"
        else:
            sync = "STALE"
        rows.append(
            [
                node["node_id"],
                node["workload"],
                node["namespace"],
                node["ip"],
                sent or "-",
                acked or "-",
                sync,
                f"{nack['version']}: {nack['error']}" if nack else "-",
                _age(node["heartbeat_age_s"]) + ("" if node.get("healthy", True) else " (removed)"),
                node.get("identity") or "-",
                _expiry(node.get("cert_expires_at"), now),
            ]
        )
    return rows


STATUS_COLUMNS = [
    "NODE", "WORKLOAD", "NAMESPACE", "IP", "SENT", "ACKED", "SYNC", "LAST NACK", "HEARTBEAT",
    "IDENTITY", "CERT",
]  # fmt: skip


@click.command()
@click.option(
    "--control",
    "url",
    envvar="MESHTRACE_CONTROL",
    default=DEFAULT_CONTROL,
    show_default=True,
    help="Control plane URL.",
)
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
def status(url: str, output: str) -> None:
    """Every sidecar with its config version sent, ACKed, last NACK and heartbeat age."""
    from rich.console import Console
    from rich.table import Table

    if "://" not in url:
        url = f"http://{url}"
    try:
        body = fetch_status(url)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        click.echo(f"meshtrace status: cannot reach the control plane at {url}: {reason}", err=True)
        click.echo("Is `meshtrace control` (or `meshtrace up`) running? Use --control URL.", err=True)
        sys.exit(2)
    if output == "json":
        click.echo(json.dumps(body, indent=2))
        return
    console = Console(width=320 if not sys.stdout.isatty() else None)
    table = Table(box=None, header_style="bold")
    for column in STATUS_COLUMNS:
        table.add_column(column, overflow="fold")
    for row in status_rows(body):
        table.add_row(*row)
    console.print(table)
    if not body.get("nodes"):
        console.print("no sidecars registered")
    for error in body.get("config_errors", []):
        console.print(f"[red]rejected configuration edit:[/red] {error['error']}", highlight=False)
