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


def filename_option(help: str, *, required: bool = True, must_exist: bool = False) -> Callable[[F], F]:
    """`-f/--filename FILE_OR_DIR` (repeatable), passed to the command as `paths`, like kubectl's
    `-f`. With `must_exist`, click refuses a missing path and the values are `Path`s; without it
    they are strings and the loader reports what it cannot read."""
    return click.option(
        "-f",
        "--filename",
        "paths",
        multiple=True,
        required=required,
        type=click.Path(exists=True, path_type=Path) if must_exist else None,
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
