from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.browser.fake_openai import FakeOpenAIServer
from tests.browser.support import browser  # noqa: F401  (shared fixture)


@pytest.fixture(scope="module")
def fake_server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        yield server
