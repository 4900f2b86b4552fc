"""Does `auto` cost anything where its schedule asks for no drafts? Side by side in one process: two offline engines
(speculation off, and the shipped auto schedule), same settings, runs alternating off / auto three times per cell, so
machine drift hits both alike. Batch sizes 8 and 32 (past the schedule's k > 0 range), chat and copy prompt sets,
96 output tokens (ignore_eos).

    .venv/bin/python benchmarks/speculation_k0_cost.py     # ~5 min on 2 cores -> results/speculation/k0_cost.{json,md}
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    from vllm import LLM, SamplingParams

    from loadtest.prompt_sets import prompt_set
    from serve_app.config import AppConfig
    from serve_app.platform.models import resolve_model_path
    from serve_app.server.engine_args import engine_environment, resolved_dtype
    from serve_app.server.speculation import speculative_config

    config = AppConfig()
    model_dir = resolve_model_path(config.model)
    os.environ.update(engine_environment(config.engine))
    common = dict(dtype=resolved_dtype(config, model_dir), max_model_len=config.engine.max_model_len,
                  max_num_seqs=config.engine.max_num_seqs, enforce_eager=True, seed=0)
    engines = {"off": LLM(model_dir, **common),
               "auto": LLM(model_dir, speculative_config=speculative_config(config.engine.speculation), **common)}
    params = SamplingParams(temperature=0, max_tokens=96, ignore_eos=True)
    cells = []
    for name in ("chat", "copy"):
        for batch in (8, 32):
            prompts = prompt_set(name, batch)
            for llm in engines.values():
                llm.chat(prompts, params, use_tqdm=False)
            runs: dict[str, list[float]] = {"off": [], "auto": []}
            for _ in range(3):
                for label, llm in engines.items():
                    start = time.perf_counter()
                    outputs = llm.chat(prompts, params, use_tqdm=False)
                    runs[label].append(sum(len(o.outputs[0].token_ids) for o in outputs) / (time.perf_counter() - start))
            cells.append({"prompt_set": name, "batch_size": batch, "off_tok_s": runs["off"], "auto_tok_s": runs["auto"],
                          "best_ratio": max(runs["auto"]) / max(runs["off"])})
            print(json.dumps(cells[-1]), flush=True)
    out = REPO / "results/speculation"
    out.mkdir(parents=True, exist_ok=True)
    (out / "k0_cost.json").write_text(json.dumps({"schedule": config.engine.speculation.auto_schedule, "cells": cells}, indent=1))
    lines = ["# auto where its schedule gives no drafts vs speculation off (offline, alternating runs)", "",
             "| prompt set | batch | off tok/s (3 runs) | auto tok/s (3 runs) | best auto / best off |", "|---|---|---|---|---|"]
    lines += [f"| {c['prompt_set']} | {c['batch_size']} | {', '.join(f'{x:.1f}' for x in c['off_tok_s'])} | "
              f"{', '.join(f'{x:.1f}' for x in c['auto_tok_s'])} | {c['best_ratio']:.3f} |" for c in cells]
    (out / "k0_cost.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
