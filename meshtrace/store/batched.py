"""Queries over a list of keys of any length, run a chunk of keys at a time."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

# Below SQLite's smallest default limit on host parameters in one statement (999 before 3.32).
CHUNK = 500


def rows_in(conn: sqlite3.Connection, sql: str, keys: Sequence[Any]) -> Iterator[Any]:
    """The rows of `sql` (its `{marks}` filled with one `?` per key of a chunk) over every chunk
    of `keys`, chunk after chunk. Each chunk's rows are fetched before the next chunk runs."""
    for i in range(0, len(keys), CHUNK):
        chunk = keys[i : i + CHUNK]
        yield from conn.execute(sql.format(marks=",".join("?" * len(chunk))), chunk).fetchall()
