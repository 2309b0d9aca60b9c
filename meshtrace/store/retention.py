"""The store's bounds, applied by the writer thread after its commits: retention (traces first
written longer ago than `retention_s` by the store's clock) and the size bound (`max_bytes` of
live pages), each deleting whole traces in the order their first span was written."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

from meshtrace.store.ingest import Ingest
from meshtrace.store.schema import used_bytes

log = logging.getLogger(__name__)

# The store's wall clock, in ns since the epoch (`time.time_ns`; tests pass a clock they move).
Clock = Callable[[], int]


class Retention:
    """Deletes the first written traces while they are older than `retention_s` (0 keeps them) or
    the live pages exceed `max_bytes` (0: no bound; they are cut down to 90% of it)."""

    def __init__(self, *, max_bytes: int, retention_s: float, clock: Clock) -> None:
        self.max_bytes = max_bytes
        self.retention_s = retention_s
        self.clock = clock
        self.spans_evicted = 0

    def apply(self, ingest: Ingest) -> None:
        """Apply retention, then the size bound, deleting whole traces, first written first."""
        conn = ingest.conn
        try:
            if self.retention_s > 0:
                cutoff = self.clock() - int(self.retention_s * 1e9)
                row = conn.execute(
                    "SELECT max(last_rowid) FROM batches WHERE written_ns < ?", (cutoff,)
                ).fetchone()
                if row[0] is not None:
                    self._evict_up_to(ingest, row[0])
            if self.max_bytes > 0 and used_bytes(conn) > self.max_bytes:
                self._shrink(ingest)
        except Exception as exc:  # the writer must outlive a failed clean-up
            log.error("store: maintenance failed: %s", exc)
            if conn.in_transaction:
                conn.execute("ROLLBACK")

    def _shrink(self, ingest: Ingest) -> None:
        conn = ingest.conn
        target = int(self.max_bytes * 0.9)
        for _ in range(100):  # bounded: each round deletes at least 1% of the spans
            used = used_bytes(conn)
            if used <= target:
                return
            first, last = conn.execute("SELECT min(rowid), max(rowid) FROM spans").fetchone()
            if first is None:
                return
            count = last - first + 1  # rowids only grow: the span count, give or take holes
            n = max(1, count // 100, math.ceil((used - target) / (used / count)))
            self._evict_up_to(ingest, first + n - 1)

    def _evict_up_to(self, ingest: Ingest, last_rowid: int) -> None:
        """Delete every trace with a span at or before `last_rowid` (all of its spans), a
        transaction per 2,000 traces."""
        conn = ingest.conn
        while True:
            ids = [
                r[0]
                for r in conn.execute(
                    "SELECT DISTINCT trace_id FROM spans WHERE rowid <= ? LIMIT 2000", (last_rowid,)
                )
            ]
            if not ids:
                break
            conn.execute("BEGIN IMMEDIATE")
            self.spans_evicted += ingest.evict(ids)
            conn.execute("COMMIT")
        conn.execute("DELETE FROM batches WHERE last_rowid <= ?", (last_rowid,))
