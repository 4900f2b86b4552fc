"""Compresses the default model with every method, then evaluates them all side by side.

Writes checkpoints under ~/.cache/serve_app/compressed/ and the report to results/compression/
(compression.md, compression.json, compression.png). Needs .venv-compress (scripts/install_compress.sh)
and runs from the serving venv:

    .venv/bin/python benchmarks/compression_all_methods.py              # compress what is missing, evaluate all
    .venv/bin/python benchmarks/compression_all_methods.py --only w8a8 w4a16

On a quiet 2-core machine (AMD EPYC, avx512_bf16): about 6 minutes of compression and 1.5 minutes of evaluation
per model (FP8, emulated on CPU: about 8).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from serve_app.config import ModelConfig
from serve_app.platform.models import resolve_model_path

REPO_ROOT = Path(__file__).resolve().parents[1]
# name -> `serve-app compress` arguments
METHODS = {
    "w8a8": ["--method", "w8a8"],
    "w8a8-sq0.8": ["--method", "w8a8", "--smoothing-strength", "0.8"],
    "w8a8-textcal": ["--method", "w8a8", "--smoothing-strength", "0.8", "--calibration-format", "text"],
    "w4a16": ["--method", "w4a16"],
    "fp8": ["--method", "fp8"],
    "wanda-50": ["--method", "wanda", "--sparsity", "0.5"],
    "sparsegpt-2of4": ["--method", "sparsegpt", "--structure", "2:4"],
    "magnitude-50": ["--method", "magnitude", "--sparsity", "0.5"],
    "magnitude-2of4": ["--method", "magnitude", "--structure", "2:4"],
    "svd-e90": ["--method", "svd", "--energy", "0.9"],
    "svd-r384-aa": ["--method", "svd", "--rank", "384", "--activation-aware"],
}
# Also measured with bf16 activations (the dtype `dtype: auto` picks on CPUs with avx512_bf16/AMX).
ALSO_BF16 = ("w8a8", "w8a8-sq0.8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--checkpoints", default="~/.cache/serve_app/compressed")
    parser.add_argument("--out", default=str(REPO_ROOT / "results" / "compression"))
    parser.add_argument("--recompress", action="store_true", help="rebuild checkpoints that already exist")
    args = parser.parse_args()

    base = resolve_model_path(ModelConfig())
    checkpoints = Path(args.checkpoints).expanduser()
    paths = []
    for name in args.only:
        out = checkpoints / name
        if args.recompress or not (out / "compression.json").exists():
            cmd = [sys.executable, "-m", "serve_app.compress", "compress", "--model", base, "--out", str(out),
                   *METHODS[name]]
            if subprocess.call(cmd) != 0:
                print(f"{name}: compression failed, left out of the evaluation", file=sys.stderr)
                continue
        paths.append(str(out))
        if name in ALSO_BF16:
            paths.append(f"{out}@bfloat16")
    cmd = [sys.executable, "-m", "serve_app.compress", "evaluate", "--base", base, "--models", f"{base}@bfloat16",
           *paths, "--out", args.out]
    return subprocess.call(cmd)


if __name__ == "__main__":
    sys.exit(main())
