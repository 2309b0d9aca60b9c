"""How many examples each hypothesis test tries. `make test` runs every fuzz test in full;
`make unit` (MESHTRACE_QUICK_FUZZ=1) runs each with a fifth of its examples, at least 20, so the
quick loop stays quick and the full count still runs before anything lands."""

from __future__ import annotations

import os

QUICK = os.environ.get("MESHTRACE_QUICK_FUZZ") == "1"


def examples(full: int) -> int:
    return max(min(full, 20), full // 5) if QUICK else full
