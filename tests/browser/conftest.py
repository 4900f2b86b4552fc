from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.fake_openai import FakeOpenAIServer
from tests.browser.support import launch_chromium, missing_browser_reason


# Module scope: one sync Playwright at a time per thread, and other test folders may start their own.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if (reason := missing_browser_reason()) is not None:
        pytest.skip(reason)
    with launch_chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def fake_server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        yield server
