"""The `file_storage` extension: key/value storage on local disk for other components (the
persistent `sending_queue` of exporters), with the Collector contrib's keys:

```yaml
extensions:
  file_storage:
    directory: /var/lib/otelcol/file_storage   # must exist unless create_directory
    timeout: 1s              # wait this long for another process's lock on a file, then fail
    fsync: false             # true: fsync every commit (survives power loss, ~ms per write)
    create_directory: false
    directory_permissions: "0750"
    compaction:
      on_start: false        # VACUUM each file when it is opened
      on_rebound: false      # VACUUM once a file that grew past rebound_needed_threshold_mib
      rebound_needed_threshold_mib: 100    # is back under rebound_trigger_threshold_mib of data
      rebound_trigger_threshold_mib: 10
      check_interval: 5s
```

Each client is one SQLite database in WAL mode named after its component
(`exporter_otlp_grpc_agent_traces`), locked with `flock` so two processes never share a queue.
Durability of a committed `batch`: with `fsync: false` (SQLite `synchronous=NORMAL`) the commit
is in the WAL file through the OS before `batch` returns, so it survives the process being
killed (SIGKILL, OOM kill) but not a power loss or kernel crash; `fsync: true`
(`synchronous=FULL`) also survives those. All SQLite calls run on one thread per client, off the
event loop; batches that arrive during a commit share the next one (group commit).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypeVar

from meshtrace.collector.component import ComponentID, Host, Kind, StorageError
from meshtrace.collector.extensions.file_storage.config import CompactionConfig, FileStorageConfig
from meshtrace.collector.factory import ComponentFactory

log = logging.getLogger(__name__)
T = TypeVar("T")
_MIB = 1 << 20
_SAFE = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-_")


def sanitize(name: str) -> str:
    """The Collector's file-name rule: every character but [A-Za-z0-9._-] (and `~` itself)
    becomes `~` + its code point in 4 hex digits, so `logs/container` -> `logs~002Fcontainer`."""
    return "".join(c if c in _SAFE else f"~{ord(c):04X}" for c in name)


def client_file_name(kind: Kind, id: ComponentID, name: str) -> str:
    parts = [kind.value, id.type, id.name] + ([name] if name else [])
    return "_".join(sanitize(p) for p in parts)


@dataclass
class _Write:
    sets: list[tuple[str, bytes]]
    deletes: list[tuple[str]]
    done: asyncio.Future[None]


class SqliteClient:
    """One component's key/value file (the `StorageClient` protocol)."""

    def __init__(self, path: Path, config: FileStorageConfig) -> None:
        self.path = path
        self.config = config
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"file_storage-{path.name}")
        self._conn: sqlite3.Connection | None = None
        self._lock: IO[bytes] | None = None
        self._rebound_needed = False
        self._compactor: asyncio.Task[None] | None = None
        self._pending: list[_Write] = []
        self._committer: asyncio.Task[None] | None = None

    async def _call(self, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn)
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"file_storage {self.path}: {exc}") from None

    async def open(self) -> None:
        await self._lock_file()
        await self._call(self._open)
        if self.config.compaction.on_rebound:
            self._compactor = asyncio.create_task(self._compact_on_rebound(self.config.compaction))

    async def _lock_file(self) -> None:
        """Hold an exclusive flock on `<file>.lock`, waiting up to `timeout` for another process."""
        lock = open(f"{self.path}.lock", "wb")  # noqa: SIM115 - held until close()
        deadline = time.monotonic() + self.config.timeout
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    lock.close()
                    raise StorageError(
                        f"file_storage {self.path}: locked by another process (waited {self.config.timeout}s)"
                    ) from None
                await asyncio.sleep(0.05)
        self._lock = lock

    def _open(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL: a commit is written to the WAL before COMMIT returns (safe from a killed
            # process); FULL also fsyncs it (safe from power loss), the Collector's `fsync`.
            conn.execute(f"PRAGMA synchronous={'FULL' if self.config.fsync else 'NORMAL'}")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID"
            )
            if self.config.compaction.on_start:
                conn.execute("VACUUM")
        except Exception:
            conn.close()
            raise
        self._conn = conn

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise sqlite3.ProgrammingError("the storage client is closed")
        return self._conn

    async def get(self, key: str) -> bytes | None:
        def read() -> bytes | None:
            row = self._connection().execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
            return None if row is None else bytes(row[0])

        return await self._call(read)

    async def batch(self, set: Mapping[str, bytes] | None = None, delete: Iterable[str] = ()) -> None:
        """One atomic write. Batches that arrive while a commit is running are committed together
        in the next transaction (group commit: one fsync for many requests with `fsync: true`)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append(_Write(list((set or {}).items()), [(key,) for key in delete], done))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_pending())
        await done

    async def _commit_pending(self) -> None:
        while self._pending:
            writes, self._pending = self._pending, []
            try:
                await self._call(functools.partial(self._write, writes))
            except StorageError as exc:
                for write in writes:
                    if not write.done.done():
                        write.done.set_exception(exc)
            else:
                for write in writes:
                    if not write.done.done():
                        write.done.set_result(None)

    def _write(self, writes: list[_Write]) -> None:
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            for write in writes:  # in arrival order: a later set of a key wins
                if write.sets:
                    conn.executemany("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", write.sets)
                if write.deletes:
                    conn.executemany("DELETE FROM kv WHERE key = ?", write.deletes)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _sizes(self) -> tuple[int, int]:
        """(allocated bytes, bytes holding data) of the database file."""
        conn = self._connection()
        page = conn.execute("PRAGMA page_size").fetchone()[0]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        return pages * page, (pages - free) * page

    async def _compact_on_rebound(self, compaction: CompactionConfig) -> None:
        """The Collector's rebound compaction: once the file has grown past the `needed` size, VACUUM
        as soon as its data is back under the `trigger` size (a drained queue)."""
        while True:
            await asyncio.sleep(compaction.check_interval)
            try:
                allocated, used = await self._call(self._sizes)
                if allocated > compaction.rebound_needed_threshold_mib * _MIB:
                    self._rebound_needed = True
                if self._rebound_needed and used < compaction.rebound_trigger_threshold_mib * _MIB:
                    await self._call(lambda: self._connection().execute("VACUUM"))
                    self._rebound_needed = False
                    log.info("file_storage %s: compacted (%d MiB before)", self.path, allocated // _MIB)
            except StorageError as exc:
                log.warning("%s", exc)

    async def close(self) -> None:
        if self._committer is not None:  # let writes already made finish
            await asyncio.gather(self._committer, return_exceptions=True)
        if self._compactor is not None:
            self._compactor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._compactor
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await self._call(conn.close)
        self._executor.shutdown(wait=False)
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None


class FileStorage:
    def __init__(self, id: ComponentID, config: FileStorageConfig) -> None:
        self.id = id
        self.config = config
        self._clients: list[SqliteClient] = []

    async def start(self, host: Host) -> None:
        directory = Path(self.config.directory)
        if self.config.create_directory:
            try:
                directory.mkdir(parents=True, exist_ok=True, mode=int(self.config.directory_permissions, 8))
            except OSError as exc:
                message = f"extensions.{self.id}.directory: cannot create {directory}: {exc}"
                raise StorageError(message) from None
        if not directory.is_dir():
            raise StorageError(
                f"extensions.{self.id}.directory: {directory} must be an existing directory"
                " (or set create_directory: true)"
            )
        if not os.access(directory, os.W_OK | os.X_OK):
            raise StorageError(f"extensions.{self.id}.directory: {directory} is not writable")

    async def get_client(self, kind: Kind, id: ComponentID, name: str = "") -> SqliteClient:
        client = SqliteClient(Path(self.config.directory) / client_file_name(kind, id, name), self.config)
        await client.open()
        self._clients.append(client)
        return client

    async def shutdown(self) -> None:
        for client in self._clients:
            await client.close()
        self._clients.clear()


factory = ComponentFactory(
    "file_storage", Kind.EXTENSION, FileStorageConfig, lambda id, config, _: FileStorage(id, config)
)
