#!/usr/bin/env bash
# On a user's CUDA machine: install the gpu extra (official vllm) into .venv-gpu and run tests/gpu.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-gpu EXTRA=gpu bash scripts/install.sh
.venv-gpu/bin/serve-app models prepare --model default >/dev/null
exec .venv-gpu/bin/python -m pytest tests/gpu -v "$@"
