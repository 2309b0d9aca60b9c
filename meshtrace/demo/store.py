"""The backend's database: a real SQLite file, created and seeded on first use (the seed only
pretended, with a 50 ms sleep and a hard-coded list)."""

from __future__ import annotations

import sqlite3
import tempfile
import time
from pathlib import Path

from meshtrace.demo.faults import Faults

DB_PATH_ENV = "DB_PATH"
SEED_USERS = ("Alice", "Bob", "Charlie")
SELECT_USERS = "SELECT name FROM users ORDER BY id"
TABLE = "users"


class InjectedFault(sqlite3.OperationalError):
    """The failure asked for with `?fail=` / FAIL_RATE."""


def default_path() -> Path:
    return Path(tempfile.gettempdir()) / "meshtrace-demo" / "backend.sqlite"


class UserStore:
    """One connection per query: queries run in worker threads and SQLite connections are
    thread-bound; opening a local file is cheap next to the query."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            conn.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")
            # Replicas may share the file: INSERT OR IGNORE keeps seeding idempotent.
            conn.executemany(
                f"INSERT OR IGNORE INTO {TABLE} (id, name) VALUES (?, ?)",
                list(enumerate(SEED_USERS, start=1)),
            )

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=5.0)

    def select_users(self, faults: Faults) -> list[str]:
        """Blocking: run it with `asyncio.to_thread`."""
        conn = self._connect()
        try:
            if faults.slow_ms:
                time.sleep(faults.slow_ms / 1000)
            if faults.fail:
                raise InjectedFault("injected fault (fail / FAIL_RATE): database unavailable")
            return [row[0] for row in conn.execute(SELECT_USERS)]
        finally:
            conn.close()
