"""SimulatedModelServer: the model server's contract (serve_app/server/model_server.py) filled by the
performance model instead of vLLM.

One asyncio task steps the scheduler (scheduler.py): it plans a step, sleeps the step's cost from the profile,
then hands each sampled token to its request's queue. `generate` turns those tokens into vLLM-shaped OpenAI
chunks (chunks.py) on the request's wire, or one whole response. No vLLM, no torch, no per-token busy work:
an idle replica costs nothing and a busy one a few JSON encodes per token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Any, AsyncIterator

from serve_app.api.framing import done_marker, encode, final_error_events
from serve_app.api.protocol import EngineStats, Frame, RequestOutcome, ServerRequest, WholeResponse
from serve_app.autoscaling.window import ReplicaLatencyStats
from serve_app.config import DEFAULT_MODEL_SOURCE, TINY_MODEL_SOURCE, AppConfig, ModelConfig
from serve_app.server.replica_metrics import ReplicaEngineMetrics
from serve_app.server.simulated.chunks import ChunkMaker, tokens_text, usage
from serve_app.server.simulated.offline import new_scheduler
from serve_app.server.simulated.profile import load_profile
from serve_app.server.simulated.prompt import PromptCounter, block_hashes
from serve_app.server.simulated.scheduler import Sequence, TokenEvent
from serve_app.server.timings import request_timings

logger = logging.getLogger("ray.serve")

# A step may start this much before the clock when the loop fell behind (the event loop was busy), so the
# replica keeps the profile's token rate instead of adding every wake-up's lateness to the next step.
MAX_CATCH_UP_S = 0.05


def local_model_dir(model: ModelConfig) -> Path | None:
    """The model's folder if it is on disk already (never prepares or downloads: its tokenizer is optional)."""
    cache_dir = Path(os.path.expanduser(model.cache_dir))
    names = {DEFAULT_MODEL_SOURCE: "SmolLM2-135M-Instruct", TINY_MODEL_SOURCE: "tiny-llama"}
    for candidate in (model.tokenizer, model.source):
        if not candidate:
            continue
        path = cache_dir / names[candidate] if candidate in names else Path(os.path.expanduser(candidate))
        if path.is_dir():
            return path
    return None


def _error(status: int, message: str, code: str, param: str | None = None) -> WholeResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return WholeResponse(status, {"error": {"message": message, "type": kind, "param": param, "code": code}})


