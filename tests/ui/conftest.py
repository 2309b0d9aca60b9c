"""Fixtures for the web UI tests: one headless Debian chromium per module, driven by Playwright.
Never `playwright install`: the browser is the distribution's (`.ci/run` installs it)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test here that takes the `browser` fixture needs chromium. Without it they skip on a
    laptop, but in CI (CI set) they run and fail: a missing browser must not pass as green."""
    skip = not CHROMIUM.exists() and not os.environ.get("CI")
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents and "browser" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.browser)
            if skip:
                item.add_marker(pytest.mark.skip(reason=f"needs Debian's chromium at {CHROMIUM}"))


@pytest.fixture(scope="module")
def browser(starts_processes: None) -> Iterator[Any]:
    from playwright.sync_api import expect, sync_playwright

    # CI shares 2 cores with everything else: generous waits, each still bounded.
    expect.set_options(timeout=15_000)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def collector(meshtrace_process: Any, default_collector_args: list[str], tmp_path: Path) -> tuple[str, str]:
    """`meshtrace collector` with no --config, its store in a temporary MESHTRACE_DATA_DIR:
    (query base URL, OTLP/HTTP host:port)."""
    proc = meshtrace_process(default_collector_args, env={"MESHTRACE_DATA_DIR": str(tmp_path / "data")})
    proc.wait_for_listeners("query", "otlp-http", timeout=60)
    return f"http://{proc.address('query')}", proc.address("otlp-http")
