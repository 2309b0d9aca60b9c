"""The embedded trace store: one SQLite database (WAL), written by one writer thread
(`writer.py`, with `ingest.py` and `retention.py`), read by any thread through its own connection
(`reader.py`, `search.py`); the file's layout and versions are in `schema.py`. `TraceStore` ties
them together and is the `SpanStore` (`protocol.py`) the query extension reads."""

from __future__ import annotations

import os
import sqlite3
import time
from concurrent.futures import Future
from contextlib import closing
from pathlib import Path

from meshtrace.store import archive
from meshtrace.store.protocol import SpanStore, StoreError
from meshtrace.store.reader import Reader
from meshtrace.store.retention import Clock, Retention
from meshtrace.store.schema import connect, open_schema
from meshtrace.store.writer import Writer


def default_path() -> Path:
    """`$MESHTRACE_DATA_DIR/traces.db`, else the user's data directory (XDG)."""
    data_dir = os.environ.get("MESHTRACE_DATA_DIR")
    if data_dir:
        return Path(data_dir).expanduser() / "traces.db"
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "meshtrace" / "traces.db"


class TraceStore(Reader, SpanStore):
    """The `SpanStore` over one SQLite file (subclassing the protocol has mypy check that it is
    one). Owns the database: `write()` queues encoded `ExportTraceServiceRequest` bytes for the writer
    thread (never blocking the caller) and returns a future that completes when they are
    committed; readers query from any thread.

    Bounds: `max_bytes` of live pages in the database file (the first written traces are deleted
    down to 90% of it when it is exceeded), `retention_s` since a trace was first written (by
    `clock`, ns since the epoch), and `max_pending_bytes` of accepted-but-unwritten data (beyond
    it `write` raises StoreFullError). A crash loses only what is still pending, none of which
    has been acknowledged to a caller that waits for its future.
    """

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int = 1 << 30,
        retention_s: float = 72 * 3600.0,
        max_pending_bytes: int = 64 << 20,
        batch_bytes: int = 8 << 20,
        maintenance_interval_s: float = 1.0,
        clock: Clock = time.time_ns,
    ) -> None:
        super().__init__(path)
        self.clock = clock
        self._retention = Retention(max_bytes=max_bytes, retention_s=retention_s, clock=clock)
        self._writer = Writer(
            self._retention,
            clock,
            max_pending_bytes=max_pending_bytes,
            batch_bytes=batch_bytes,
            maintenance_interval_s=maintenance_interval_s,
        )

    def open(self) -> None:
        """Create or open the database (raising StoreError with the reason) and start the writer."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = connect(self.path)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"{self.path}: cannot open the trace store: {exc}") from None
        try:
            open_schema(conn, self.path)
            conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable against process crashes
            conn.execute("PRAGMA journal_size_limit=134217728")
            # Random trace ids make index inserts touch random pages: a 64 MiB page cache keeps
            # ingest ~2.5x faster than SQLite's 2 MiB default at a million spans.
            conn.execute("PRAGMA cache_size=-65536")
            # Checkpoint every 128 MiB of WAL rather than SQLite's 4 MiB: random trace ids make each
            # commit dirty thousands of index pages, and a page dirtied by several commits is
            # copied into the database once per checkpoint (measured: ~15% more spans per
            # CPU-second at a million spans). The WAL file stays at most that size.
            conn.execute("PRAGMA wal_autocheckpoint=32768")
        except Exception:
            conn.close()
            raise
        self._writer.start(conn)

    def close(self, timeout: float = 30.0) -> None:
        """Write what is pending, stop the writer and close every connection."""
        self._writer.stop(timeout)
        super().close()

    # --- writing (the writer thread: writer.py) ---------------------------------------------
    @property
    def pending_bytes(self) -> int:
        return self._writer.pending_bytes

    def write(self, encoded: bytes) -> Future[int]:
        """Queue encoded ExportTraceServiceRequest bytes; the future completes once they are
        committed, with the number of their spans the store could not hold and dropped (an
        invalid id, a time after 2262: receivers refuse these first); StoreError if the write
        failed or the bytes are not a request. Raises StoreFullError at once when too much is
        pending."""
        return self._writer.write(encoded)

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything queued before this call is committed; False on timeout."""
        return self._writer.flush(timeout)

    def archive_trace(self, trace_id: bytes) -> bool:
        """Copy the stored trace into the archive; False when no span of it is stored."""
        trace = self.get_trace(trace_id)
        if trace is None:
            return False
        with closing(connect(self.path)) as conn:
            archive.write(conn, trace_id, trace, self.clock())
        return True

    # --- what the writer has done, for tests and benchmarks ----------------------------------
    @property
    def spans_written(self) -> int:
        return self._writer.spans_written

    @property
    def spans_dropped(self) -> int:
        """Spans of written batches that the store could not hold."""
        return self._writer.spans_dropped

    @property
    def write_errors(self) -> int:
        return self._writer.write_errors

    @property
    def spans_evicted(self) -> int:
        return self._retention.spans_evicted
