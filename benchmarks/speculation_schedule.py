"""Measure where n-gram speculation pays, per batch size, and derive the `auto` schedule from it.

For each draft length k (0 = speculation off), one offline vLLM engine with serve_app's default engine settings
(dtype as `auto` resolves it here) generates greedy replies for the three built-in prompt sets (loadtest's
copy / translate / chat) at each batch size; output tokens/s is the best of the timed repeats after a warm-up.
`serve_app.server.speculation.choose_schedule` turns the table into the schedule that the config's `auto`
default ships (engine.speculation.auto_schedule).

    .venv/bin/python benchmarks/speculation_schedule.py            # ~35 min on 2 cores (resumable: runs/k*.json)
    -> results/speculation/schedule.{json,md}
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def measure_one_k(k: int, batch_sizes: list[int], max_tokens: int, repeats: int) -> dict:
    from vllm import LLM, SamplingParams

    from loadtest.prompt_sets import PROMPT_SETS, prompt_set
    from serve_app.config import AppConfig
    from serve_app.platform.models import resolve_model_path
    from serve_app.server.engine_args import engine_environment, resolved_dtype
    from serve_app.server.speculation import speculative_config

    config = AppConfig()
    model_dir = resolve_model_path(config.model)
    os.environ.update(engine_environment(config.engine))
    ngram = config.engine.speculation.model_copy(update={"mode": "ngram", "num_speculative_tokens": max(k, 1)})
    spec = None if k == 0 else speculative_config(ngram)
    dtype = resolved_dtype(config, model_dir)
    llm = LLM(model_dir, dtype=dtype, max_model_len=config.engine.max_model_len, max_num_seqs=max(batch_sizes),
              enforce_eager=True, seed=0, speculative_config=spec, disable_log_stats=False)
    params = SamplingParams(temperature=0, max_tokens=max_tokens)
    cells = []
    for name in PROMPT_SETS:
        for batch in batch_sizes:
            prompts = prompt_set(name, batch)
            llm.chat(prompts, params, use_tqdm=False)
            before = spec_counters(llm)
            best, texts = 0.0, []
            for _ in range(repeats):
                start = time.perf_counter()
                outputs = llm.chat(prompts, params, use_tqdm=False)
                elapsed = time.perf_counter() - start
                best = max(best, sum(len(o.outputs[0].token_ids) for o in outputs) / elapsed)
                texts = [o.outputs[0].text for o in outputs]
            after = spec_counters(llm)
            drafts, draft_tokens, accepted = (after[i] - before[i] for i in range(3))
            cells.append({"prompt_set": name, "batch_size": batch, "k": k, "tokens_per_s": round(best, 2),
                          "acceptance_rate": round(accepted / draft_tokens, 3) if draft_tokens else None,
                          "tokens_per_step": round(1 + accepted / drafts, 3) if drafts else None,
                          "first_text": texts[0][:120]})
            print(json.dumps(cells[-1]), file=sys.stderr, flush=True)
    return {"k": k, "dtype": dtype, "cells": cells}


def spec_counters(llm) -> tuple[int, int, int]:
    values = {m.name: getattr(m, "value", 0) for m in llm.get_metrics()}
    return tuple(int(values.get(f"vllm:spec_decode_num_{n}", 0)) for n in ("drafts", "draft_tokens", "accepted_tokens"))


def cpu_model() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()


def write_tables(result: dict, out: Path) -> None:
    from serve_app.server.speculation import choose_schedule

    cells = [c for run in result["runs"] for c in run["cells"]]
    table = {(c["prompt_set"], c["batch_size"], c["k"]): c["tokens_per_s"] for c in cells}
    schedule = choose_schedule(table, floor=result["floor"])
    result["schedule"] = schedule
    (out / "schedule.json").write_text(json.dumps(result, indent=1))
    ks = sorted({c["k"] for c in cells})
    sets = sorted({c["prompt_set"] for c in cells})
    sizes = sorted({c["batch_size"] for c in cells})
    by = {(c["prompt_set"], c["batch_size"], c["k"]): c for c in cells}
    lines = ["# Where n-gram speculation pays (offline engine, greedy)", "",
             f"Machine: {result['machine']}; dtype {result['runs'][0]['dtype']}; {result['max_tokens']} output tokens; "
             f"command: `{result['command']}`.", "",
             "Output tokens/s with k = 0 (off), and for each k the ratio to off (acceptance rate, tokens per step).", "",
             "| prompt set | batch | off tok/s | " + " | ".join(f"k={k}" for k in ks if k) + " |",
             "|---|---|---|" + "---|" * len([k for k in ks if k])]
    for name in sets:
        for size in sizes:
            off = by[(name, size, 0)]["tokens_per_s"]
            row = [name, str(size), f"{off:.1f}"]
            for k in ks:
                if k:
                    c = by[(name, size, k)]
                    row.append(f"{c['tokens_per_s'] / off:.2f}x ({c['acceptance_rate']}, {c['tokens_per_step']})")
            lines.append("| " + " | ".join(row) + " |")
    lines += ["", f"Chosen schedule (floor {result['floor']} of off on every prompt set): `{schedule}`", ""]
    (out / "schedule.md").write_text("\n".join(lines))
    print("\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ks", default="0,2,4,8")
    parser.add_argument("--batch-sizes", default="1,2,4,8,16,32")
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--floor", type=float, default=0.97)
    parser.add_argument("--out", type=Path, default=REPO / "results/speculation")
    parser.add_argument("--one-k", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--run-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--summarise-only", action="store_true", help="rewrite schedule.md from schedule.json")
    args = parser.parse_args()
    sizes = [int(x) for x in args.batch_sizes.split(",")]
    if args.one_k is not None:
        # To a file: vLLM logs to stdout.
        args.run_file.write_text(json.dumps(measure_one_k(args.one_k, sizes, args.max_tokens, args.repeats), indent=1))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    if args.summarise_only:
        write_tables(json.loads((args.out / "schedule.json").read_text()), args.out)
        return 0
    runs = []
    (args.out / "runs").mkdir(exist_ok=True)
    for k in (int(x) for x in args.ks.split(",")):
        saved = args.out / "runs" / f"k{k}.json"  # resumable: a k already measured is read back, not re-run
        if not saved.exists():
            # One process per k: a fresh engine, and its memory returned before the next.
            subprocess.run([sys.executable, __file__, "--one-k", str(k), "--batch-sizes", args.batch_sizes,
                            "--max-tokens", str(args.max_tokens), "--repeats", str(args.repeats), "--run-file",
                            str(saved)], check=True, timeout=3600)
        runs.append(json.loads(saved.read_text()))
    result = {"machine": f"{cpu_model()}, {os.cpu_count()} CPUs", "max_tokens": args.max_tokens, "floor": args.floor,
              "command": "python benchmarks/speculation_schedule.py " + " ".join(sys.argv[1:]), "runs": runs}
    write_tables(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
