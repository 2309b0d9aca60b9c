"""The `bench` group; each benchmark is a click command in its own module, imported when run."""

from __future__ import annotations

import click

from meshtrace.cli import LazyGroup

BENCHMARKS: dict[str, str] = {
    "collector": "meshtrace.bench.collector:collector",
    "store": "meshtrace.bench.store:store",
    "overhead": "meshtrace.bench.overhead:overhead",
    "faults": "meshtrace.bench.faults:faults",
    "bounds": "meshtrace.bench.bounds:bounds",
}


class BenchGroup(LazyGroup):
    table = BENCHMARKS


@click.group(cls=BenchGroup)
def bench() -> None:
    """Benchmarks (printing tables): overhead, collector, store, faults, bounds."""
