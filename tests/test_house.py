"""The house rules a reader relies on, checked: no function over 80 lines without a reason written
beside it, and docs/architecture.md's map of which folder imports which is the code's."""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "meshtrace"
LONGEST = 80
# The reason a long function stays whole, on the line above it (or above its decorators).
REASON = re.compile(r"^\s*# long: \S")


def _functions(tree: ast.AST) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]


def long_functions_without_reason(source: str) -> list[str]:
    """`name:line (length lines)` for each function over LONGEST lines with no reason above it."""
    lines = source.splitlines()
    found = []
    for fn in _functions(ast.parse(source)):
        assert fn.end_lineno is not None
        length = fn.end_lineno - fn.lineno + 1
        first = min([fn.lineno, *(d.lineno for d in fn.decorator_list)])
        if length > LONGEST and not (first >= 2 and REASON.match(lines[first - 2])):
            found.append(f"{fn.name}:{fn.lineno} ({length} lines)")
    return found


def test_no_function_is_over_80_lines_without_a_reason_beside_it() -> None:
    found = [
        f"{path.relative_to(REPO)} {entry}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for entry in long_functions_without_reason(path.read_text())
    ]
    assert found == []


def test_the_length_check_sees_a_long_function() -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(LONGEST))
    assert long_functions_without_reason(f"def f() -> None:\n{body}\n") == [f"f:1 ({LONGEST + 1} lines)"]
    reasoned = f"# long: one table, read top to bottom\n@decorated\ndef f() -> None:\n{body}\n"
    assert long_functions_without_reason(reasoned) == []
    short = "\n".join(body.splitlines()[1:])
    assert long_functions_without_reason(f"def f() -> None:\n{short}\n") == []


def _folder(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else parts[0].removesuffix(".py")


def _imported_folders(path: Path) -> set[str]:
    """The top-level `meshtrace` folders and modules `path` imports, at module level or inside a
    function (a lazy import is still a dependency)."""
    package = path.relative_to(REPO).with_suffix("").parts[:-1]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            names |= {f"{module}.{a.name}" for a in node.names} if module == "meshtrace" else {module}
    parts = (n.split(".") for n in names)
    return {p[1] for p in parts if len(p) > 1 and p[0] == "meshtrace" and not p[1].startswith("__")}


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        folder = _folder(path)
        graph[folder] |= _imported_folders(path) - {folder}
    return {k: v for k, v in graph.items() if v}


def documented_graph() -> dict[str, set[str]]:
    """The list under "Imports between folders" in docs/architecture.md: one line per folder,
    "- `sidecar` imports `aio`, `cel`, ...: why" (the names end at the colon)."""
    text = (REPO / "docs" / "architecture.md").read_text()
    section = text.split("### Imports between folders", 1)[1].split("\n#", 1)[0]
    graph = {}
    for line in section.splitlines():
        m = re.match(r"- `([\w]+)` imports (.+)$", line)
        if m:
            graph[m.group(1)] = set(re.findall(r"`(\w+)`", m.group(2).split(":", 1)[0]))
    return graph


def test_architecture_md_lists_every_import_between_folders() -> None:
    assert documented_graph() == import_graph()
