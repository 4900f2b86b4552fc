"""`serve-app evaluate`: base vs compressed checkpoints, side by side in one run (serving venv).

Each model is measured by `eval_worker` in its own process, one after the other, so they share the
same machine conditions as closely as one run allows. Perplexity comes from vLLM's prompt logprobs,
so every format (fp32, compressed-tensors INT8/INT4, pruned, re-multiplied SVD) is scored by the same code.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

from serve_app.compress import metrics, report
from serve_app.compress.prompts import FACT_PROMPTS
from serve_app.compress.spec import SERVING_NOTES
from serve_app.server.engine_dtype import read_cpuinfo


# Activation dtypes a checkpoint can be served with; `PATH@DTYPE` on the command line overrides compression.json's.
SERVE_DTYPES = ("float32", "bfloat16", "float16")


def split_dtype(arg: str) -> tuple[str, str | None]:
    """`"/ckpt@bfloat16"` -> `("/ckpt", "bfloat16")`; a plain path -> `(path, None)`."""
    path, sep, dtype = arg.rpartition("@")
    if not sep:
        return arg, None
    if dtype not in SERVE_DTYPES:
        raise ValueError(f"{arg!r}: the dtype after '@' must be one of {', '.join(SERVE_DTYPES)}")
    return path, dtype


def cpu_summary() -> str:
    """CPU model and the instruction sets that decide vLLM CPU speed (bf16, int8 VNNI, AMX)."""
    model, flags = read_cpuinfo()
    wanted = ("avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
    present = [f for f in wanted if f in flags]
    return f"{model or platform.machine()} ({', '.join(present) or 'no AVX-512'})"


def describe(arg: str) -> dict:
    """Name, method label, path, size, serving dtype and note of a checkpoint given as PATH or PATH@DTYPE."""
    path, dtype_override = split_dtype(arg)
    meta_path = Path(path) / "compression.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    spec = meta.get("spec", {})
    method = spec.get("method", "base")
    if method == "w8a8":
        # Specs written before these options existed used 0.8 and plain-text calibration.
        method += f" sq {spec.get('smoothing_strength', 0.8):g}, {spec.get('calibration_format', 'text')} calibration"
    if spec.get("sparsity") is not None:
        method += f" {spec['structure']} {spec['sparsity']:g}"
    if spec.get("rank") is not None:
        method += f" rank {spec['rank']}"
    if spec.get("energy") is not None:
        method += f" energy {spec['energy']:g}"
    if spec.get("activation_aware"):
        method += " act-aware"
    if "mean_rank" in meta:
        method += f" (mean rank {meta['mean_rank']})"
    # Today's wording for the method (a checkpoint's compression.json keeps the note of the day it was made).
    note = SERVING_NOTES.get(spec.get("method"), meta.get("serving_note", "uncompressed reference"))
    if "factor_params" in meta:
        note += (f" Factorized layers: {meta['factor_params'] / 1e6:.1f}M factor params vs "
                 f"{meta['dense_params'] / 1e6:.1f}M dense.")
    name = Path(path.rstrip("/")).name
    return {
        "name": f"{name}@{dtype_override}" if dtype_override else name,
        "method": method,
        "path": path,
        "size_mb": metrics.checkpoint_size_mb(path),
        "dtype": dtype_override or meta.get("serve_dtype", "float32"),
        "note": note,
    }


def _measure(entry: dict, args: argparse.Namespace, raw_dir: Path) -> dict:
    out = raw_dir / f"{entry['name']}.json"
    if args.reuse and out.exists():  # errors too: delete raw/<name>.json to measure a model again
        reused = json.loads(out.read_text())
        questions = [a["question"] for a in reused.get("answers", [])]
        if "error" in reused or questions == [p.question for p in FACT_PROMPTS]:
            print(f"== {entry['name']}: reusing {out}", file=sys.stderr)
            return reused
        print(f"== {entry['name']}: {out} has another prompt set; measuring again", file=sys.stderr)
    out.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "serve_app.compress.eval_worker", "--model", entry["path"], "--dtype", entry["dtype"],
           "--out", str(out), "--ppl-window", str(args.ppl_window), "--max-tokens", str(args.max_tokens),
           "--concurrency", *map(str, args.concurrency)]
    if args.heldout:
        cmd += ["--heldout", args.heldout]
    env = dict(os.environ)
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    env.setdefault("VLLM_TARGET_DEVICE", "cpu")
    print(f"== {entry['name']} ({entry['method']}, dtype {entry['dtype']})", file=sys.stderr, flush=True)
    # Own session: on timeout the whole group goes, vLLM's engine-core subprocess included (an orphaned engine
    # would keep computing and slow every model measured after it).
    worker = subprocess.Popen(cmd, env=env, start_new_session=True)
    try:
        worker.wait(timeout=args.timeout_s)
    except BaseException as stop:  # timeout, Ctrl-C (the worker's own session does not get it) or anything else
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        if not isinstance(stop, subprocess.TimeoutExpired):
            raise
        # The worker saves after every stage: keep what it finished and say what it did not.
        partial = json.loads(out.read_text()) if out.exists() else {}
        if "perplexity" not in partial:
            return {"error": f"evaluation exceeded {args.timeout_s:.0f} s"}
        partial["incomplete"] = f"stopped at the {args.timeout_s:.0f}-s limit"
        out.write_text(json.dumps(partial, indent=2))
        return partial
    if not out.exists():
        return {"error": "worker wrote no result"}
    return json.loads(out.read_text())


def main(args: argparse.Namespace) -> int:
    entries = [describe(args.base)] + [describe(p) for p in args.models]
    entries[0]["method"] = "base"
    raw = {}
    started = time.time()
    # Per-model results are kept, so `--reuse` can add models to a report without re-measuring the others.
    raw_dir = Path(args.out) / "raw"
    raw_dir.mkdir(parents=True, exist_ok=True)
    for entry in entries:
        entry["result"] = _measure(entry, args, raw_dir)
        raw[entry["name"]] = {k: v for k, v in entry["result"].items() if k != "traceback"}
        if "error" in entry["result"]:
            print(f"   {entry['name']}: {entry['result']['error']}", file=sys.stderr)
    rows = report.build_rows(entries[0], entries[1:])
    header = [
        "# Compression: quality, size and speed (vLLM CPU)",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M', time.localtime(started))} on {platform.machine()}, "
        f"{os.cpu_count()} CPUs ({cpu_summary()}); models measured one after the other"
        + (" (some reused from an earlier run: see raw/)" if args.reuse else "") + ".",
        f"Command: `serve-app evaluate --base {args.base} --models {' '.join(args.models)} --out {args.out}`",
        "",
        "Perplexity: vLLM prompt logprobs on serve_app/data/heldout.txt "
        f"({args.ppl_window}-token windows). Answers: expected word in the greedy reply to "
        f"{len(FACT_PROMPTS)} factual questions. Greedy agreement: share of the base's greedy tokens reproduced "
        "before the first different token, averaged over those questions. Speed: vLLM AsyncLLM, eager, "
        f"{args.max_tokens} output tokens per request (ignore_eos), concurrency {args.concurrency}.",
    ]
    report.write_report(Path(args.out), rows, raw, header)
    print(report.markdown_table(rows))
    print(f"wrote {args.out}/compression.md, compression.json, compression.png", file=sys.stderr)
    return 0
