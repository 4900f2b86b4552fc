"""Model replica: a vLLM async engine (continuous batching) fed with token ids, streaming token-id deltas.

Streaming contract of `ModelReplica.generate`:
- input: a `GenerationRequest` whose `prompt_ids` are already tokenized and length-checked;
- output: `TokenChunk`s, one per engine step that produced tokens for this request (the engine merges
  steps when the consumer falls behind, so a slow path downstream receives fewer, larger chunks);
  the first chunk carries `num_prompt_tokens`, `queue_ms` and `prefill_ms`; the last carries
  `finish_reason` ("stop" on EOS, "length" at `max_tokens`);
- closing the stream early (client gone, stop string matched, timeout) aborts the request in the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from pathlib import Path
from typing import AsyncIterator

from ray import serve

from serve_app.autoscaling import ReplicaLatencyStats
from serve_app.config import AppConfig, EngineConfig
from serve_app.cpu_isolation import engine_cores_from_env, engine_spawn_affinity
from serve_app.engine_dtype import choose_dtype, read_checkpoint_dtype, read_cpuinfo
from serve_app.errors import ServeAppError
from serve_app.models import resolve_model_path
from serve_app.protocol import GenerationRequest, TokenChunk

logger = logging.getLogger("ray.serve")


def engine_environment(engine: EngineConfig) -> dict[str, str]:
    """Environment variables vLLM reads at start-up (CPU backend settings), derived from config."""
    env = {"VLLM_CPU_KVCACHE_SPACE": f"{engine.cpu_kvcache_space_gib:g}"}
    if engine.cpu_omp_threads_bind:
        env["VLLM_CPU_OMP_THREADS_BIND"] = engine.cpu_omp_threads_bind
    return env


def eos_token_ids(model_path: str) -> list[int]:
    """EOS ids from the checkpoint's generation/model config (the engine has no tokenizer to ask)."""
    ids: list[int] = []
    for name in ("generation_config.json", "config.json"):
        path = Path(model_path) / name
        if not path.exists():
            continue
        value = json.loads(path.read_text()).get("eos_token_id")
        ids.extend(value if isinstance(value, list) else [value] if value is not None else [])
    return sorted(set(ids))


class SchedulerLoad:
    """Latest scheduler counts, written by the engine's stat-logger hook on every step."""

    def __init__(self) -> None:
        self.num_running = 0
        self.num_waiting = 0

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

            def log_engine_initialized(self):
                pass

        return _LoadLogger


