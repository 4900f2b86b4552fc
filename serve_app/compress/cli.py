"""`serve-app compress` and `serve-app evaluate`.

`compress` validates its arguments here, then runs in .venv-compress: called from any other environment
it re-executes `<venv>/bin/python -m serve_app.compress compress ...` there. `evaluate` runs in the
serving venv (vLLM).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from pydantic import ValidationError

from serve_app.compress.spec import METHODS, CompressSpec

REPO_ROOT = Path(__file__).resolve().parents[2]  # the checkout, when serve_app runs from one
COMPRESS_PYTHON_ENV = "SERVE_APP_COMPRESS_PYTHON"
DEFAULT_RESULTS_DIR = Path("results") / "compression"  # relative to where the command runs
# --model/--base names that mean the checkpoints `serve-app serve` builds (serve_app/models.py).
NAMED_MODELS = ("default", "tiny")


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    """Registers `compress` and `evaluate` on the `serve-app` argparse subparsers."""
    compress = subparsers.add_parser(
        "compress",
        help="quantize, prune or factorize a checkpoint (runs in .venv-compress)",
        description="Compress a Hugging Face checkpoint into one vLLM loads. Runs in .venv-compress "
        "(create it with scripts/install_compress.sh).",
    )
    compress.add_argument("--model", required=True,
                          help="checkpoint directory to compress, or `default` (SmolLM2-135M-Instruct) / `tiny`")
    compress.add_argument("--method", required=True, choices=METHODS)
    compress.add_argument("--out", required=True, help="output checkpoint directory (replaced if present)")
    compress.add_argument("--sparsity", type=float, help="pruning: fraction of weights zeroed (default 0.5)")
    compress.add_argument("--structure", choices=["unstructured", "2:4"], default="unstructured")
    group = compress.add_mutually_exclusive_group()
    group.add_argument("--rank", type=int, help="svd: rank kept in every factorized layer")
    group.add_argument("--energy", type=float, help="svd: fraction of singular-value energy kept (e.g. 0.9)")
    compress.add_argument("--activation-aware", action="store_true", help="svd: scale by mean |input| per channel")
    compress.add_argument("--svd-targets", default=None, help="svd: regex on linear layer names")
    compress.add_argument("--group-size", type=int, default=None, help="w4a16: quantization group size (default 64)")
    compress.add_argument("--calibration", help="text file, paragraphs separated by blank lines "
                          "(default: serve_app/data/calibration.txt)")
    compress.add_argument("--smoothing-strength", type=float, default=None,
                          help="w8a8: SmoothQuant migration strength, 0-1 (default 0.5)")
    compress.add_argument("--calibration-format", choices=["chat", "text"], default=None,
                          help="chat: paragraphs wrapped in the model's chat template as assistant replies, like "
                          "served requests (default); text: plain paragraphs")
    compress.add_argument("--num-samples", type=int, default=None, help="calibration windows (default 32)")
    compress.add_argument("--max-seq-len", type=int, default=None, help="tokens per calibration window (default 256)")
    compress.add_argument("--compress-python", default=None,
                          help=f"python of the compression venv (default: ${COMPRESS_PYTHON_ENV}, else "
                               ".venv-compress in the current directory, else in the serve_app checkout)")
    compress.set_defaults(func=run_compress)

    evaluate = subparsers.add_parser(
        "evaluate",
        help="compare compressed checkpoints with their base through vLLM",
        description="Perplexity on held-out text, size on disk, greedy agreement with the base, and "
        "tokens/s + TTFT through vLLM at 1 and 16 concurrent requests. Writes Markdown, JSON and a PNG.",
    )
    evaluate.add_argument("--base", required=True, help="uncompressed checkpoint: PATH, `default`, or either with @DTYPE")
    evaluate.add_argument("--models", nargs="+", default=[],
                          help="compressed checkpoints; PATH@bfloat16 (or @float32) overrides the dtype it is served "
                          "with, and the base can appear again that way")
    evaluate.add_argument("--out", default=str(DEFAULT_RESULTS_DIR), help="report directory")
    evaluate.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    evaluate.add_argument("--max-tokens", type=int, default=64, help="output tokens per speed request")
    evaluate.add_argument("--heldout", help="held-out text file (default: serve_app/data/heldout.txt)")
    evaluate.add_argument("--ppl-window", type=int, default=512, help="tokens per perplexity window")
    evaluate.add_argument("--timeout-s", type=float, default=900.0, help="per-model evaluation limit")
    evaluate.add_argument("--reuse", action="store_true",
                          help="reuse per-model results already in OUT/raw/ (add models without re-measuring)")
    evaluate.set_defaults(func=run_evaluate)


def spec_from_args(args: argparse.Namespace) -> CompressSpec:
    """Builds the validated spec; unset options fall back to the spec's defaults."""
    fields = {
        "model": args.model,
        "method": args.method,
        "out": args.out,
        "sparsity": args.sparsity,
        "structure": args.structure,
        "rank": args.rank,
        "energy": args.energy,
        "activation_aware": args.activation_aware,
        "svd_targets": args.svd_targets,
        "group_size": args.group_size,
        "calibration": args.calibration,
        "calibration_format": args.calibration_format,
        "smoothing_strength": args.smoothing_strength,
        "num_samples": args.num_samples,
        "max_seq_len": args.max_seq_len,
    }
    optional = ("svd_targets", "group_size", "num_samples", "max_seq_len", "calibration_format", "smoothing_strength")
    return CompressSpec(**{k: v for k, v in fields.items() if not (k in optional and v is None)})


