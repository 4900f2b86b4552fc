"""`python -m serve_app.compress {compress,evaluate} ...`: what `serve-app compress` re-executes in .venv-compress."""

from __future__ import annotations

import argparse
import logging
import sys

from serve_app.compress.cli import add_subcommands


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="serve-app")
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
