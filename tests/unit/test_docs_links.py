"""Every link between README.md and the docs lands: a relative path exists, and a `#anchor` names a heading of the
document it points into (GitHub's anchors: lower case, punctuation dropped, spaces to hyphens, -1, -2 for repeats).
Moving a section from one document to the other must move the links to it too."""

import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

from readme_tables import DOCUMENTS  # noqa: E402 - README.md and docs/*.md, the documents whose tables are checked

LINK = re.compile(r"\]\((?P<target>[^)\s#]*)(?:#(?P<anchor>[^)\s]+))?\)")
FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)


def anchors(text: str) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown text (headings inside code fences are not headings)."""
    found, seen = set(), {}
    for line in FENCE.sub("", text).splitlines():
        if heading := re.match(r"#{1,6} (.*)", line):
            slug = re.sub(r"[^\w\- ]", "", heading[1].strip().lower()).replace(" ", "-")
            seen[slug] = seen.get(slug, -1) + 1
            found.add(slug if not seen[slug] else f"{slug}-{seen[slug]}")
    return found


def test_anchors_follow_github_rules():
    text = "# Speculative decoding: `engine.speculation.mode: auto`\n```\n# not a heading\n```\n## Tests\n## Tests\n"
    assert anchors(text) == {"speculative-decoding-enginespeculationmode-auto", "tests", "tests-1"}


@pytest.mark.parametrize("document", DOCUMENTS, ids=[d.name for d in DOCUMENTS])
def test_every_relative_link_and_anchor_lands(document):
    broken = []
    for link in LINK.finditer(FENCE.sub("", document.read_text())):
        target, anchor = link["target"], link["anchor"]
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: not checked here (no network)
        path = (document.parent / target).resolve() if target else document
        if not path.exists():
            broken.append(link[0])
        elif anchor and (path.suffix != ".md" or anchor not in anchors(path.read_text())):
            broken.append(link[0])
    assert not broken, f"{document.name}: links that do not land: {broken}"
