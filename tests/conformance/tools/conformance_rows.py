"""Reading the conformance tables (tests/conformance/<suite>/*.yaml) as rows.

A table file names its upstream (`upstream: {repo, commit, file, test}`) and holds cases either
directly (`cases`), per test function (`suites: [{test, file?, commit?, cases}]`), read from upstream's
source (`source_rows`) or left out as a whole (`not_restated`). Every case has a `name` (upstream's
subtest name, verbatim) and a `status`:
- `agree`: meshtrace gives upstream's expected result; the suite asserts it.
- `divergence`: meshtrace differs on purpose; `reason` says why and `doc` names the docs/ page
  that says so; the suite asserts meshtrace's documented result (`meshtrace`) and that it still
  differs from upstream's (so a change on either side is noticed).
- `out_of_scope`: upstream tests something meshtrace does not model; `reason` says what.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

STATUSES = ("agree", "divergence", "out_of_scope")


@dataclass(frozen=True)
class Row:
    table: str  # the data file's stem
    upstream: str  # "repo@commit file Test/subtest"
    test: str
    case: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.case["name"])

    @property
    def status(self) -> str:
        return str(self.case["status"])

    @property
    def id(self) -> str:
        return f"{self.test}/{self.name}"


def load(path: Path) -> tuple[dict[str, Any], list[Row]]:
    """The table's document and its rows, with every row's status checked."""
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    up = doc.get("upstream", {})
    rows: list[Row] = []

    def add(case: dict[str, Any], test: str, file: str | None, commit: str | None = None) -> None:
        where = f"{up.get('repo')}@{str(commit or up.get('commit'))[:11]} {file or up.get('file')}"
        row = Row(path.stem, f"{where} {test}/{case['name']}", test, case)
        if row.status not in STATUSES:
            raise ValueError(f"{path.name} {row.id}: status {row.status!r} is not one of {STATUSES}")
        if row.status != "agree" and not case.get("reason"):
            raise ValueError(f"{path.name} {row.id}: a {row.status} row needs a reason")
        if row.status == "divergence" and not case.get("doc"):
            raise ValueError(f"{path.name} {row.id}: a divergence row names the docs page that documents it")
        rows.append(row)

    for case in doc.get("cases", []):
        add(case, str(up.get("test")), None)
    for suite in doc.get("suites", []):
        for case in suite["cases"]:
            add(case, str(suite.get("test") or up.get("test")), suite.get("file"), suite.get("commit"))
    for case in doc.get("source_rows", []):
        add(case, "source", None)
    return doc, rows


def not_restated(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Whole upstream test functions left out, each with its row count and reason."""
    return list(doc.get("not_restated", []))