class ModelReplica:
    """One model replica (possibly sharded over tensor/pipeline-parallel workers)."""

    def __init__(self, config: AppConfig):
        for key, value in engine_environment(config.engine).items():
            os.environ.setdefault(key, value)
        engine_cpus = engine_cores_from_env()
        if engine_cpus:
            os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", ",".join(map(str, engine_cpus)))
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM
        self._config = config
        self._model_path = resolve_model_path(config.model)
        engine = config.engine
        dtype = choose_dtype(engine.dtype, on_gpu=bool(config.model_deployment.num_gpus), cpu_flags=read_cpuinfo()[1],
                             checkpoint=read_checkpoint_dtype(self._model_path))
        args = AsyncEngineArgs(
            model=self._model_path,
            served_model_name=config.model.resolved_name(),
            skip_tokenizer_init=True,
            tensor_parallel_size=engine.tensor_parallel_size,
            pipeline_parallel_size=engine.pipeline_parallel_size,
            quantization=engine.quantization,
            dtype=dtype,
            max_model_len=engine.max_model_len,
            max_num_seqs=engine.max_num_seqs,
            max_num_batched_tokens=engine.max_num_batched_tokens,
            enforce_eager=engine.enforce_eager,
            seed=engine.seed,
            gpu_memory_utilization=engine.gpu_memory_utilization,
            # Inside a Serve replica vLLM would pick its Ray executor (it sees a placement group); that
            # executor is for sharding across nodes and is unsupported on CPU. Local processes otherwise.
            distributed_executor_backend=engine.distributed_executor_backend or ("mp" if engine.num_workers > 1 else None),
            disable_log_stats=False,
            **engine.extra_engine_args,
        )
        self._load = SchedulerLoad()
        with engine_spawn_affinity(engine_cpus):  # the engine process inherits its compute cores
            self._engine = AsyncLLM.from_engine_args(args, stat_loggers=[self._load.stat_logger_factory()])
        model_config = self._engine.model_config
        self._vocab_size = model_config.get_vocab_size()
        self._max_model_len = model_config.max_model_len
        self._eos_ids = eos_token_ids(self._model_path)
        self._latency = ReplicaLatencyStats(window_s=config.model_deployment.latency_targets.window_s)
        self._num_active = 0
        logger.info("Model replica ready: %s (dtype %s from %r, max_model_len=%d)", self._model_path, dtype,
                    engine.dtype, self._max_model_len)

    def _sampling_params(self, request: GenerationRequest):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        opts = request.sampling
        return SamplingParams(
            max_tokens=opts.max_tokens,
            temperature=opts.temperature,
            top_p=opts.top_p,
            seed=opts.seed,
            presence_penalty=opts.presence_penalty,
            frequency_penalty=opts.frequency_penalty,
            ignore_eos=opts.ignore_eos,
            stop_token_ids=[] if opts.ignore_eos else self._eos_ids,
            detokenize=False,
            output_kind=RequestOutputKind.DELTA,
        )

    def _check_prompt(self, prompt_ids: list[int]) -> None:
        if not prompt_ids:
            raise ServeAppError("prompt must contain at least one token", param="prompt")
        if min(prompt_ids) < 0 or max(prompt_ids) >= self._vocab_size:
            raise ServeAppError(f"token ids must be in [0, {self._vocab_size})", param="prompt")
        if len(prompt_ids) >= self._max_model_len:
            raise ServeAppError(
                f"prompt has {len(prompt_ids)} tokens; the context is {self._max_model_len}",
                param="messages",
                code="context_length_exceeded",
            )

    async def generate(self, request: GenerationRequest) -> AsyncIterator[TokenChunk]:
        from vllm.inputs import TokensPrompt

        self._check_prompt(request.prompt_ids)
        params = self._sampling_params(request)
        start_s = time.perf_counter()
        first_token_s = last_token_s = None
        num_tokens = 0
        finished = False
        self._num_active += 1
        stream = self._engine.generate(TokensPrompt(prompt_token_ids=request.prompt_ids), params, request.request_id)
        try:
            async with contextlib.aclosing(stream):
                async for output in stream:
                    completion = output.outputs[0]
                    chunk = TokenChunk(token_ids=list(completion.token_ids))
                    num_tokens += len(chunk.token_ids)
                    now_s = time.perf_counter()
                    if first_token_s is None and chunk.token_ids:
                        first_token_s = now_s
                        chunk.num_prompt_tokens = len(request.prompt_ids)
                        chunk.queue_ms, chunk.prefill_ms = _engine_phase_ms(output.metrics)
                        self._latency.record_ttft_ms((now_s - start_s) * 1000.0, time.monotonic())
                    last_token_s = now_s
                    if output.finished:
                        chunk.finish_reason = completion.finish_reason or "stop"
                        finished = True
                    yield chunk
        finally:
            self._num_active -= 1
            if not finished:
                # Client gone, stop string matched or timeout: free the engine slot now.
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._engine.abort(request.request_id))
            if first_token_s is not None and num_tokens > 1:
                tpot_ms = (last_token_s - first_token_s) * 1000.0 / (num_tokens - 1)
                self._latency.record_tpot_ms(tpot_ms, time.monotonic())

    def engine_stats(self) -> dict[str, float]:
        # The frontend's unfinished count is exact at any moment; the scheduler's waiting count arrives
        # with engine steps, so it is clamped to it (with nothing unfinished there is no next step).
        num_unfinished = self._engine.output_processor.get_num_unfinished_requests()
        num_waiting = min(self._load.num_waiting, num_unfinished)
        return {
            "num_running": num_unfinished - num_waiting,
            "num_waiting": num_waiting,
            "num_unfinished": num_unfinished,
            "num_active_streams": self._num_active,
            "is_healthy": 0 if self._engine.errored else 1,
        }

    def model_info(self) -> dict[str, int]:
        return {"max_model_len": self._max_model_len, "vocab_size": self._vocab_size}

    async def check_health(self) -> None:
        """Called by Ray Serve periodically: a dead engine fails it, and Serve replaces the replica."""
        await self._engine.check_health()

    def record_autoscaling_stats(self) -> dict[str, float]:
        stats = self.engine_stats()
        self._latency.set_load(num_running=stats["num_running"], num_waiting=stats["num_waiting"])
        return self._latency.snapshot(time.monotonic())

    def __del__(self):
        engine = getattr(self, "_engine", None)
        if engine is not None:
            with contextlib.suppress(Exception):
                engine.shutdown()


def _engine_phase_ms(metrics) -> tuple[float | None, float | None]:
    """Queue wait and prefill time from the engine core's (monotonic) timestamps, when it reports them."""
    if metrics is None or not getattr(metrics, "scheduled_ts", 0) or not getattr(metrics, "first_token_ts", 0):
        return None, None
    queue_ms = max(0.0, (metrics.scheduled_ts - metrics.queued_ts) * 1000.0)
    prefill_ms = max(0.0, (metrics.first_token_ts - metrics.scheduled_ts) * 1000.0)
    return queue_ms, prefill_ms


ModelReplicaDeployment = serve.deployment(ModelReplica, name="ModelReplica")
