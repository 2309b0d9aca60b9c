"""One asyncio event loop per process, uvloop when installed (docs/architecture.md, rules of the house)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a pinned dependency; stay usable without it
        return asyncio.run(main)
    return uvloop.run(main)
