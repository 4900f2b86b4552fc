"""The page as a file: packaged, self-contained, and carrying the hooks the browser tests use."""

from __future__ import annotations

import re

from serve_app.playground import playground_html


def test_page_is_packaged_html() -> None:
    html = playground_html()
    assert html.lstrip().lower().startswith("<!doctype html>")
    assert "</html>" in html


def test_page_fetches_nothing_from_the_internet() -> None:
    html = playground_html()
    # No external scripts, styles, fonts or images: every src/href is local or an in-page anchor.
    for url in re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)""", html):
        assert not re.match(r"^(https?:)?//", url), url
    assert "@import" not in html
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", html)


def test_page_has_test_hooks() -> None:
    html = playground_html()
    for element_id in ("prompt", "send", "stop", "transcript", "model", "temperature", "max-tokens", "api-key"):
        assert f'id="{element_id}"' in html, element_id
    for stat in ("ttft", "tps", "out-tokens"):
        assert stat in html, stat
