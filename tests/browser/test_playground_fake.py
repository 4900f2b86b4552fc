"""The playground page in headless chromium against a fake OpenAI server (fast: no model, no Ray).

The fake serves the real page and streams scripted SSE split across reads (see fake_openai.py).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.fake_openai import DEFAULT_REPLY, FakeOpenAIServer
from tests.browser.support import MS_FIGURE, open_page, requires_browser

pytestmark = [pytest.mark.browser, requires_browser]

TIMEOUT_MS = 10_000


def _expect() -> Any:
    from playwright.sync_api import expect

    return expect


@pytest.fixture
def server(fake_server: FakeOpenAIServer) -> FakeOpenAIServer:
    fake_server.reset()
    fake_server.api_key = None
    fake_server.send_timings = True
    return fake_server


@pytest.fixture
def page(browser: Any, server: FakeOpenAIServer) -> Iterator[Any]:
    with open_page(browser) as page:
        outside: list[str] = []
        page.on("request", lambda r: None if r.url.startswith(server.url) else outside.append(r.url))
        page.goto(f"{server.url}/playground")
        _expect()(page.locator("#model")).to_have_attribute("data-loaded", str(len(server.models)))
        yield page
        assert not outside, f"the page fetched from elsewhere: {outside}"


def _send(page: Any, prompt: str) -> Any:
    """Sends `prompt` and returns the locator of the answer it creates."""
    num_before = page.locator('[data-testid="assistant-message"]').count()
    page.fill("#prompt", prompt)
    page.click("#send")
    answer = page.locator('[data-testid="assistant-message"]').nth(num_before)
    answer.wait_for(timeout=TIMEOUT_MS)
    return answer


def _wait_until(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)


def test_models_are_listed(page: Any, server: FakeOpenAIServer) -> None:
    options = page.locator("#model option").all_text_contents()
    assert options == list(server.models)


def test_page_is_served_at_root_too(browser: Any, server: FakeOpenAIServer) -> None:
    with open_page(browser) as page:
        page.goto(f"{server.url}/")
        _expect()(page.locator("#model")).to_have_attribute("data-loaded", str(len(server.models)))


def test_answer_streams_with_live_figures(page: Any, server: FakeOpenAIServer) -> None:
    expect = _expect()
    page.select_option("#model", "fake-model-b")
    page.fill("#max-tokens", "64")
    page.locator("#temperature").fill("0")
    answer = _send(page, "What is the capital of France?")

    expect(answer.locator(".content")).to_have_text(DEFAULT_REPLY, timeout=TIMEOUT_MS)
    expect(answer).to_have_attribute("data-state", "done", timeout=TIMEOUT_MS)
    assert float(answer.get_attribute("data-ttft-ms")) > 0
    expect(answer.locator(".ttft .value")).to_have_text(MS_FIGURE)
    num_tokens = len(DEFAULT_REPLY.split())
    expect(answer.locator(".out-tokens .value")).to_have_text(str(num_tokens))
    assert float(answer.get_attribute("data-tps")) > 0
    expect(answer.locator(".tps .value")).not_to_have_text("—")
    keys = answer.locator(".timing").evaluate_all("nodes => nodes.map(n => n.dataset.key)")
    assert keys == ["ingress_ms", "tokenize_ms", "queue_ms", "prefill_ms", "decode_ms", "stream_ms"]
    expect(answer.locator('.timing[data-key="prefill_ms"]')).to_contain_text("prefill")
    expect(page.locator("#send")).to_be_enabled()
    expect(page.locator("#stop")).to_be_disabled()

    [request] = server.chat_requests()
    assert request.body["model"] == "fake-model-b"
    assert request.body["stream"] is True
    assert request.body["stream_options"] == {"include_usage": True}
    assert request.body["temperature"] == 0
    assert request.body["max_tokens"] == 64
    assert request.body["messages"] == [{"role": "user", "content": "What is the capital of France?"}]
    assert request.authorization is None


def test_multi_turn_sends_the_transcript(page: Any, server: FakeOpenAIServer) -> None:
    expect = _expect()
    page.fill("#system", "Be brief.")
    page.locator("#system").dispatch_event("change")
    first = _send(page, "What is the capital of France?")
    expect(first).to_have_attribute("data-state", "done", timeout=TIMEOUT_MS)
    page.fill("#prompt", "And of Italy?")
    page.press("#prompt", "Enter")  # Enter sends too
    second = page.locator('[data-testid="assistant-message"]').nth(1)
    expect(second).to_have_attribute("data-state", "done", timeout=TIMEOUT_MS)

    messages = server.chat_requests()[-1].body["messages"]
    assert messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": DEFAULT_REPLY},
        {"role": "user", "content": "And of Italy?"},
    ]
    assert page.locator('[data-testid="user-message"]').count() == 2


def test_stop_aborts_the_request(page: Any, server: FakeOpenAIServer) -> None:
    expect = _expect()
    answer = _send(page, "Write a long story about a dragon.")
    expect(answer.locator(".content")).to_contain_text("dragon", timeout=TIMEOUT_MS)
    expect(answer.locator(".ttft .value")).not_to_have_text("—")
    expect(page.locator("#stop")).to_be_enabled()
    assert server.num_active_streams == 1

    page.click("#stop")
    expect(answer).to_have_attribute("data-state", "stopped", timeout=TIMEOUT_MS)
    expect(page.locator("#send")).to_be_enabled()
    expect(page.locator("#stop")).to_be_disabled()
    # The server notices the closed connection at its next write.
    assert server.disconnected.wait(5), "the fake server never saw the client go away"
    _wait_until(lambda: server.num_active_streams == 0, 5, "the stream to end on the server")
    text = answer.locator(".content").text_content()
    assert 0 < len(text) < 2000
    # The stopped, partial answer stays in the conversation for the next turn.
    follow_up = _send(page, "Thanks!")
    expect(follow_up).to_have_attribute("data-state", "done", timeout=TIMEOUT_MS)
    roles = [m["role"] for m in server.chat_requests()[-1].body["messages"]]
    assert roles == ["user", "assistant", "user"]


def test_error_response_is_shown(page: Any, server: FakeOpenAIServer) -> None:
    expect = _expect()
    answer = _send(page, "Please reject this")
    expect(answer).to_have_attribute("data-state", "error", timeout=TIMEOUT_MS)
    expect(answer.locator('[data-testid="error"]')).to_contain_text("max_tokens is too large for this model.")
    expect(answer.locator('[data-testid="error"]')).to_contain_text("400")
    expect(page.locator("#send")).to_be_enabled()
    # A turn with no answer is dropped from the context sent next time.
    follow_up = _send(page, "What is the capital of France?")
    expect(follow_up).to_have_attribute("data-state", "done", timeout=TIMEOUT_MS)
    assert len(server.chat_requests()[-1].body["messages"]) == 1


def test_error_event_in_stream_is_shown(page: Any, server: FakeOpenAIServer) -> None:
    expect = _expect()
    answer = _send(page, "this one will fail")
    expect(answer).to_have_attribute("data-state", "error", timeout=TIMEOUT_MS)
    expect(answer.locator(".content")).to_have_text("Let me think about")
    expect(answer.locator('[data-testid="error"]')).to_have_text("The engine stopped this request: out of KV cache.")


def test_answer_without_timings_shows_no_timings(page: Any, server: FakeOpenAIServer) -> None:
    expect = _expect()
    server.send_timings = False
    answer = _send(page, "What is the capital of France?")
    expect(answer).to_have_attribute("data-state", "done", timeout=TIMEOUT_MS)
    expect(answer.locator('[data-testid="timings"]')).to_be_hidden()
    expect(answer.locator(".out-tokens .value")).not_to_have_text("—")


def test_api_key_is_stored_and_sent(page: Any, server: FakeOpenAIServer) -> None:
    expect = _expect()
    server.api_key = "sk-test-123"
    page.click("#refresh-models")
    expect(page.locator("#status")).to_contain_text("Invalid or missing API key.")

    page.fill("#api-key", "sk-test-123")
    page.locator("#api-key").dispatch_event("change")  # saving the key reloads the models
    expect(page.locator("#model option")).to_have_count(len(server.models))
    expect(page.locator("#status")).to_have_text("")
    answer = _send(page, "What is the capital of France?")
    expect(answer).to_have_attribute("data-state", "done", timeout=TIMEOUT_MS)
    assert server.chat_requests()[-1].authorization == "Bearer sk-test-123"

    page.reload()  # the key survives a reload (localStorage)
    expect(page.locator("#api-key")).to_have_value("sk-test-123")
    expect(page.locator("#model")).to_have_attribute("data-loaded", str(len(server.models)))


def test_unreachable_server_is_reported(browser: Any, server: FakeOpenAIServer) -> None:
    with open_page(browser) as page:
        page.goto(f"{server.url}/playground")
        page.route("**/v1/models", lambda route: route.abort())
        page.click("#refresh-models")
        _expect()(page.locator("#status")).to_contain_text("Could not list models")


SSE_CASES = [
    # (pieces fed to the parser, events expected)
    (["data: a\n\n"], ["a"]),
    (["da", "ta: {\"x\"", ": 1}\n", "\n"], ['{"x": 1}']),
    (["data: one\r\n\r\ndata: two\r", "\n\r\n"], ["one", "two"]),
    (["data:no-space\n\n: a comment\n\ndata: [DONE]\n\n"], ["no-space", "[DONE]"]),
    (["data: line1\ndata: line2\n\n"], ["line1\nline2"]),
    (["event: error\ndata: {\"error\": {}}\n\n"], ['{"error": {}}']),
    (["data: last-without-blank-line"], ["last-without-blank-line"]),
]


@pytest.fixture(scope="module")
def parser_page(browser: Any, fake_server: FakeOpenAIServer) -> Iterator[Any]:
    with open_page(browser) as page:
        page.goto(f"{fake_server.url}/playground")
        yield page


@pytest.mark.parametrize(("pieces", "expected"), SSE_CASES)
def test_sse_parser(parser_page: Any, pieces: list[str], expected: list[str]) -> None:
    events = parser_page.evaluate(
        """pieces => {
            const events = [];
            const parser = window.playground.createSseParser(data => events.push(data));
            for (const piece of pieces) parser.push(piece);
            parser.end();
            return events;
        }""",
        pieces,
    )
    assert events == expected, json.dumps(pieces)
