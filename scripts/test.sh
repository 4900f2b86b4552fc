#!/usr/bin/env bash
# Install everything and run the test suite (unit + integration with real Ray Serve and vLLM on CPU).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh tests/unit -q`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
if [ -f scripts/install_browser.sh ]; then VIRTUAL_ENV="$PWD/.venv" PYTHON="$PWD/.venv/bin/python" bash scripts/install_browser.sh; fi
if [ -f scripts/install_compress.sh ]; then bash scripts/install_compress.sh; fi
.venv/bin/serve-app models prepare --model default >/dev/null
.venv/bin/serve-app models prepare --model tiny >/dev/null
# The machine's used-memory peak over the whole run is printed last (`memory peak: N.N GB`).
exec bash scripts/memory_peak.sh .venv/bin/python -m pytest "${@:-tests}"
