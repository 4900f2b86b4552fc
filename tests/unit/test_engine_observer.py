"""What the model server learns from the engine per request, through the wrapper vLLM's frontend calls."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from serve_app.server.engine_observer import ObservedEngine, RequestStats, current_request_stats


def _output(num_tokens: int, first_token_ts: float = 0.0, last_token_ts: float = 0.0):
    metrics = SimpleNamespace(queued_ts=1.0, scheduled_ts=1.25, first_token_ts=first_token_ts, last_token_ts=last_token_ts)
    return SimpleNamespace(outputs=[SimpleNamespace(token_ids=[7] * num_tokens)], metrics=metrics)


class FakeEngine:
    def __init__(self, outputs):
        self.outputs = outputs
        self.closed = False
        self.model_config = "the engine's own attribute"

    async def generate(self, *args, **kwargs):
        try:
            for output in self.outputs:
                yield output
        finally:
            self.closed = True


def test_stats_follow_the_request_that_was_current_when_the_frontend_called_generate():
    engine = FakeEngine([_output(1, first_token_ts=1.5, last_token_ts=1.5), _output(0), _output(3, 1.5, 1.8)])
    observed = ObservedEngine(engine)
    stats = RequestStats(start_s=1.0)
    token = current_request_stats.set(stats)
    outputs = observed.generate("prompt", "params", "req-1")
    current_request_stats.reset(token)  # the frontend may iterate later, elsewhere

    async def drain():
        return [o async for o in outputs]

    assert len(asyncio.run(drain())) == 3
    assert stats.num_output_tokens == 4
    assert stats.ttft_ms == 500.0 and stats.queue_ms == 250.0 and stats.prefill_ms == 250.0
    assert abs(stats.tpot_ms - 100.0) < 1e-6  # (1.8 - 1.5) s over 3 later tokens
    assert observed.model_config == "the engine's own attribute"


def test_closing_the_observed_stream_closes_the_engines_at_once():
    engine = FakeEngine([_output(1), _output(1), _output(1)])
    outputs = ObservedEngine(engine).generate()

    async def first_then_close():
        await outputs.__anext__()
        await outputs.aclose()

    asyncio.run(first_then_close())
    assert engine.closed  # vLLM aborts the request when its generator closes


def _observed_all(outputs: list) -> list:
    """`outputs` as vLLM's generator would yield them, through the observed engine (no request stats)."""

    async def engine_outputs():
        for output in outputs:
            yield output

    async def collect():
        return [o async for o in ObservedEngine._observed(engine_outputs(), None)]

    return asyncio.run(collect())


def test_later_outputs_keep_the_prompt_logprobs_that_vllm_sends_only_once():
    """n > 1 with echo: a choice that first appears in a later output must still find the prompt's logprobs."""
    prompt_logprobs = [None, {7: "lp"}]
    outputs = [SimpleNamespace(prompt_token_ids=[1, 7], prompt_logprobs=prompt_logprobs, outputs=[]),
               SimpleNamespace(prompt_token_ids=[1, 7], prompt_logprobs=None, outputs=[])]

    seen = _observed_all(outputs)
    assert [o.prompt_logprobs for o in seen] == [prompt_logprobs, prompt_logprobs]


def test_a_merged_output_whose_first_part_had_popped_its_prompt_logprobs_gets_them_back():
    """vLLM pops a choice's prompt logprobs to [] after its first output; when the frontend lags, AsyncLLM merges
    queued outputs and keeps the first one's [] for a second choice that appears for the first time (engine fuzz:
    1 in ~60 streamed completions with echo, logprobs and n 2 ended with KeyError on the first prompt token)."""
    prompt_logprobs = [None, {7: "lp"}]
    outputs = [SimpleNamespace(prompt_token_ids=[1, 7], prompt_logprobs=prompt_logprobs, outputs=[]),
               SimpleNamespace(prompt_token_ids=[1, 7], prompt_logprobs=[], outputs=[]),
               SimpleNamespace(prompt_token_ids=[1, 7], prompt_logprobs=[], outputs=[])]

    seen = _observed_all(outputs)
    assert [o.prompt_logprobs for o in seen] == [prompt_logprobs] * 3
