"""The `meshtrace` command. Each subcommand lives in its component and is imported only when run,
so `meshtrace sidecar` never pays for the collector's imports (grpcio) and vice versa."""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

import click

# command name -> "module:attribute" of a click command in the component that owns it.
COMMANDS: dict[str, str] = {
    "up": "meshtrace.runtime.cli:up",
    "logs": "meshtrace.runtime.cli:logs",
    "collector": "meshtrace.collector.cli:collector",
    "control": "meshtrace.control.cli:control",
    "sidecar": "meshtrace.sidecar.cli:sidecar",
    "explain": "meshtrace.config.cli:explain",
    "lint": "meshtrace.config.cli:lint",
    "status": "meshtrace.control.cli:status",
    "render": "meshtrace.deploy.cli:render",
    "bench": "meshtrace.bench.cli:bench",
}


def _available(table: dict[str, str]) -> dict[str, str]:
    """Only commands whose component module exists are offered."""
    out = {}
    for name, target in table.items():
        module = target.split(":", 1)[0]
        if importlib.util.find_spec(module) is not None:
            out[name] = target
    return out


class LazyGroup(click.Group):
    """A click group whose commands are "module:attribute" strings in `table`."""

    table: dict[str, str] = COMMANDS

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_available(self.table))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _available(self.table).get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":", 1)
        command: Any = getattr(importlib.import_module(module_name), attr)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="meshtrace")
def main() -> None:
    """meshtrace: a service mesh that traces every request (Istio + OTLP, on one machine)."""
