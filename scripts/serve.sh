#!/usr/bin/env bash
# Install everything (first run) and serve the default model on http://127.0.0.1:8000 (Ctrl-C stops).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/serve-app serve "$@"
