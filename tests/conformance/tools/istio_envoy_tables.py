"""The Istio and Envoy conformance tables (tests/conformance/istio, tests/conformance/envoy):
count their rows and compare them with an upstream checkout, so a newer release can be read.

    python tests/conformance/tools/istio_envoy_tables.py summary
    python tests/conformance/tools/istio_envoy_tables.py compare --istio ~/src/istio --envoy ~/src/envoy

`summary` prints, per table and upstream test function, the rows that agree, the documented
divergences and the rows out of scope (Markdown, for docs/conformance.md). `compare` lists, for
every upstream test function a table restates, the subtests upstream has that the table lacks
(new rows to read and restate) and the table rows upstream no longer has. Subtest names are read
from the test sources (a table row named "Name [block]" restates one block of upstream's Name):
Go table rows (`name: "..."` or a row's first string) inside `func TestX`,
and `TEST(Suite, Name)` / `TEST_F(Suite, Name)` in C++. Expected values are never read
automatically: each new row is restated by hand from upstream's table, as the others were.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

from conformance_rows import STATUSES, Row, load, not_restated

ROOT = Path(__file__).resolve().parents[1]
TABLES = sorted([*ROOT.glob("istio/*.yaml"), *ROOT.glob("envoy/*.yaml")])
# a table row's opening brace, then its name (`name: "..."` or a leading string, never a map key)
_GO_ROW = re.compile(r"\{\s*\n\s*(?:name:\s*)?\"([^\"]+)\",\s*\n")
_CC_TEST = re.compile(r"^TEST(?:_F)?\(\s*(\w+)\s*,\s*(\w+)\s*\)", re.M)


def summary() -> None:
    print("| table | upstream test | rows | agree | documented divergence | out of scope |")
    print("|---|---|---|---|---|---|")
    for path in TABLES:
        doc, rows = load(path)
        by_test: dict[str, list[Row]] = defaultdict(list)
        for row in rows:
            by_test[row.test].append(row)
        for test, items in by_test.items():
            counts = Counter(r.status for r in items)
            cells = " | ".join(str(counts.get(s, 0)) for s in STATUSES)
            print(f"| {path.parent.name}/{path.name} | {test} | {len(items)} | {cells} |")
        for item in not_restated(doc):
            n = item["rows"] or "-"  # 0: test functions outside the table's subject, not counted
            print(f"| {path.parent.name}/{path.name} | {item['test']} (not restated) | {n} | - | - | {n} |")


def go_subtests(source: str, test: str) -> list[str]:
    start = source.find(f"func {test}(")
    if start < 0:
        return []
    end = source.find("\nfunc ", start + 1)
    return _GO_ROW.findall(source[start : end if end > 0 else None])


def cc_tests(source: str, suite: str, select: str | None) -> list[str]:
    """TEST/TEST_F names of `suite`; with `select`, only tests whose body matches it (a table
    that restates part of a file, e.g. the tracing cases of conn_manager_utility_test.cc)."""
    heads = list(_CC_TEST.finditer(source))
    names = []
    for i, head in enumerate(heads):
        body = source[head.end() : heads[i + 1].start() if i + 1 < len(heads) else None]
        if head.group(1) == suite and (select is None or re.search(select, body)):
            names.append(head.group(2))
    return names


def compare(istio: Path | None, envoy: Path | None) -> int:
    differences = 0
    for path in TABLES:
        doc, rows = load(path)
        repo = doc["upstream"]["repo"]
        checkout = istio if repo == "istio/istio" else envoy
        if checkout is None:
            continue
        files = {(r.test, r.upstream.split(" ")[1]) for r in rows if r.test != "source"}
        selects = {s["test"]: s.get("select") for s in doc.get("suites", [])}
        for test, file in sorted(files):
            source_path = checkout / file
            if not source_path.exists():
                print(f"{path.name}: {file} is gone upstream")
                differences += 1
                continue
            source = source_path.read_text(encoding="utf-8")
            if file.endswith(".go"):
                upstream = go_subtests(source, test)
            else:
                upstream = cc_tests(source, test, selects.get(test))
            ours = {r.name.split(" [")[0] for r in rows if r.test == test}  # "Test [block]": one block
            for name in sorted(set(upstream) - ours):
                print(f"{path.name} {test}: new upstream row {name!r}")
                differences += 1
            for name in sorted(ours - set(upstream)):
                print(f"{path.name} {test}: row {name!r} is no longer upstream")
                differences += 1
    print(f"{differences} difference(s)")
    return 1 if differences else 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("summary")
    cmp = sub.add_parser("compare")
    cmp.add_argument("--istio", type=Path, help="an istio/istio checkout at the release to compare")
    cmp.add_argument("--envoy", type=Path, help="an envoyproxy/envoy checkout at the release to compare")
    args = parser.parse_args()
    if args.command == "summary":
        summary()
        return 0
    return compare(args.istio, args.envoy)


if __name__ == "__main__":
    sys.exit(main())
