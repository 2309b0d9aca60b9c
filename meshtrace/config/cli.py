"""`meshtrace explain` and `meshtrace lint`: thin shells over `effective_config` and `lint`."""

from __future__ import annotations

import difflib
import json
import os
import sys
from pathlib import Path

import click

from meshtrace.clitools import filename_option, load_or_exit
from meshtrace.config.loader import Bundle, load
from meshtrace.config.resolve import effective_config


def _labels(_ctx: click.Context, _param: click.Parameter, value: str | None) -> dict[str, str] | None:
    if value is None:
        return None
    out: dict[str, str] = {}
    for item in (p.strip() for p in value.split(",")):
        if not item:
            continue
        key, sep, val = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not k=v")
        out[key.strip()] = val.strip()
    return out


_files = filename_option("YAML file or folder (repeatable).")
_output = click.option(
    "-o", "--output", type=click.Choice(["text", "json"]), default="text", show_default=True
)


@click.command()
@_files
@click.option("--workload", required=True, help="Workload (Deployment) name.")
@click.option("--namespace", default="default", show_default=True)
@click.option("--labels", callback=_labels, help="k=v,... labels of a workload no Deployment defines.")
@_output
def explain(
    paths: tuple[Path, ...], workload: str, namespace: str, labels: dict[str, str] | None, output: str
) -> None:
    """Show a workload's effective tracing and metrics config and where each value came from."""
    from meshtrace.config.explain import render_text

    bundle = load_or_exit("explain", paths)
    if labels is None and bundle.deployment(workload, namespace) is None:
        raise click.BadParameter(_unknown_workload(bundle, workload, namespace), param_hint="--workload")
    doc = effective_config(bundle, workload, namespace, labels=labels, env=os.environ)
    if output == "json":
        click.echo(json.dumps(doc, indent=2))
    else:
        render_text(doc)


def _unknown_workload(bundle: Bundle, workload: str, namespace: str) -> str:
    """Why `--workload` names nothing, with the closest Deployment names."""
    message = f"no Deployment {namespace}/{workload} in the manifests"
    elsewhere = sorted(d.namespace for d in bundle.deployments if d.name == workload)
    if elsewhere:
        message += f"; did you mean --namespace {elsewhere[0]}?"
    else:
        names = sorted({d.name for d in bundle.deployments if d.namespace == namespace})
        close = difflib.get_close_matches(workload, names, n=3)
        if close:
            message += "; did you mean " + " or ".join(close) + "?"
        elif names:
            message += f" (in {namespace}: {', '.join(names)})"
    end = " " if message.endswith("?") else ". "
    return message + end + "A workload no Deployment defines needs its pod labels: --labels k=v,..."


@click.command()
@_files
@_output
def lint(paths: tuple[Path, ...], output: str) -> None:
    """Check Istio, Kubernetes and Collector config for mistakes (like istioctl analyze); exit 1 on errors."""
    from meshtrace.config.lint import lint as run_lint
    from meshtrace.config.lint import render_text

    findings = run_lint(load(paths))
    if output == "json":
        click.echo(json.dumps([f.as_dict() for f in findings], indent=2))
    else:
        render_text(findings)
    sys.exit(1 if any(f.severity == "error" for f in findings) else 0)