def spec_to_argv(spec: CompressSpec) -> list[str]:
    """The `compress ...` arguments that rebuild `spec` (for re-running it in the compression venv)."""
    argv = ["compress", "--model", spec.model, "--method", spec.method, "--out", spec.out]
    if spec.sparsity is not None:
        argv += ["--sparsity", repr(spec.sparsity), "--structure", spec.structure]
    if spec.rank is not None:
        argv += ["--rank", str(spec.rank)]
    if spec.energy is not None:
        argv += ["--energy", repr(spec.energy)]
    if spec.activation_aware:
        argv.append("--activation-aware")
    if spec.calibration is not None:
        argv += ["--calibration", spec.calibration]
    if spec.method == "w8a8":
        argv += ["--smoothing-strength", repr(spec.smoothing_strength)]
    argv += ["--calibration-format", spec.calibration_format, "--svd-targets", spec.svd_targets,
             "--group-size", str(spec.group_size), "--num-samples", str(spec.num_samples),
             "--max-seq-len", str(spec.max_seq_len)]
    return argv


def _validation_message(error: ValidationError) -> str:
    return "; ".join(e["msg"].removeprefix("Value error, ") for e in error.errors())


def resolve_named_model(name: str) -> str:
    """`default`/`tiny` -> the local checkpoint `serve-app serve` uses (built offline on first use)."""
    from serve_app.config import ModelConfig
    from serve_app.platform.models import resolve_model_path

    return resolve_model_path(ModelConfig(source=name))


def in_compress_env() -> bool:
    return importlib.util.find_spec("llmcompressor") is not None


def run_compress(args: argparse.Namespace) -> int:
    try:
        spec = spec_from_args(args)
    except ValidationError as error:
        print(f"serve-app compress: error: {_validation_message(error)}", file=sys.stderr)
        return 2
    if spec.model in NAMED_MODELS:
        if in_compress_env():
            print(f"serve-app compress: error: --model {spec.model} is resolved by the serving venv; pass a path here",
                  file=sys.stderr)
            return 2
        spec = spec.model_copy(update={"model": resolve_named_model(spec.model)})
    if not Path(spec.model).is_dir():
        print(f"serve-app compress: error: --model {spec.model} is not a directory", file=sys.stderr)
        return 2
    if in_compress_env():
        from serve_app.compress import runner

        meta = runner.run(spec)
        print(f"wrote {spec.out} ({spec.method}, {meta['compress_s']} s); serve with dtype={meta['serve_dtype']}")
        return 0
    python = find_compress_python(args.compress_python)
    if python is None:
        print(
            "serve-app compress: error: no compression venv found (looked at --compress-python, "
            f"${COMPRESS_PYTHON_ENV}, ./.venv-compress and {REPO_ROOT / '.venv-compress'}).\n"
            "llm-compressor conflicts with the serving install, so it lives in its own venv. Create it with "
            "scripts/install_compress.sh from the serve_app repository, or pass --compress-python.",
            file=sys.stderr,
        )
        return 2
    argv = [str(python), "-m", "serve_app.compress", *spec_to_argv(spec)]
    print("running in the compression venv: " + " ".join(argv), file=sys.stderr)
    return subprocess.call(argv)


def find_compress_python(explicit: str | None, environ=os.environ, cwd: Path | None = None) -> Path | None:
    """The compression venv's python: the one given, else $SERVE_APP_COMPRESS_PYTHON, else `.venv-compress` in
    the current directory, else in the checkout serve_app runs from (an installed wheel has none). A given path
    that does not exist is an error (None), not a reason to look elsewhere."""
    if explicit or environ.get(COMPRESS_PYTHON_ENV):
        path = Path(explicit or environ[COMPRESS_PYTHON_ENV])
        return path if path.exists() else None
    for root in (cwd or Path.cwd(), REPO_ROOT):
        candidate = root / ".venv-compress" / "bin" / "python"
        if candidate.exists():
            return candidate
    return None


def run_evaluate(args: argparse.Namespace) -> int:
    from serve_app.compress import evaluate

    def resolve(arg: str) -> str:
        path, dtype = evaluate.split_dtype(arg)
        return resolve_named_model(path) + (f"@{dtype}" if dtype else "") if path in NAMED_MODELS else arg

    try:
        args.base, args.models = resolve(args.base), [resolve(m) for m in args.models]
    except ValueError as error:  # a bad @DTYPE
        print(f"serve-app evaluate: error: {error}", file=sys.stderr)
        return 2
    return evaluate.main(args)
