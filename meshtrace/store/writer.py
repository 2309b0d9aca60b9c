"""The store's one writer thread: `write()` queues encoded requests (never touching the disk), the
thread commits everything queued as one transaction and completes each caller's future, isolates
the spans it cannot hold (savepoints, bisecting a failing payload) and then applies the bounds
(`retention.py`)."""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from meshtrace.model import Traces
from meshtrace.model.traces import split_traces
from meshtrace.store.ingest import Ingest
from meshtrace.store.protocol import StoreError, StoreFullError
from meshtrace.store.retention import Clock, Retention

log = logging.getLogger(__name__)

# What a span the store cannot hold raises while it is written (a time or count over SQLite's
# signed 64 bits, an invalid id, a value over SQLite's limits). Anything else (disk full, I/O)
# fails the whole batch, retryably.
_UNSTORABLE = (ValueError, OverflowError, TypeError, sqlite3.DataError, sqlite3.IntegrityError)

_FLUSH = object()
_STOP = object()

_Payload = tuple[bytes, Future[int]]


class Writer:
    """Queues writes for the thread that owns the writing connection. At most
    `max_pending_bytes` wait (beyond that `write` raises StoreFullError); the thread commits up
    to `batch_bytes` at a time and applies `retention` at most every `maintenance_interval_s`
    (and on every flush)."""

    def __init__(
        self,
        retention: Retention,
        clock: Clock,
        *,
        max_pending_bytes: int,
        batch_bytes: int,
        maintenance_interval_s: float,
    ) -> None:
        self.retention = retention
        self.clock = clock
        self.max_pending_bytes = max_pending_bytes
        self.batch_bytes = batch_bytes
        self.maintenance_interval_s = maintenance_interval_s
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.spans_written = 0
        self.spans_dropped = 0  # spans of written batches that the store could not hold
        self.write_errors = 0

    def start(self, conn: sqlite3.Connection) -> None:
        """Run the writer thread on `conn` (which it closes when it stops)."""
        try:
            ingest = Ingest(conn)
        except Exception:
            conn.close()
            raise
        self._thread = threading.Thread(target=self._run, args=(ingest,), name="meshtrace-store", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """Write what is pending and stop the thread."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout)
            self._thread = None

    @property
    def pending_bytes(self) -> int:
        return self._pending

    def write(self, encoded: bytes) -> Future[int]:
        """Queue encoded ExportTraceServiceRequest bytes; the future completes once they are
        committed, with the number of their spans the store could not hold and dropped (an
        invalid id, a time after 2262: receivers refuse these first); StoreError if the write
        failed or the bytes are not a request. Raises StoreFullError at once when too much is
        pending."""
        done: Future[int] = Future()
        if not encoded:
            done.set_result(0)
            return done
        if self._thread is None or not self._thread.is_alive():
            raise StoreError("the trace store is not open")
        with self._pending_lock:
            if self._pending + len(encoded) > self.max_pending_bytes and self._pending > 0:
                raise StoreFullError(f"{self._pending} bytes waiting to be written to the trace store")
            self._pending += len(encoded)
        self._queue.put((encoded, done))
        return done

    def flush(self, timeout: float) -> bool:
        """Wait until everything queued before this call is committed; False on timeout."""
        if self._thread is None:
            return True
        done = threading.Event()
        self._queue.put((_FLUSH, done))
        return done.wait(timeout)

    def _run(self, ingest: Ingest) -> None:
        # Maintenance is paced by the monotonic clock: an interval, not a timestamp.
        last_maintenance = 0.0
        try:
            while True:
                payloads, waiters, stop = self._take()
                if payloads:
                    self._write_batch(ingest, payloads)
                    with self._pending_lock:
                        self._pending -= sum(len(p) for p, _ in payloads)
                now = time.monotonic()
                if now - last_maintenance >= self.maintenance_interval_s or waiters:
                    last_maintenance = now
                    self.retention.apply(ingest)
                for waiter in waiters:
                    waiter.set()
                if stop:
                    break
        finally:
            ingest.conn.close()

    def _take(self) -> tuple[list[_Payload], list[threading.Event], bool]:
        """Wait for the queue, then take what is queued, up to `batch_bytes`: (payloads, flush
        waiters, whether to stop after them)."""
        item = self._queue.get()
        payloads: list[_Payload] = []
        waiters: list[threading.Event] = []
        size = 0
        while True:
            if item is _STOP:
                return payloads, waiters, True
            if isinstance(item, tuple) and item[0] is _FLUSH:
                waiters.append(item[1])
            else:
                assert isinstance(item, tuple)
                payloads.append(item)
                size += len(item[0])
            if size >= self.batch_bytes:
                return payloads, waiters, False
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return payloads, waiters, False

    def _decode(self, payloads: list[_Payload]) -> Iterator[ExportTraceServiceRequest]:
        try:
            yield ExportTraceServiceRequest.FromString(b"".join(p for p, _ in payloads))
            return
        except DecodeError:
            pass
        for payload, done in payloads:  # find the bad one and keep the rest
            try:
                yield ExportTraceServiceRequest.FromString(payload)
            except DecodeError:
                self._undecodable(payload, done)

    def _undecodable(self, payload: bytes, done: Future[int]) -> None:
        self.write_errors += 1
        log.warning("store: dropped %d bytes that are not an ExportTraceServiceRequest", len(payload))
        done.set_exception(StoreError("not an encoded ExportTraceServiceRequest"))

    def _write_batch(self, ingest: Ingest, payloads: list[_Payload]) -> None:
        """Commit `payloads` in one transaction and complete their futures."""
        conn = ingest.conn
        now_ns = self.clock()
        error: StoreError | None = None
        dropped: dict[int, int] = {}  # payload index -> spans it lost to isolation
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("SAVEPOINT batch")
            try:
                written = sum(ingest.write(req, now_ns) for req in self._decode(payloads))
                conn.execute("RELEASE batch")
            except _UNSTORABLE as exc:
                # A span the store cannot hold must not cost the others: write each payload
                # on its own, isolating the bad spans.
                log.warning("store: a span cannot be written (%s); isolating it", exc)
                conn.execute("ROLLBACK TO batch")
                conn.execute("RELEASE batch")
                ingest.forget()
                written = self._write_each(ingest, payloads, now_ns, dropped)
            conn.execute("COMMIT")
            self.spans_written += written
        except Exception as exc:  # the writer must outlive any bad batch
            self.write_errors += 1
            log.error("store: write failed, %d bytes lost: %s", sum(len(p) for p, _ in payloads), exc)
            error = StoreError(f"the trace store could not write: {exc}")
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            ingest.forget()
        for index, (_, done) in enumerate(payloads):
            if done.done():
                continue
            if error is None:
                done.set_result(dropped.get(index, 0))
            else:
                done.set_exception(error)

    def _write_each(
        self, ingest: Ingest, payloads: list[_Payload], now_ns: int, dropped: dict[int, int]
    ) -> int:
        """Write each payload alone, isolating its bad spans; returns the spans written and fills
        `dropped` (payload index -> spans dropped)."""
        written = 0
        for index, (payload, done) in enumerate(payloads):
            if done.done():
                continue
            try:
                request = ExportTraceServiceRequest.FromString(payload)
            except DecodeError:
                self._undecodable(payload, done)
                continue
            ok, lost = self._write_isolating(ingest, request, now_ns)
            written += ok
            dropped[index] = lost
        return written

    def _write_isolating(
        self, ingest: Ingest, request: ExportTraceServiceRequest, now_ns: int
    ) -> tuple[int, int]:
        """(spans written, spans dropped): `request` in a savepoint; when a span in it cannot be
        stored, each half the same way, down to the single spans that are dropped (a few
        savepoints per bad span, so one bad span in thousands stays cheap)."""
        conn = ingest.conn
        attempt = ExportTraceServiceRequest()
        attempt.CopyFrom(request)  # write() clears the ids of the spans it has seen
        conn.execute("SAVEPOINT isolate")
        try:
            written = ingest.write(attempt, now_ns)
            conn.execute("RELEASE isolate")
            return written, 0
        except _UNSTORABLE as exc:
            conn.execute("ROLLBACK TO isolate")
            conn.execute("RELEASE isolate")
            ingest.forget()
            traces = Traces.from_message(request)
            count = traces.span_count()
            if count <= 1:
                self.spans_dropped += count
                log.warning("store: dropped a span it cannot hold: %s", exc)
                return 0, count
        head, rest = split_traces(traces, count // 2)
        first = self._write_isolating(ingest, head.message(), now_ns)
        second = self._write_isolating(ingest, rest.message(), now_ns)
        return first[0] + second[0], first[1] + second[1]
