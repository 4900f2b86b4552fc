"""Offline engine speed of one checkpoint (no server): vLLM `LLM.generate`, fixed prompts, 64 tokens, best of 3.

    .venv/bin/python benchmarks/offline_engine_speed.py ~/.cache/serve_app/models/SmolLM2-135M-Instruct 16
    .venv/bin/python benchmarks/offline_engine_speed.py ~/.cache/serve_app/compressed/w8a8 16
    DTYPE=bfloat16 ... (activation dtype; float32 is the default)
    EAGER=0 ... (torch.compile; ~150 s more start-up)

Prints `RESULT <path> batch=<n> tok/s=<x>`. Run checkpoints one after the other on a quiet machine.
"""

import os
import sys
import time

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


def main() -> None:
    from vllm import LLM, SamplingParams

    path, batch = sys.argv[1], int(sys.argv[2])
    dtype = os.environ.get("DTYPE", "float32")
    llm = LLM(model=path, dtype=dtype, enforce_eager=os.environ.get("EAGER", "1") == "1", max_model_len=1024,
              max_num_seqs=64, seed=0)
    prompts = [{"prompt_token_ids": [1 + (i * 7 + j) % 1000 for j in range(32)]} for i in range(batch)]
    params = SamplingParams(max_tokens=64, ignore_eos=True, temperature=0)
    llm.generate(prompts[:2], params)  # warm-up
    best = 0.0
    for _ in range(3):
        start = time.perf_counter()
        outputs = llm.generate(prompts, params)
        elapsed = time.perf_counter() - start
        best = max(best, sum(len(o.outputs[0].token_ids) for o in outputs) / elapsed)
    print(f"RESULT {path} dtype={dtype} batch={batch} tok/s={best:.1f}", flush=True)


if __name__ == "__main__":
    main()
