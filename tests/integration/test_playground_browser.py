"""The playground page in headless chromium against the real app (SmolLM2 on a vLLM CPU engine).

Shares the session's app (tests/integration/conftest.py). What it adds over the fake-server browser
tests: the page works with serve_app's real stream, and pressing Stop frees the engine.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.browser.support import MS_FIGURE, browser, open_page, requires_browser  # noqa: F401  (browser: shared fixture)

pytestmark = [pytest.mark.integration, pytest.mark.browser, requires_browser]

# A CPU engine on a 2-core machine: generous for the first answer, which may also warm the engine up.
ANSWER_TIMEOUT_MS = 120_000
ENGINE_IDLE_TIMEOUT_S = 10.0


@pytest.fixture
def page(browser: Any, serve_app_url: str, served_model_name: str) -> Iterator[Any]:
    from playwright.sync_api import expect

    with open_page(browser) as page:
        page.goto(f"{serve_app_url}/playground")
        expect(page.locator("#model")).to_have_attribute("data-loaded", "1", timeout=30_000)
        expect(page.locator("#model")).to_have_value(served_model_name)
        yield page


def _send(page: Any, prompt: str, *, max_tokens: int) -> Any:
    num_before = page.locator('[data-testid="assistant-message"]').count()
    page.locator("#temperature").fill("0")
    page.fill("#max-tokens", str(max_tokens))
    page.fill("#prompt", prompt)
    page.click("#send")
    answer = page.locator('[data-testid="assistant-message"]').nth(num_before)
    answer.wait_for()
    return answer


def _wait_for(read: Callable[[], int], accept: Callable[[int], bool], timeout_s: float) -> int:
    """Polls `read()` until `accept(value)`; returns the last value read either way."""
    deadline = time.monotonic() + timeout_s
    value = read()
    while not accept(value) and time.monotonic() < deadline:
        time.sleep(0.1)
        value = read()
    return value


def test_playground_answers_with_live_figures(page: Any) -> None:
    from playwright.sync_api import expect

    answer = _send(page, "What is the capital of France?", max_tokens=64)
    expect(answer.locator(".content")).to_contain_text("Paris", timeout=ANSWER_TIMEOUT_MS)
    expect(answer).to_have_attribute("data-state", "done", timeout=ANSWER_TIMEOUT_MS)
    expect(answer.locator(".ttft .value")).to_have_text(MS_FIGURE)
    assert float(answer.get_attribute("data-ttft-ms")) > 0
    assert int(answer.get_attribute("data-out-tokens")) > 0
    # serve_app's usage chunk carries per-stage timings; the page shows every key it sends.
    assert answer.locator(".timing").count() > 0


def test_playground_stop_frees_the_engine(page: Any, engine_running_requests: Callable[[], int]) -> None:
    from playwright.sync_api import expect

    assert _wait_for(engine_running_requests, lambda n: n == 0, ENGINE_IDLE_TIMEOUT_S) == 0, "engine busy before test"
    answer = _send(page, "Write a long story about a dragon.", max_tokens=1000)
    expect(answer.locator(".ttft .value")).to_have_text(MS_FIGURE, timeout=ANSWER_TIMEOUT_MS)
    # Mid-generation: text is arriving and the engine holds the request.
    page.wait_for_function(
        "el => el.querySelector('.content').textContent.length > 40", arg=answer.element_handle(),
        timeout=ANSWER_TIMEOUT_MS,
    )
    num_running = _wait_for(engine_running_requests, lambda n: n >= 1, ENGINE_IDLE_TIMEOUT_S)
    state = answer.get_attribute("data-state")
    if state != "streaming":  # the story is 1000 tokens (about a minute here): say what ended it early
        errors = answer.locator(".error")
        shown = errors.first.text_content() if errors.count() else ""
        pytest.fail(f"the answer left 'streaming' before Stop could be pressed: state {state!r}, error shown {shown!r}")
    assert num_running >= 1

    page.click("#stop")
    expect(answer).to_have_attribute("data-state", "stopped")
    expect(page.locator("#send")).to_be_enabled()
    num_left = _wait_for(engine_running_requests, lambda n: n == 0, ENGINE_IDLE_TIMEOUT_S)
    assert num_left == 0, f"{num_left} request(s) still in the engine {ENGINE_IDLE_TIMEOUT_S} s after Stop"
