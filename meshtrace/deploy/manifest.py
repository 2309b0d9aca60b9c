"""Rendered documents and how they are written: YAML with comments that say what changed and why.

Output must be byte-identical for the same input (reviewable diffs, GitOps), so nothing here
reads a clock or a random source, keys keep their insertion order and multi-line strings (an
embedded collector config, a dashboard JSON) are written as literal `|` blocks.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from typing import Any

import yaml

WIDTH = 100


@dataclass
class Manifest:
    """One YAML document and the notes written above it (each one change and its reason)."""

    data: dict[str, Any]
    notes: list[str] = field(default_factory=list)


class _Dumper(yaml.SafeDumper):
    """Block style everywhere; lists indented under their key, as kubectl and Helm write them."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)

    def ignore_aliases(self, data: Any) -> bool:
        return True  # no &id001 anchors: every manifest reads on its own


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def dump(data: Any) -> str:
    """YAML text of `data`; long strings stay on one line (PromQL is not folded)."""
    return yaml.dump(
        data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True, width=4096
    )


def comment(lines: list[str], bullet: str = "") -> str:
    """`# ` lines, each entry wrapped at WIDTH; `bullet` prefixes every entry (e.g. "- ")."""
    out: list[str] = []
    for line in lines:
        if not line:
            out.append("#")
            continue
        out.extend(
            textwrap.wrap(
                line,
                WIDTH - 2,
                initial_indent=f"# {bullet}",
                subsequent_indent="# " + " " * len(bullet),
                break_long_words=False,
                break_on_hyphens=False,
            )
        )
    return "".join(f"{ln}\n" for ln in out)


def commented_yaml(data: Any) -> str:
    """A document as YAML with every line commented out (kept for the reader, not applied)."""
    return "".join(f"#   {ln}\n" if ln else "#\n" for ln in dump(data).splitlines())


def document(manifest: Manifest) -> str:
    return comment(manifest.notes, "- ") + dump(manifest.data)


def file_text(header: list[str], manifests: list[Manifest], footer: str = "") -> str:
    """A file: the header comment, the documents separated by `---`, then `footer` (comments)."""
    parts = [document(m) for m in manifests]
    body = "---\n".join(parts)
    text = comment(header) + ("---\n" + body if body else "")
    return text + footer
