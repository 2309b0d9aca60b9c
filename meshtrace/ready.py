"""The ready line every long-running command prints once per listener (README.md, Commands):
`meshtrace: <component> listening on <host>:<port>`. Tests and `meshtrace up` parse it."""

from __future__ import annotations

import re
import sys

READY_LINE = re.compile(r"^meshtrace: (?P<component>\S+) listening on (?P<host>\S+):(?P<port>\d+)$")


def announce(component: str, host: str, port: int) -> None:
    """Print the ready line for a listener that is accepting connections now."""
    sys.stdout.write(f"meshtrace: {component} listening on {host}:{port}\n")
    sys.stdout.flush()


def parse(line: str) -> tuple[str, str, int] | None:
    """(component, host, port) from a ready line, or None for any other line."""
    match = READY_LINE.match(line.strip())
    if match is None:
        return None
    return match["component"], match["host"], int(match["port"])
