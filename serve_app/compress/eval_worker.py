"""Measures one checkpoint through vLLM (serving venv); run as a subprocess by `evaluate`.

One process per model so every engine starts from a clean process and frees its memory on exit.
Writes a JSON dict: perplexity, greedy answers (token ids + text), speed at each concurrency, or an error.
The file is rewritten after every stage, so a model that runs past `evaluate`'s time limit (FP8 on a CPU is
emulated and slow) still reports the stages it finished.

    python -m serve_app.compress.eval_worker --model DIR --dtype float32 --out result.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import traceback
import uuid

from tqdm import tqdm

from serve_app.compress import calibration, metrics
from serve_app.compress.prompts import FACT_PROMPTS, SPEED_TOPICS
from serve_app.stats import percentile_of


def _chat_ids(tokenizer, text: str) -> list[int]:
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True, return_dict=False
    )


async def _generate(engine, prompt_ids: list[int], params) -> tuple[list[int], float | None, float, object]:
    """Runs one request; returns (output ids, ttft_s, e2e_s, final output)."""
    from vllm.inputs import TokensPrompt

    started = time.perf_counter()
    ttft_s = None
    output_ids: list[int] = []
    final = None
    async for out in engine.generate(TokensPrompt(prompt_token_ids=prompt_ids), params, request_id=uuid.uuid4().hex):
        new_ids = out.outputs[0].token_ids if out.outputs else []
        if new_ids and ttft_s is None:
            ttft_s = time.perf_counter() - started
        output_ids.extend(new_ids)
        final = out
    return output_ids, ttft_s, time.perf_counter() - started, final


async def _perplexity(engine, windows: list[list[int]]) -> dict:
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    params = SamplingParams(max_tokens=1, prompt_logprobs=0, detokenize=False, output_kind=RequestOutputKind.FINAL_ONLY)
    token_logprobs: list[float] = []
    for window in tqdm(windows, desc="perplexity"):
        _, _, _, final = await _generate(engine, window, params)
        # prompt_logprobs[i] holds {token_id: Logprob} for prompt token i given tokens < i; entry 0 is None.
        for token_id, position in zip(window[1:], final.prompt_logprobs[1:]):
            token_logprobs.append(position[token_id].logprob)
    return {"perplexity": metrics.perplexity(token_logprobs), "num_ppl_tokens": len(token_logprobs)}


async def _answers(engine, tokenizer, max_tokens: int) -> list[dict]:
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, detokenize=False, output_kind=RequestOutputKind.DELTA)
    answers = []
    for prompt in tqdm(FACT_PROMPTS, desc="greedy answers"):
        output_ids, _, _, _ = await _generate(engine, _chat_ids(tokenizer, prompt.question), params)
        text = tokenizer.decode(output_ids, skip_special_tokens=True)
        answers.append({"question": prompt.question, "output_ids": output_ids, "text": text})
    return answers


async def _speed(engine, tokenizer, concurrency: int, max_tokens: int, num_rounds: int) -> dict:
    """`concurrency` requests at once, `num_rounds` times; ignore_eos so every request yields max_tokens."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    params = SamplingParams(
        temperature=0.0, max_tokens=max_tokens, ignore_eos=True, detokenize=False, output_kind=RequestOutputKind.DELTA
    )
    ttfts, tpots, num_tokens, wall_s = [], [], 0, 0.0
    for round_idx in range(num_rounds):
        prompts = [
            _chat_ids(tokenizer, f"Write a short story about {SPEED_TOPICS[(round_idx * concurrency + i) % len(SPEED_TOPICS)]}"
                      f" (story {round_idx}-{i}).")
            for i in range(concurrency)
        ]
        started = time.perf_counter()
        results = await asyncio.gather(*(_generate(engine, ids, params) for ids in prompts))
        wall_s += time.perf_counter() - started
        for output_ids, ttft_s, e2e_s, _ in results:
            num_tokens += len(output_ids)
            ttfts.append(ttft_s * 1000)
            if len(output_ids) > 1:
                tpots.append((e2e_s - ttft_s) * 1000 / (len(output_ids) - 1))
    return {
        "concurrency": concurrency,
        "num_requests": concurrency * num_rounds,
        "output_tokens_per_s": num_tokens / wall_s,
        "ttft_p50_ms": percentile_of(ttfts, 50),
        "ttft_p99_ms": percentile_of(ttfts, 99),
        "tpot_p50_ms": percentile_of(tpots, 50),
    }


def _save(path: str, result: dict) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=2)
    os.replace(tmp, path)


async def measure(args: argparse.Namespace) -> dict:
    from transformers import AutoTokenizer
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    docs = calibration.read_documents(args.heldout or calibration.HELDOUT_FILE)
    doc_ids = [tokenizer(d, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for d in docs]
    windows = calibration.pack_windows(doc_ids, args.ppl_window)

    started = time.perf_counter()
    engine = AsyncLLM.from_engine_args(
        AsyncEngineArgs(
            model=args.model,
            dtype=args.dtype,
            enforce_eager=True,
            max_model_len=max(1024, args.ppl_window + 8),
            max_num_seqs=max(args.concurrency),
            seed=0,
        )
    )
    result: dict = {"engine_start_s": time.perf_counter() - started}
    try:
        result.update(await _perplexity(engine, windows))
        _save(args.out, result)
        result["answers"] = await _answers(engine, tokenizer, args.answer_tokens)
        _save(args.out, result)
        await _speed(engine, tokenizer, 2, 8, 1)  # warm-up: first batches pay one-off allocation costs
        result["speed"] = []
        for concurrency in tqdm(args.concurrency, desc="speed"):
            # At concurrency 1, several sequential requests; above it, two rounds.
            num_rounds = 3 if concurrency == 1 else 2
            result["speed"].append(await _speed(engine, tokenizer, concurrency, args.max_tokens, num_rounds))
            _save(args.out, result)
    finally:
        engine.shutdown()
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--out", required=True)
    parser.add_argument("--heldout")
    parser.add_argument("--ppl-window", type=int, default=512)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--answer-tokens", type=int, default=24)
    args = parser.parse_args()
    try:
        result = asyncio.run(measure(args))
    except Exception as error:  # reported in the table (e.g. a format vLLM's CPU backend cannot serve)
        result = {"error": f"{type(error).__name__}: {error}".splitlines()[0][:300], "traceback": traceback.format_exc()}
    _save(args.out, result)


if __name__ == "__main__":
    main()
