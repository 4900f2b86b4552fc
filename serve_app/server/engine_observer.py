"""What the model server learns from the engine about each request, without touching vLLM's frontend.

vLLM's serving classes call `engine_client.generate(...)`. `ObservedEngine` wraps the engine so that each
output passes `RequestStats` (bound to the current request through a context variable): token counts, first
and last token times, and the engine core's queue and prefill timestamps. `SchedulerLoad` keeps the latest
scheduler counts from vLLM's stat-logger hook.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator


@dataclass(slots=True)
class RequestStats:
    """One request's engine-side facts (summed over its `n` sequences). Times are time.monotonic() s, the clock
    of the engine core's own timestamps, which are used where it reports them (a non-streamed request's one
    output arrives at the end, so its first-token time must come from the engine)."""

    start_s: float = field(default_factory=time.monotonic)
    num_output_tokens: int = 0
    num_prompt_tokens: int | None = None  # the rendered prompts' tokens, as the engine got them (all prompts)
    first_token_s: float | None = None
    last_token_s: float | None = None
    queue_ms: float | None = None
    prefill_ms: float | None = None

    def observe(self, output: Any) -> None:
        num_new = sum(len(seq.token_ids) for seq in output.outputs)
        if not num_new:
            return
        now_s = time.monotonic()
        metrics = getattr(output, "metrics", None)
        if self.first_token_s is None:
            self.first_token_s = getattr(metrics, "first_token_ts", 0.0) or now_s
            self.queue_ms, self.prefill_ms = engine_phase_ms(metrics)
        self.last_token_s = getattr(metrics, "last_token_ts", 0.0) or now_s
        self.num_output_tokens += num_new

    @property
    def ttft_ms(self) -> float | None:
        return None if self.first_token_s is None else max(0.0, self.first_token_s - self.start_s) * 1000.0

    @property
    def tpot_ms(self) -> float | None:
        if self.first_token_s is None or self.num_output_tokens < 2:
            return None
        return (self.last_token_s - self.first_token_s) * 1000.0 / (self.num_output_tokens - 1)


def engine_phase_ms(metrics: Any) -> tuple[float | None, float | None]:
    """Queue wait and prefill time from the engine core's (monotonic) timestamps, when it reports them."""
    if metrics is None or not getattr(metrics, "scheduled_ts", 0) or not getattr(metrics, "first_token_ts", 0):
        return None, None
    queue_ms = max(0.0, (metrics.scheduled_ts - metrics.queued_ts) * 1000.0)
    prefill_ms = max(0.0, (metrics.first_token_ts - metrics.scheduled_ts) * 1000.0)
    return queue_ms, prefill_ms


current_request_stats: contextvars.ContextVar[RequestStats | None] = contextvars.ContextVar(
    "serve_app_request_stats", default=None)


class ObservedEngine:
    """The engine client as vLLM's frontend sees it; every other attribute is the engine's own."""

    def __init__(self, engine: Any):
        self._engine = engine

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def generate(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        # Read the request's stats now, in the caller's context (the frontend calls this while handling it).
        return self._observed(self._engine.generate(*args, **kwargs), current_request_stats.get())

    @staticmethod
    async def _observed(outputs: AsyncIterator[Any], stats: RequestStats | None) -> AsyncIterator[Any]:
        # aclosing: when the client goes away the frontend closes this generator, and vLLM's own generator
        # must close at once too (that is what aborts the request in the engine).
        prompt_logprobs = None
        is_first = True
        async with contextlib.aclosing(outputs):
            async for output in outputs:
                if stats is not None:
                    if is_first and getattr(output, "prompt_token_ids", None) is not None:
                        stats.num_prompt_tokens = (stats.num_prompt_tokens or 0) + len(output.prompt_token_ids)
                    is_first = False
                    stats.observe(output)
                prompt_logprobs = keep_prompt_logprobs(output, prompt_logprobs)
                yield output


def keep_prompt_logprobs(output: Any, seen: Any) -> Any:
    """Give `output` the request's prompt logprobs if vLLM left them out; return them.

    Streamed (DELTA) outputs carry a choice's prompt logprobs on its first output only; later ones carry `[]`
    (vLLM 0.32 `LogprobsProcessor.pop_prompt_logprobs`). With `n` > 1 a choice can appear first in a later
    output: when the frontend lags, AsyncLLM merges queued outputs (`RequestOutput.add`), keeping the first
    one's `[]` and dropping the second choice's own prompt logprobs. vLLM's streamed completions then echo the
    prompt's token ids beside the output's logprobs (a KeyError that ends the stream with an error event).
    Only the echo of a completions stream and whole responses read them, so repeating them changes nothing
    else. A prompt has at least one token, so real prompt logprobs are never empty.
    """
    current = getattr(output, "prompt_logprobs", None)
    if current:
        return current
    if seen and getattr(output, "prompt_token_ids", None) is not None:
        output.prompt_logprobs = seen
    return seen


class SchedulerLoad:
    """Latest scheduler counts and speculation totals, written by the engine's stat-logger hook on every step."""

    def __init__(self) -> None:
        self.num_running = 0
        self.num_waiting = 0
        # Speculative decoding since start: verification steps that carried drafts, draft tokens, accepted ones.
        self.spec_drafts = 0
        self.spec_draft_tokens = 0
        self.spec_accepted_tokens = 0
        # Prefix caching since start: prompt tokens looked up in the cache and tokens found there.
        self.prefix_cache_queries = 0
        self.prefix_cache_hits = 0

    def observe_speculation(self, stats: Any) -> None:
        self.spec_drafts += stats.num_drafts
        self.spec_draft_tokens += stats.num_draft_tokens
        self.spec_accepted_tokens += stats.num_accepted_tokens

    def stat_logger_factory(self):
        """A vLLM stat-logger factory that feeds this object (vLLM calls it as factory(vllm_config, index))."""
        from vllm.v1.metrics.loggers import StatLoggerBase

        load = self

        class _LoadLogger(StatLoggerBase):
            def __init__(self, vllm_config, engine_index: int = 0):
                pass

            def record(self, scheduler_stats, iteration_stats, mm_cache_stats=None, engine_idx: int = 0):
                if scheduler_stats is not None:
                    load.num_running = scheduler_stats.num_running_reqs
                    load.num_waiting = scheduler_stats.num_waiting_reqs + scheduler_stats.num_skipped_waiting_reqs
                    if scheduler_stats.spec_decoding_stats is not None:
                        load.observe_speculation(scheduler_stats.spec_decoding_stats)
                    prefix = scheduler_stats.prefix_cache_stats
                    if prefix is not None:
                        load.prefix_cache_queries += prefix.queries
                        load.prefix_cache_hits += prefix.hits

            def log_engine_initialized(self):
                pass

        return _LoadLogger
