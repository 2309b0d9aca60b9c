"""The embedded trace store (exporter `store`) and its reader API.

The query extension finds the exporter with `Host.get_exporter(id)` and reads through its
`store` attribute, a `TraceStore`: `services()`, `operations()`, `find_trace_ids()`,
`get_traces()`, `get_trace()`, `dependencies()`, `stats()`, and `write()`/`flush()` for imports.
"""

from meshtrace.store.sqlite import (
    MAX_SEARCH_LIMIT,
    DependencyLink,
    Operation,
    SchemaVersionError,
    StoreError,
    StoreFullError,
    StoreStats,
    TraceQuery,
    TraceStore,
    default_path,
)

__all__ = [
    "MAX_SEARCH_LIMIT",
    "DependencyLink",
    "Operation",
    "SchemaVersionError",
    "StoreError",
    "StoreFullError",
    "StoreStats",
    "TraceQuery",
    "TraceStore",
    "default_path",
]
