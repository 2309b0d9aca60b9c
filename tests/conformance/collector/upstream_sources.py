"""List the upstream files and commits the conformance tables were read from, with the git
command that shows what changed since, in a local collector-contrib checkout. Not a test: run by
hand when comparing with a newer release (see README.md)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).parent


def sources(node: Any) -> Iterator[tuple[str, str]]:
    """Every (file, commit) pair named anywhere in a table file."""
    if isinstance(node, dict):
        file, commit = node.get("file"), node.get("commit")
        if isinstance(file, str) and isinstance(commit, str):
            yield file.split()[0], commit
        for key, value in (node.get("commits") or {}).items():
            directory = Path(str(node.get("file", ""))).parent
            yield str(directory / "testdata" / key), str(value)
        for value in node.values():
            yield from sources(value)
    elif isinstance(node, list):
        for value in node:
            yield from sources(value)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--contrib", type=Path, help="a local opentelemetry-collector-contrib checkout")
    args = parser.parse_args()
    for table in sorted(HERE.glob("*/*.yaml")):
        print(f"# {table.relative_to(HERE)}")
        for file, commit in sorted(set(sources(yaml.safe_load(table.read_text())))):
            where = f"git -C {args.contrib} " if args.contrib else "git "
            print(f"{where}diff {commit}..HEAD -- {file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
