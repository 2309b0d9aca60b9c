"""`meshtrace render`: a thin shell over `meshtrace.deploy.render.render` that writes the files."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from meshtrace.clitools import filename_option, load_or_exit
from meshtrace.deploy.collector import DEFAULT_IMAGE


def _selector(_ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]) -> dict[str, str] | None:
    from meshtrace.deploy.monitoring import parse_selector

    try:
        return parse_selector(value) or None
    except ValueError as e:
        raise click.BadParameter(str(e)) from e


def _image(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    from meshtrace.deploy.collector import check_image

    try:
        check_image(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from e
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
    prometheus_selector: dict[str, str] | None,
) -> None:
    """Write production manifests for real Istio and the OpenTelemetry Collector from the YAML `up` runs."""
    from meshtrace.deploy.collector import Options
    from meshtrace.deploy.istio import RenderError
    from meshtrace.deploy.render import render as render_bundle

    bundle = load_or_exit("render", paths)
    unreadable = bundle.unreadable
    for p in bundle.problems:
        if p.severity == "error" and p not in unreadable:
            where = f"{p.file}: {p.resource} {p.path}".strip()
            click.echo(f"meshtrace render: warning: {where}: {p.message}", err=True)
    try:
        result = render_bundle(
            bundle,
            Options(
                image=collector_image, replicas=collector_replicas, prometheus_selector=prometheus_selector
            ),
        )
    except RenderError as e:
        click.echo(f"meshtrace render: {e}", err=True)
        sys.exit(1)
    for warning in result.warnings:
        click.echo(f"meshtrace render: warning: {warning}", err=True)
    for rel, text in result.files.items():
        target = out_dir / rel
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        except OSError as e:
            click.echo(f"meshtrace render: cannot write {target}: {e.strerror}", err=True)
            sys.exit(2)
        click.echo(f"meshtrace render: wrote {target}")
