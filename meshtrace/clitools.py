"""Pieces the `meshtrace` subcommands share, so `-f` means the same thing in every command."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from meshtrace.config.loader import Bundle

F = TypeVar("F", bound=Callable[..., Any])


def _existing_paths(_ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]) -> tuple[Path, ...]:
    """Every `-f` path must exist: one message and exit 2 in every command, before any work."""
    for given in value:
        if not Path(given).exists():
            raise click.BadParameter(f"{given}: no such file or folder")
    return tuple(Path(v) for v in value)


def filename_option(help: str, *, required: bool = True) -> Callable[[F], F]:
    """`-f/--filename FILE_OR_DIR` (repeatable), passed to the command as `paths` (`Path`s), like
    kubectl's `-f`. A path that does not exist is a usage error (exit 2); what cannot be read in
    one that does (an empty folder, bad YAML) is the loader's to report."""
    return click.option(
        "-f",
        "--filename",
        "paths",
        multiple=True,
        required=required,
        callback=_existing_paths,
        help=help,
    )


def load_or_exit(command: str, paths: Sequence[str | Path]) -> Bundle:
    """Load the manifests, print each file that cannot be read, and exit 2 when nothing could be."""
    from meshtrace.config.loader import load

    bundle = load(paths)
    unreadable = bundle.unreadable
    for p in unreadable:
        click.echo(f"meshtrace {command}: {p.file}: {p.message}", err=True)
    if unreadable and not bundle.documents:
        sys.exit(2)
    return bundle
