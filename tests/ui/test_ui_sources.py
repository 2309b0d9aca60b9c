"""The UI's sources as files (no browser): every module is type-checked by `tsc` in `make lint`
(tsconfig.json), and opts in with `// @ts-check` on its first line so editors check it too."""

from __future__ import annotations

from pathlib import Path

UI_DIR = Path(__file__).resolve().parents[2] / "meshtrace" / "query" / "ui"


def test_every_ui_module_starts_with_ts_check() -> None:
    modules = sorted(UI_DIR.glob("*.js"))
    assert modules, f"no .js files in {UI_DIR}"
    unchecked = [
        p.name for p in modules if p.read_text(encoding="utf-8").split("\n", 1)[0].strip() != "// @ts-check"
    ]
    assert not unchecked, f"first line must be // @ts-check: {', '.join(unchecked)}"
