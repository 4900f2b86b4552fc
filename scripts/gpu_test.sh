#!/usr/bin/env bash
# On a user's CUDA machine: install the gpu extra (official vllm) into .venv-gpu and run the end-to-end suite
# (tests/integration) on CUDA: the same tests as on CPU, parametrized by device (tests/devices.py). Add
# `--device cpu` to run both; extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-gpu EXTRA=gpu bash scripts/install.sh
.venv-gpu/bin/serve-app models prepare --model default >/dev/null
.venv-gpu/bin/serve-app models prepare --model tiny >/dev/null
exec .venv-gpu/bin/python -m pytest tests/integration --device cuda -v "$@"
