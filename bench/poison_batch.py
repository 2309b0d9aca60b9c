"""What one span the store cannot hold costs the batch it arrives in (docs/store.md, "Poison
isolation"): the same 8 payloads of 1,024 spans committed as one batch, clean and with one span
starting at 2^63 ns, which the writer isolates by bisection and drops.

    .venv/bin/python bench/poison_batch.py [--runs 3]
"""

from __future__ import annotations

import argparse
import logging
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from meshtrace.store import TraceStore
from meshtrace.store.synthetic import mesh_traces

PAYLOADS = 8
TRACES_PER_PAYLOAD = 256  # 4 spans each


def commit_seconds(poisoned: bool) -> tuple[float, int, int]:
    """(seconds from releasing the writer to every payload committed, spans stored, dropped)."""
    with tempfile.TemporaryDirectory() as folder:
        store = TraceStore(Path(folder) / "traces.db")
        store.open()
        try:
            payloads = []
            for k in range(PAYLOADS):
                request = mesh_traces(TRACES_PER_PAYLOAD, time.time_ns(), 1000, seed=k + 1)
                if poisoned and k == PAYLOADS // 2:
                    request.resource_spans[5].scope_spans[0].spans[0].start_time_unix_nano = 2**63
                payloads.append(request.SerializeToString())
            # Hold the writer so that every payload is queued before it starts: one batch.
            blocker = sqlite3.connect(store.path, isolation_level=None)
            blocker.execute("BEGIN IMMEDIATE")
            futures = [store.write(p) for p in payloads]
            started = time.perf_counter()
            blocker.execute("ROLLBACK")
            blocker.close()
            dropped = sum(f.result(60) for f in futures)
            took = time.perf_counter() - started
            return took, store.stats().spans, dropped
        finally:
            store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # the store logs each isolated span
    spans = PAYLOADS * TRACES_PER_PAYLOAD * 4
    print(f"one batch of {PAYLOADS} payloads, {spans} spans; median of {args.runs} runs")
    for poisoned in (False, True):
        runs = [commit_seconds(poisoned) for _ in range(args.runs)]
        took = statistics.median(r[0] for r in runs)
        stored, dropped = runs[-1][1], runs[-1][2]
        label = "one span at 2^63 ns" if poisoned else "clean"
        print(f"{label:>20}: {took * 1000:6.0f} ms, {stored} stored, {dropped} dropped")


if __name__ == "__main__":
    main()
