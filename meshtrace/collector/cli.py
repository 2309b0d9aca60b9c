"""`meshtrace collector [--config FILE ...] [--set KEY=VALUE ...]` and `meshtrace collector validate`."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from meshtrace.collector.config import ConfigError, load, resolve
from meshtrace.collector.schema import ERROR, Problem

CONFIG_HELP = "Collector YAML, or a Kubernetes ConfigMap holding config.yaml (repeatable: merged in order)."
SET_HELP = "Override a key by dotted path, e.g. receivers.otlp.protocols.grpc.endpoint=127.0.0.1:0."


def _paths(configs: tuple[str, ...]) -> list[Path]:
    # The Collector also accepts `file:` URIs.
    return [Path(c.removeprefix("file:")) for c in configs]


def _load(configs: tuple[str, ...], sets: tuple[str, ...]) -> tuple[dict[str, object] | None, list[Problem]]:
    try:
        raw, problems = load(_paths(configs), sets, os.environ)
    except ConfigError as exc:
        return None, [Problem(ERROR, "", str(exc))]
    return raw, problems


@click.group(invoke_without_command=True)
@click.option("--config", "configs", multiple=True, metavar="FILE", help=CONFIG_HELP)
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option(
    "--drain-timeout",
    type=float,
    default=10.0,
    show_default=True,
    help="On SIGTERM/SIGINT, seconds exporters keep sending what is queued before dropping it.",
)
@click.pass_context
def collector(
    ctx: click.Context, configs: tuple[str, ...], sets: tuple[str, ...], drain_timeout: float
) -> None:
    """Run the OpenTelemetry-Collector-compatible trace pipeline (no --config: the built-in default)."""
    if ctx.invoked_subcommand is not None:
        return
    raw, problems = _load(configs, sets)
    config = None
    if raw is not None:
        config, found = resolve(raw)
        problems += found
    level = config.log_level.upper() if config is not None else "INFO"
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO) if level != "WARN" else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    log = logging.getLogger("meshtrace.collector")
    for problem in problems:
        (log.error if problem.severity == ERROR else log.warning)("config: %s", problem)
    if config is None:
        log.error("invalid config: not starting (see `meshtrace collector validate`)")
        sys.exit(1)

    from meshtrace import aio
    from meshtrace.collector.service import run

    sys.exit(aio.run(run(config, drain_timeout)))


@collector.command()
@click.option("--config", "configs", multiple=True, required=True, metavar="FILE", help=CONFIG_HELP)
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option(
    "--upstream",
    is_flag=True,
    help="Check only what the real Collector (the catalogue's pinned release) would say, not what "
    "meshtrace runs locally: for a config you deploy to a cluster.",
)
def validate(configs: tuple[str, ...], sets: tuple[str, ...], upstream: bool) -> None:
    """Check a config: print every problem with its key path and code; exit 0 if valid, 1 if not."""
    raw, problems = _load(configs, sets)
    if raw is not None:
        problems += resolve(raw, upstream)[1]
    for problem in problems:
        click.echo(str(problem))
    errors = sum(p.severity == ERROR for p in problems)
    warnings = len(problems) - errors
    if errors:
        click.echo(f"invalid: {errors} error(s), {warnings} warning(s)")
        sys.exit(1)
    click.echo(f"valid ({warnings} warning(s))")
