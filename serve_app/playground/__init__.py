"""The browser playground: one self-contained HTML page (inline CSS and JS, nothing fetched from the
internet) that talks to the ingress through the public OpenAI API.

The ingress serves `playground_html()` at `GET /` and `GET /playground` when `playground_enabled` is
set. The page finds the API next to itself, so it also works under a route prefix.
"""

from __future__ import annotations

from importlib import resources

PAGE_FILE_NAME = "index.html"


def playground_html() -> str:
    """The page's HTML, read from the installed package data (`playground/*.html`)."""
    return resources.files(__package__).joinpath(PAGE_FILE_NAME).read_text(encoding="utf-8")
