"""README tables from their results files: every table between `<!-- table:NAME -->` and `<!-- /table -->` in
README.md and docs/*.md is rendered by benchmarks/tables.py from the file tables.TABLES names, so a figure
without its file cannot land (tests/unit/test_readme_figures.py fails when a marked table differs from its rendering).

    .venv/bin/python benchmarks/readme_tables.py                  # list the marked tables and whether they match
    .venv/bin/python benchmarks/readme_tables.py side_by_side     # print one table, rendered from its file
    .venv/bin/python benchmarks/readme_tables.py --write          # rewrite every marked table in both documents
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from tables import REPO, TABLES  # benchmarks/, beside this script

README = REPO / "README.md"
DOCUMENTS = (README, *sorted((REPO / "docs").glob("*.md")))  # whose marked tables are rendered from files
MARKED = re.compile(r"<!-- table:(?P<name>[\w-]+) -->\n(?P<body>.*?)\n?<!-- /table -->", re.DOTALL)


def render(name: str, repo: Path = REPO) -> str:
    """The table `name` rendered from its results file (KeyError: no such table; OSError: no file)."""
    path, renderer = TABLES[name]
    return renderer(json.loads((repo / path).read_text())).strip()


def marked_tables(text: str) -> list[tuple[str, str]]:
    """(name, body) of every marked table in `text`, in order."""
    return [(m["name"], m["body"].strip()) for m in MARKED.finditer(text)]


def rewrite(text: str, repo: Path = REPO) -> str:
    """`text` with every marked table replaced by its rendering."""
    return MARKED.sub(lambda m: f"<!-- table:{m['name']} -->\n{render(m['name'], repo)}\n<!-- /table -->", text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", nargs="?", help=f"one of: {', '.join(TABLES)}")
    parser.add_argument("--write", action="store_true", help="rewrite the marked tables in README.md and docs/*.md")
    args = parser.parse_args()
    if args.name:
        print(render(args.name))
        return 0
    stale = 0
    for document in DOCUMENTS:
        text = document.read_text()
        if args.write:
            document.write_text(rewrite(text))
            print(f"{document.relative_to(REPO)}: rewrote {len(marked_tables(text))} marked tables")
            continue
        for name, body in marked_tables(text):
            same = name in TABLES and body == render(name)
            stale += not same
            print(f"{document.relative_to(REPO)} {name}: "
                  f"{'matches ' + TABLES[name][0] if same else 'DIFFERS from its file (or has none)'}")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
