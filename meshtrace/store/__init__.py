"""The embedded trace store (exporter `store`) and its reader API.

The contract is `SpanStore` (`protocol.py`): what the query extension calls on the store it finds
with `Host.get_exporter(id).store`. `TraceStore` (`sqlite.py`) implements it over one SQLite file:
`schema.py` (tables, versions, migration), `writer.py` + `ingest.py` + `retention.py` (the writer
thread, its rows, the bounds), `reader.py` + `search.py` (reads and search planning).
"""

from meshtrace.store.protocol import (
    MAX_SEARCH_LIMIT,
    DependencyLink,
    Operation,
    SpanStore,
    StoreError,
    StoreFullError,
    TraceQuery,
)
from meshtrace.store.reader import StoreStats
from meshtrace.store.retention import Clock
from meshtrace.store.schema import SchemaVersionError
from meshtrace.store.sqlite import TraceStore, default_path

__all__ = [
    "MAX_SEARCH_LIMIT",
    "Clock",
    "DependencyLink",
    "Operation",
    "SchemaVersionError",
    "SpanStore",
    "StoreError",
    "StoreFullError",
    "StoreStats",
    "TraceQuery",
    "TraceStore",
    "default_path",
]
