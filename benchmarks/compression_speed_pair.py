"""Paired speed test: base and compressed engines alive at once, rounds alternated (serving venv).

On a shared, noisy CPU, measuring one model after the other lets load changes pass for speed changes.
Here both vLLM engines run in one process and take turns: round i of the base, then round i of the
compressed model, `--rounds` times, each round `--concurrency` requests of `--max-tokens` tokens. The
speed-up is the median of the per-pair ratios. Writes JSON to --out.

    .venv/bin/python benchmarks/compression_speed_pair.py --base BASE --model W8A8 \
        --out results/compression/speed_pair_w8a8.json
    ... --base BASE@bfloat16 --model W8A8@bfloat16   # both served with bf16 activations
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

import tables  # benchmarks/, beside this script
from harness import machine
from serve_app.stats import paired_ratio_ci, percentile_of  # the project's one percentile (p50 = the median)


async def _run(args: argparse.Namespace) -> dict:
    from transformers import AutoTokenizer
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    from serve_app.compress.eval_worker import _speed
    from serve_app.compress.evaluate import cpu_summary, describe

    # (checkpoint path, dtype it is served with): PATH@DTYPE, else compression.json's serve_dtype, else float32.
    targets = {name: (entry["path"], entry["dtype"])
               for name, entry in (("base", describe(args.base)), ("compressed", describe(args.model)))}
    tokenizer = AutoTokenizer.from_pretrained(targets["base"][0])
    engines = {}
    for name, (path, dtype) in targets.items():
        engines[name] = AsyncLLM.from_engine_args(AsyncEngineArgs(
            model=path, dtype=dtype, enforce_eager=True, max_model_len=1024,
            max_num_seqs=args.concurrency, seed=0))
    try:
        for engine in engines.values():
            await _speed(engine, tokenizer, 2, 8, 1)  # warm-up
        rounds = {name: [] for name in engines}
        for round_idx in range(args.rounds):
            order = list(engines) if round_idx % 2 == 0 else list(reversed(engines))  # no fixed first mover
            for name in order:
                rounds[name].append(await _speed(engines[name], tokenizer, args.concurrency, args.max_tokens, 1))
            print(f"round {round_idx}: " + ", ".join(
                f"{n} {rounds[n][-1]['output_tokens_per_s']:.1f} tok/s" for n in engines), file=sys.stderr, flush=True)
    finally:
        for engine in engines.values():
            engine.shutdown()
    base_tok_s = [r["output_tokens_per_s"] for r in rounds["base"]]
    compressed_tok_s = [r["output_tokens_per_s"] for r in rounds["compressed"]]
    ratios = [c / b for b, c in zip(base_tok_s, compressed_tok_s)]
    return {
        "base": args.base, "model": args.model, "dtypes": {n: d for n, (_, d) in targets.items()},
        "machine": machine(), "cpu": cpu_summary(), "concurrency": args.concurrency, "max_tokens": args.max_tokens,
        "num_rounds": args.rounds,
        # Geometric mean of the per-round ratios with its 95% t interval (the rounds are interleaved pairs).
        "speedup": paired_ratio_ci(base_tok_s, compressed_tok_s).to_dict(),
        "measured_at": time.strftime("%Y-%m-%d %H:%M"), "load_average_1m_at_end": os.getloadavg()[0],
        "base_tok_s_median": percentile_of(base_tok_s, 50),
        "compressed_tok_s_median": percentile_of(compressed_tok_s, 50),
        "speedup_median": percentile_of(ratios, 50), "speedup_per_round": ratios, "rounds": rounds,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
    result = asyncio.run(_run(args))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    table = tables.compression_speed_pair(result)
    Path(args.out).with_suffix(".md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
