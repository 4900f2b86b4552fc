"""Takes docs/playground.png: the playground with a short, realistic conversation.

    python -m tests.browser.screenshot [--url http://127.0.0.1:8000] [--out docs/playground.png] [--dark]

Without --url it runs against the fake OpenAI server (no model needed); with --url, against a running
serve_app (the answers are then the model's own).
"""

from __future__ import annotations

import argparse
from contextlib import ExitStack
from pathlib import Path

from tests.browser.fake_openai import FakeOpenAIServer
from tests.browser.support import launch_chromium, open_page

TURNS = [
    ("What is the capital of France?", "The capital of France is Paris."),
    (
        "Give me three facts about it.",
        "1. Paris is home to the Eiffel Tower, built for the 1889 World's Fair.\n"
        "2. The Louvre is the world's most-visited art museum.\n"
        "3. The Seine splits the city into the Left Bank and the Right Bank.",
    ),
]
STOPPED_PROMPT = "Write a long story about a dragon."
ANSWER_TIMEOUT_MS = 120_000


def take_screenshot(url: str, out: Path, dark: bool = False) -> None:
    with launch_chromium() as browser, open_page(
        browser, viewport={"width": 1280, "height": 900}, color_scheme="dark" if dark else "light"
    ) as page:
        page.goto(f"{url}/playground")
        page.wait_for_selector("#model[data-loaded]:not([data-loaded='0'])")
        page.locator("#temperature").fill("0")
        page.fill("#max-tokens", "256")
        answers = page.locator('[data-testid="assistant-message"]')
        for i, (prompt, _answer) in enumerate(TURNS):
            page.fill("#prompt", prompt)
            page.click("#send")
            answers.nth(i).and_(page.locator('[data-state="done"]')).wait_for(timeout=ANSWER_TIMEOUT_MS)
        page.fill("#prompt", STOPPED_PROMPT)
        page.click("#send")
        stopped = answers.nth(len(TURNS))
        page.wait_for_function(
            "el => el.querySelector('.content').textContent.length > 220", arg=stopped.element_handle(),
            timeout=ANSWER_TIMEOUT_MS,
        )
        page.click("#stop")
        stopped.and_(page.locator('[data-state="stopped"]')).wait_for()
        page.fill("#prompt", "Now make it a haiku.")
        page.locator("#prompt").blur()
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running serve_app; default: a fake server with scripted answers")
    parser.add_argument("--out", type=Path, default=Path("docs/playground.png"))
    parser.add_argument("--dark", action="store_true", help="dark colour scheme")
    args = parser.parse_args()
    with ExitStack() as stack:
        url = args.url
        if url is None:
            fake = FakeOpenAIServer(
                models=("SmolLM2-135M-Instruct",), replies={p: a for p, a in TURNS},
                token_delay_s=0.022, long_token_delay_s=0.022, first_token_delay_s=0.045,
            )
            url = stack.enter_context(fake).url
        take_screenshot(url.rstrip("/"), args.out, args.dark)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