class SimulatedModelServer:
    """A replica of a simulated engine. Call `await start()` once before `generate`."""

    def __init__(self, config: AppConfig):
        from serve_app.platform.ray_env import replica_context

        self._config = config
        engine = config.engine
        sim = engine.simulated
        self.profile = load_profile(sim.profile, {
            # Its rows as the vLLM engine gets them (engine_args): tenancy's reserve above the batch.
            "load_time_s": sim.load_time_s, "max_num_seqs": config.engine_rows,
            "num_kv_cache_tokens": sim.num_kv_cache_tokens, "default_max_tokens": sim.default_max_tokens,
            "max_num_batched_tokens": engine.max_num_batched_tokens})
        self._step_time_scale = sim.step_time_scale
        self.model_name = config.model.resolved_name()
        context = replica_context()
        self.replica_id = context.replica_id.unique_id if context is not None else None
        self.max_model_len = min(engine.max_model_len or self.profile.max_model_len, self.profile.max_model_len,
                                 self.profile.num_kv_blocks * self.profile.block_size_tokens)
        self._scheduler = new_scheduler(self.profile, engine.enable_prefix_caching)
        self._scheduler.max_model_len = self.max_model_len
        self._prompts = PromptCounter(local_model_dir(config.model))
        self._queues: dict[Sequence, asyncio.Queue[TokenEvent | None]] = {}
        self._wakeup: asyncio.Event | None = None
        self._loop_task: asyncio.Task | None = None
        self._metrics_task: asyncio.Task | None = None
        self._latency = ReplicaLatencyStats(window_s=config.model_deployment.latency_targets.window_s)
        self._num_active = 0
        self._num_steps = 0
        logger.info("Simulated engine %s (%s on %s): max_num_seqs=%d, KV %d tokens, max_model_len=%d, tokenizer=%s",
                    self.profile.name, self.profile.model, self.profile.device, self.profile.max_num_seqs,
                    self.profile.num_kv_cache_tokens, self.max_model_len, self._prompts.has_tokenizer)

    async def start(self) -> None:
        """The model load (the profile's `load_time_s`), then the step loop."""
        await asyncio.sleep(self.profile.load_time_s)
        self._wakeup = asyncio.Event()
        self._loop_task = asyncio.create_task(self._step_loop())
        self._metrics_task = ReplicaEngineMetrics.start(
            self.model_name, self.engine_stats, self._config.model_deployment.latency_targets.report_interval_s)

    async def _step_loop(self) -> None:
        scheduler = self._scheduler
        last_end_s = 0.0
        try:
            while True:
                if not scheduler.has_work:
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                now_s = time.monotonic()
                start_s = max(now_s - MAX_CATCH_UP_S, last_end_s) if now_s - last_end_s < MAX_CATCH_UP_S else now_s
                plan = scheduler.schedule(start_s)
                step_s = self.profile.cost.step_ms(plan.num_decode_seqs, plan.num_prefill_tokens,
                                                   plan.num_context_tokens) * self._step_time_scale / 1000.0
                last_end_s = start_s + step_s
                await asyncio.sleep(max(0.0, last_end_s - time.monotonic()))
                self._num_steps += 1
                for event in scheduler.postprocess(plan, last_end_s):
                    queue = self._queues.get(event.seq)
                    if queue is not None:
                        queue.put_nowait(event)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("The simulated engine's step loop failed")
            for queue in self._queues.values():
                queue.put_nowait(None)
            raise

    def _admit(self, request: ServerRequest, body: dict[str, Any]) -> Sequence | WholeResponse:
        """The request's sequence, or the error a real engine would answer before the first byte."""
        if request.endpoint not in ("chat", "completion"):
            return _error(400, f"The simulated engine serves chat and completions, not {request.endpoint}.",
                          "unsupported_endpoint")
        if (body.get("n") or 1) != 1:
            return _error(400, "The simulated engine serves n=1 only.", "invalid_value", "n")
        try:  # the ingress checked the JSON's shape, not its field types (the real model server's vLLM types do)
            prompt_ids = self._prompts.prompt_ids(request.endpoint, body)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            field = "messages" if request.endpoint == "chat" else "prompt"
            return _error(400, f"Invalid '{field}': {type(exc).__name__}.", "invalid_value", field)
        num_prompt = len(prompt_ids)
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool)):
            return _error(400, "Invalid 'max_tokens': expected an integer.", "invalid_value", "max_tokens")
        if max_tokens is None:
            max_tokens = min(self.profile.default_max_tokens, self.max_model_len - num_prompt)
        if num_prompt + max(max_tokens, 1) > self.max_model_len:
            return _error(400, f"This model's maximum context length is {self.max_model_len} tokens. However, you "
                          f"requested {num_prompt + max_tokens} tokens ({num_prompt} in the messages, {max_tokens} "
                          "in the completion). Please reduce the length of the messages or completion.",
                          "context_length_exceeded", "max_tokens")
        return Sequence(request.request_id, num_prompt, max(1, max_tokens),
                        block_hashes(prompt_ids, self.profile.block_size_tokens))

    async def generate(self, request: ServerRequest) -> AsyncIterator[Frame | WholeResponse]:
        start_wall_s, start_s = time.time(), time.monotonic()
        body = request.body if isinstance(request.body, dict) else request.body.model_dump()
        seq = self._admit(request, body)
        if isinstance(seq, WholeResponse):
            yield seq
            return
        maker = ChunkMaker(request.endpoint, request.request_id, body.get("model") or self.model_name,
                           int(start_wall_s))
        queue: asyncio.Queue[TokenEvent | None] = asyncio.Queue()
        self._num_active += 1
        first_output_s = None
        try:
            if self.profile.frontend_ms:
                await asyncio.sleep(self.profile.frontend_ms / 1000.0)
            seq.arrival_s = time.monotonic()
            self._queues[seq] = queue
            self._scheduler.add(seq)
            self._wakeup.set()
            if not body.get("stream"):
                while not seq.is_finished:
                    if await queue.get() is None:
                        yield _error(500, "The simulated engine failed.", "engine_error")
                        return
                answer = maker.whole(tokens_text(0, seq.num_output_tokens), "length",
                                     usage(seq.num_prompt_tokens, seq.num_output_tokens, seq.num_cached_prompt_tokens))
                answer["timings"] = timings = self._timings(request, seq, start_s, start_wall_s)
                yield WholeResponse(200, answer, replica=self.replica_id,
                                    outcome=RequestOutcome(seq.num_prompt_tokens, seq.num_output_tokens, timings))
                return
            wire = request.wire
            num_sent = 0
            while True:
                event = await queue.get()
                if event is None:
                    error = {"message": "The model engine failed while streaming; retry the request.",
                             "type": "server_error", "param": None, "code": "engine_error"}
                    yield Frame(final_error_events(error, wire), error=error, is_final=True)
                    return
                while not queue.empty():  # a slow reader: the backlog goes out as one frame
                    queue.get_nowait()
                num_new = seq.num_output_tokens - num_sent
                if num_sent == 0 and maker.is_chat:
                    yield Frame(encode(maker.role_chunk(), wire))
                if first_output_s is None:
                    first_output_s = time.monotonic()
                finish_reason = "length" if seq.is_finished else None
                yield Frame(encode(maker.token_chunk(tokens_text(num_sent, seq.num_output_tokens), finish_reason),
                                   wire), num_tokens=num_new, has_output=True)
                num_sent = seq.num_output_tokens
                if seq.is_finished:
                    break
            timings = self._timings(request, seq, start_s, start_wall_s, first_output_s)
            if (body.get("stream_options") or {}).get("include_usage"):
                chunk = maker.usage_chunk(usage(seq.num_prompt_tokens, seq.num_output_tokens,
                                                seq.num_cached_prompt_tokens))
                chunk["timings"] = {key: round(value, 2) for key, value in timings.items()}
                yield Frame(encode(chunk, wire))
            yield Frame(done_marker(wire), is_final=True,
                        outcome=RequestOutcome(seq.num_prompt_tokens, seq.num_output_tokens, timings))
        finally:
            self._num_active -= 1
            self._queues.pop(seq, None)
            self._scheduler.abort(seq)  # closed early: the sequence leaves the batch (a no-op once finished)
            self._record_latency(seq, start_s)

    def _record_latency(self, seq: Sequence, start_s: float) -> None:
        now_s = time.monotonic()
        if seq.first_token_s is not None:
            self._latency.record_ttft_ms((seq.first_token_s - start_s) * 1000.0, now_s)
            if seq.num_output_tokens > 1:
                tpot_ms = (seq.last_token_s - seq.first_token_s) * 1000.0 / (seq.num_output_tokens - 1)
                self._latency.record_tpot_ms(tpot_ms, now_s)

    def _timings(self, request: ServerRequest, seq: Sequence, start_s: float, start_wall_s: float,
                 first_output_s: float | None = None) -> dict[str, float]:
        """serve_app/server/timings.py; `start_s` (time.monotonic()) and `start_wall_s` (time.time()) are the
        model server's start on both clocks; the sequence's times are time.monotonic()."""
        if seq.first_token_s is None:
            return request_timings(request.timings_ms, request.handoff_time_s or None, start_wall_s)
        queue_ms = (seq.first_scheduled_s - seq.arrival_s) * 1000.0
        prefill_ms = (seq.first_token_s - seq.first_scheduled_s) * 1000.0
        output_ms = None if first_output_s is None else (first_output_s - seq.first_token_s) * 1000.0
        return request_timings(request.timings_ms, request.handoff_time_s or None, start_wall_s,
                               (seq.first_token_s - start_s) * 1000.0, queue_ms, prefill_ms, output_ms,
                               (seq.last_token_s - seq.first_token_s) * 1000.0)

    def engine_stats(self) -> EngineStats:
        scheduler = self._scheduler
        num_running, num_waiting = len(scheduler.running), len(scheduler.waiting)
        return EngineStats(num_running=num_running, num_waiting=num_waiting, num_unfinished=num_running + num_waiting,
                           num_active_streams=self._num_active, is_healthy=not self._failed(),
                           prefix_cache_queries=scheduler.num_prefix_query_tokens,
                           prefix_cache_hits=scheduler.num_prefix_hit_tokens)

    def _failed(self) -> bool:
        task = self._loop_task
        return task is not None and task.done() and not task.cancelled()

    async def check_health(self) -> None:
        """A failed step loop fails it (Ray Serve then replaces the replica)."""
        if self._failed():
            raise RuntimeError("the simulated engine's step loop stopped")

    def autoscaling_stats(self) -> dict[str, float]:
        stats = self.engine_stats()
        self._latency.set_load(num_running=stats.num_running, num_waiting=stats.num_waiting)
        return self._latency.snapshot(time.monotonic())

    def shutdown(self) -> None:
        for task in (self._metrics_task, self._loop_task):
            if task is not None:
                with contextlib.suppress(Exception):
                    task.cancel()
