"""`meshtrace lint`: istioctl-analyze-like checks plus the Collector's own config checks."""

from __future__ import annotations

import sys

from meshtrace.config.loader import Bundle
from meshtrace.config.model import Finding

_ORDER = {"error": 0, "warning": 1, "info": 2}


def lint(bundle: Bundle) -> list[Finding]:
    findings = list(bundle.problems)
    return sorted(findings, key=lambda f: (_ORDER[f.severity], f.file, f.document or 0, f.code))


def render_text(findings: list[Finding]) -> None:
    for f in findings:
        print(
            f"{f.severity.upper()} [{f.code}] {f.resource} ({f.file}) {f.path}: {f.message}", file=sys.stdout
        )
