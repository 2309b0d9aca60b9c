"""The seam between query and store: `meshtrace/query/` depends on the `SpanStore` protocol only,
and the protocol names exactly the store methods query calls."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import meshtrace.query
from meshtrace.store import SpanStore, TraceStore

QUERY = Path(meshtrace.query.__file__).parent
# The store modules whose names query may import: the contract and the value types it returns.
CONTRACT = {"meshtrace.store", "meshtrace.store.protocol", "meshtrace.store.summaries", "meshtrace.store.spm"}


def _sources() -> dict[Path, str]:
    return {path: path.read_text() for path in sorted(QUERY.glob("*.py"))}


def test_query_imports_the_protocol_not_the_sqlite_store() -> None:
    for path, source in _sources().items():
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("meshtrace.store"):
                assert node.module in CONTRACT, f"{path.name} imports {node.module}"
                assert "TraceStore" not in {a.name for a in node.names}, f"{path.name} imports TraceStore"


def test_the_protocol_names_exactly_what_query_calls() -> None:
    called = {
        name for source in _sources().values() for name in re.findall(r"\b_?store(?:\(\))?\.(\w+)\(", source)
    }
    members = {name for name in vars(SpanStore) if not name.startswith("_")}
    assert called == members


def test_the_sqlite_store_is_a_span_store(tmp_path: Path) -> None:
    assert isinstance(TraceStore(tmp_path / "traces.db"), SpanStore)
    assert not isinstance(object(), SpanStore)
