"""The docs are self-contained: no tracked file cites the steering documents users never get, every
relative link in README.md and docs/*.md reaches a file, and every `upstream-behaviour.md §N` a
file cites is a section of that page."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
UPSTREAM = ROOT / "docs" / "upstream-behaviour.md"

_STEERING = re.compile(r"\b(?:DESIGN|REFERENCE)\.md\b")
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_SECTION_CITE = re.compile(r"upstream-behaviour\.md\)?,? (§\d+b?)(?:,? (§\d+b?))*")
_SECTION_HEAD = re.compile(r"^## (§\d+b?) ", re.MULTILINE)


def tracked_files() -> list[Path]:
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=30
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [ROOT / name for name in out.decode().split("\0") if name]


@pytest.mark.e2e
def test_no_tracked_file_cites_the_steering_documents() -> None:
    offenders = []
    for path in tracked_files():
        if not path.is_file():  # deleted in the work tree, not yet committed
            continue
        text = path.read_bytes().decode("utf-8", errors="replace")
        offenders += [
            f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
            for n, line in enumerate(text.splitlines(), 1)
            if _STEERING.search(line)
        ]
    assert not offenders, "cite docs/ instead:\n" + "\n".join(offenders)


def relative_links(doc: Path) -> list[str]:
    targets = []
    for target in _LINK.findall(doc.read_text()):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL (http:, mailto:) or an anchor on the same page
        targets.append(target.split("#", 1)[0])
    return targets


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_relative_links_reach_a_file(doc: Path) -> None:
    missing = [t for t in relative_links(doc) if not (doc.parent / t).exists()]
    assert not missing, f"{doc.name} links to missing files: {missing}"


def test_relative_link_check_sees_a_broken_link(tmp_path: Path) -> None:
    # The check above must be able to fail: a page with one good and one broken link.
    (tmp_path / "here.md").write_text("x")
    page = tmp_path / "page.md"
    page.write_text("[a](here.md#top) [b](gone.md) [c](https://example.org/x.md) [d](#local)")
    assert [t for t in relative_links(page) if not (tmp_path / t).exists()] == ["gone.md"]


@pytest.mark.e2e
def test_cited_upstream_sections_exist() -> None:
    sections = set(_SECTION_HEAD.findall(UPSTREAM.read_text()))
    assert {"§1", "§2", "§2b", "§3", "§4", "§5", "§6"} <= sections
    unknown = []
    for path in tracked_files():
        if path.suffix not in {".py", ".md", ".yaml", ".yml"} or not path.is_file():
            continue
        for match in _SECTION_CITE.finditer(path.read_text(errors="replace")):
            unknown += [f"{path.relative_to(ROOT)}: {s}" for s in match.groups() if s and s not in sections]
    assert not unknown, unknown
