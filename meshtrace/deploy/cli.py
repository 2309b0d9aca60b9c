"""`meshtrace render`: a thin shell over `meshtrace.deploy.render.render` that writes the files."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click

from meshtrace.clitools import filename_option, load_or_exit
from meshtrace.deploy.collector import DEFAULT_IMAGE

T = TypeVar("T")
R = TypeVar("R")


def _parameter(parse: Callable[[T], R], value: T) -> R:
    """`parse(value)`, its ValueError shown as click's usage error (exit 2)."""
    try:
        return parse(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from e


def _selector(_ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]) -> dict[str, str] | None:
    from meshtrace.deploy.monitoring import parse_selector

    return _parameter(parse_selector, value) or None


def _image(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    from meshtrace.deploy.collector import check_image

    _parameter(check_image, value)
    return value


def _backend(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    from meshtrace.deploy.backend import parse

    if value is not None:
        _parameter(parse, value)
    return value


@click.command()
@filename_option("YAML file or folder (repeatable).")
@click.option(
    "-o",
    "--output",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder to write the manifests to (created if missing).",
)
@click.option(
    "--collector-image", default=DEFAULT_IMAGE, show_default=True, callback=_image, help="Collector image."
)
@click.option(
    "--collector-replicas",
    type=click.IntRange(min=1),
    help="Collector replicas (HPA minimum); default: the manifests' HPA or Deployment, at least 2.",
)
@click.option(
    "--profile",
    type=click.Choice(["quickstart", "production"]),
    default="quickstart",
    show_default=True,
    help="production: apply the input's production intent (lowest sampling rate, tuned collector, no "
    "debug exporter) instead of what Istio and kubectl would apply.",
)
@click.option(
    "--backend",
    callback=_backend,
    help="Render a trace store and send to it: jaeger, tempo or external=HOST:PORT.",
)
@click.option(
    "--backend-storage",
    type=click.Choice(["elasticsearch", "opensearch", "cassandra"]),
    default="elasticsearch",
    show_default=True,
    help="Jaeger's storage (the storage cluster itself is not rendered).",
)
@click.option("--strict", is_flag=True, help="Any warning is an error (exit 1, nothing written).")
@click.option(
    "--prometheus-selector",
    multiple=True,
    callback=_selector,
    metavar="KEY=VALUE",
    help="Label (repeatable) put on the ServiceMonitor, PodMonitor and PrometheusRule so your Prometheus "
    "selects them; default: the input PrometheusRule's labels, else release=kube-prometheus-stack.",
)
def render(
    paths: tuple[str, ...],
    out_dir: Path,
    collector_image: str,
    collector_replicas: int | None,
    profile: str,
    backend: str | None,
    backend_storage: str,
    strict: bool,
    prometheus_selector: dict[str, str] | None,
) -> None:
    """Write production manifests for real Istio and the OpenTelemetry Collector from the YAML `up` runs."""
    from meshtrace.deploy.collector import Options
    from meshtrace.deploy.istio import RenderError
    from meshtrace.deploy.render import RenderWarning
    from meshtrace.deploy.render import render as render_bundle

    bundle = load_or_exit("render", paths)
    unreadable = bundle.unreadable
    warnings = [
        RenderWarning(p.code, f"{p.file}: {p.resource} {p.path}".strip() + f": {p.message}")
        for p in bundle.problems
        if p.severity == "error" and p not in unreadable
    ]
    options = Options(
        image=collector_image,
        replicas=collector_replicas,
        profile=profile,
        backend=backend,
        storage=backend_storage,
        strict=strict,
        prometheus_selector=prometheus_selector,
    )
    try:
        result = render_bundle(bundle, options)
    except RenderError as e:
        click.echo(f"meshtrace render: {e}", err=True)
        sys.exit(1)
    for warning in [*warnings, *result.warnings]:
        click.echo(f"meshtrace render: warning: {warning}", err=True)
    if strict and (warnings or result.warnings):
        click.echo("meshtrace render: --strict: warnings are errors; nothing written", err=True)
        sys.exit(1)
    for rel, text in result.files.items():
        target = out_dir / rel
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        except OSError as e:
            click.echo(f"meshtrace render: cannot write {target}: {e.strerror}", err=True)
            sys.exit(2)
        click.echo(f"meshtrace render: wrote {target}")
