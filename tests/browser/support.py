"""Launching Debian's chromium through Playwright, shared by the browser tests.

Playwright's own browser download is never used: it cannot work without internet access, and the
machine's chromium (scripts/install_browser.sh) is what CI has. The flags keep chromium from reaching
for the network at start-up; Playwright gives every launch a fresh, empty profile directory.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

CHROMIUM_PATH = "/usr/bin/chromium"
# Playwright adds --headless itself (headless=True) and owns --user-data-dir (a new temp dir per launch).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# How the page writes a duration: "7.4 ms", "41 ms", "1.25 s".
MS_FIGURE = re.compile(r"^\d+(\.\d+)? (ms|s)$")
# Generous: the real app answers on a CPU, and CI machines are slow.
DEFAULT_TIMEOUT_MS = 15_000


def missing_browser_reason() -> str | None:
    """Why browser tests cannot run here, or None when they can."""
    if not os.path.exists(CHROMIUM_PATH):
        return f"{CHROMIUM_PATH} not found (run scripts/install_browser.sh)"
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is not installed (run scripts/install_browser.sh)"
    return None


requires_browser = pytest.mark.skipif(missing_browser_reason() is not None, reason=missing_browser_reason() or "")


@contextmanager
def launch_chromium() -> Iterator[Any]:
    """A headless chromium `Browser` (Playwright sync API), closed on exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM_PATH, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def open_page(browser: Any, **context_options: Any) -> Iterator[Any]:
    """A page in a new browser context (own localStorage), failing the test on any page-side error."""
    context = browser.new_context(**context_options)
    context.set_default_timeout(DEFAULT_TIMEOUT_MS)
    page = context.new_page()
    page_errors: list[str] = []
    page.on("pageerror", lambda error: page_errors.append(str(error)))
    try:
        yield page
    finally:
        context.close()
    assert not page_errors, f"JavaScript errors on the page: {page_errors}"


# Module scope: one sync Playwright at a time per thread, and other test folders may start their own.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless Debian chromium for one test module (skips when it or playwright is missing)."""
    if (reason := missing_browser_reason()) is not None:
        pytest.skip(reason)
    with launch_chromium() as launched:
        yield launched
