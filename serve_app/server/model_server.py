"""The model server: one vLLM engine (continuous batching, TP/PP shards, quantized checkpoints) behind vLLM's
own OpenAI frontend, in one process.

Streaming contract of `ModelServer.generate(request)`:
- input: a `ServerRequest` whose body is a validated vLLM request object (chat, completion or Responses);
- output: either one `WholeResponse` (a non-streamed answer, or an error before the first byte, with its HTTP
  status), or a stream of `Frame`s already encoded for the client's wire format (SSE or msgpack): one per
  engine step that produced output for the request, nothing held back on a timer; the final usage chunk
  carries serve_app's per-stage `timings`, and chat/completion streams end with the done marker;
- an error after the first byte arrives as an error frame followed by the done marker;
- closing the stream early (client gone, timeout) aborts the request in the engine.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

from serve_app.autoscaling.window import ReplicaLatencyStats
from serve_app.config import AppConfig
from serve_app.platform.cpu_isolation import engine_spawn_affinity
from serve_app.api.errors import ServeAppError
from serve_app.api.framing import WireFormat, done_marker, final_error_events
from serve_app.platform.models import resolve_model_path
from serve_app.platform.ray_env import replica_context
from serve_app.server.engine_args import engine_environment, engine_kwargs, frontend_kwargs
from serve_app.server.adapters import AdapterCache
from serve_app.server.replica_metrics import ReplicaEngineMetrics
from serve_app.server.engine_guard import ENGINE_GUARD_ENV
from serve_app.server.engine_observer import ObservedEngine, RequestStats, SchedulerLoad, current_request_stats
from serve_app.server.openai_frontend import (
    ENDPOINTS,
    build_serving_state,
    dump,
    error_from_exception,
    error_from_response,
    is_error_response,
    responses_event_to_sse,
)
from serve_app.server.response_stream import Frame, StreamReframer, openai_error
from serve_app.server.timings import request_timings

logger = logging.getLogger("ray.serve")


@dataclass(slots=True)
class ServerRequest:
    """One request as the ingress hands it to a model server."""

    endpoint: str  # a key of openai_frontend.ENDPOINTS
    body: Any  # the validated vLLM request object
    request_id: str
    wire: WireFormat = "sse"
    handoff_time_s: float = 0.0  # time.time() when the ingress called the model server (0: unknown)
    timings_ms: dict[str, float] = field(default_factory=dict)  # the ingress's stages (serve_app/server/timings.py)


@dataclass(slots=True)
class WholeResponse:
    """A non-streamed answer or an error before the first byte."""

    status_code: int
    body: dict[str, Any]
    replica: str | None = None  # the model server replica that answered (the x-serve-app-replica header)


class ModelServer:
    """vLLM engine + vLLM's OpenAI serving layer. Call `await start()` once before `generate`."""

    def __init__(self, config: AppConfig):
        for key, value in engine_environment(config.engine).items():
            os.environ.setdefault(key, value)
        engine_cpus = config.engine.engine_cpus
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.entrypoints.launchers.cli_args import FrontendArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        from serve_app.server.vllm_patches import apply_frontend_patches

        apply_frontend_patches()  # every patch's version gate first: a stale patch stops the replica here, by name
        self._config = config
        self.model_name = config.model.resolved_name()
        context = replica_context()
        self.replica_id = context.replica_id.unique_id if context is not None else None
        model_path = resolve_model_path(config.model)
        self._engine_args = AsyncEngineArgs(**engine_kwargs(config, model_path))
        self._frontend_args = FrontendArgs(**frontend_kwargs(config))
        self._load = SchedulerLoad()
        # The engine process (and its workers) die with this replica, however it stops (engine_guard.py).
        os.environ[ENGINE_GUARD_ENV] = str(os.getpid())
        with engine_spawn_affinity(engine_cpus):  # the engine process inherits its compute cores
            self._engine = AsyncLLM.from_engine_args(self._engine_args, stat_loggers=[self._load.stat_logger_factory()])
        self._observed_engine = ObservedEngine(self._engine)
        self._state: Any = None
        self._metrics_task = None
        self._adapters = AdapterCache(config.model.adapters, config.model.max_loaded_adapters)
        self._latency = ReplicaLatencyStats(window_s=config.model_deployment.latency_targets.window_s)
        self._num_active = 0
        self.max_model_len = self._engine.model_config.max_model_len
        logger.info("Model server ready: %s (dtype %s from %r, max_model_len=%d)", model_path,
                    self._engine_args.dtype, config.engine.dtype, self.max_model_len)

    async def start(self) -> None:
        self._state = await build_serving_state(self._observed_engine, self._engine_args, self._frontend_args)
        self._adapters.bind(self._state)
        self._metrics_task = ReplicaEngineMetrics.start(
            self.model_name, self.engine_stats, self._config.model_deployment.latency_targets.report_interval_s)

    async def generate(self, request: ServerRequest) -> AsyncIterator[Frame | WholeResponse]:
        endpoint = ENDPOINTS[request.endpoint]
        stats = RequestStats()  # its start (time.monotonic()) and start_wall_s are one moment on two clocks
        start_wall_s = time.time()
        self._num_active += 1
        token = current_request_stats.set(stats)
        try:
            try:
                if getattr(request.body, "model", None) in self._adapters:
                    await self._adapters.ensure_loaded(request.body.model)
                result = await endpoint.call(self._state, request.body)
            except ServeAppError as error:
                yield WholeResponse(error.status_code, error.to_body())
                return
            except Exception as exc:  # vLLM raises request errors (bad values, too long) as exceptions
                status, body = openai_error(error_from_exception(exc))
                yield WholeResponse(status, body)
                return
            finally:
                current_request_stats.reset(token)
            if is_error_response(result):
                status, body = openai_error(error_from_response(result))
                yield WholeResponse(status, body)
                return
            if not hasattr(result, "__aiter__"):
                body = dump(result)
                body["timings"] = self._timings(request, stats, start_wall_s)  # serve_app extension
                yield WholeResponse(200, body, replica=self.replica_id)
                return
            async for frame in self._frames(result, request, stats, start_wall_s):
                yield frame
        finally:
            self._num_active -= 1
            if stats.ttft_ms is not None:
                self._latency.record_ttft_ms(stats.ttft_ms, time.monotonic())
            if stats.tpot_ms is not None:
                self._latency.record_tpot_ms(stats.tpot_ms, time.monotonic())

    async def _frames(self, events: AsyncIterator[Any], request: ServerRequest, stats: RequestStats,
                      start_wall_s: float) -> AsyncIterator[Frame]:
        reframer = StreamReframer(request.wire)
        num_sent_tokens = 0
        done = False
        first_output_s = None  # time.monotonic() of the first frame that carries output

        def timings() -> dict[str, float]:
            return self._timings(request, stats, start_wall_s, first_output_s)

        try:
            async with contextlib.aclosing(events):
                async for event in events:
                    if not isinstance(event, str):  # Responses API events are objects
                        event = responses_event_to_sse(event)
                    data, error, has_output = reframer.reframe(event, timings)
                    if has_output and first_output_s is None:
                        first_output_s = time.monotonic()
                    num_new = stats.num_output_tokens - num_sent_tokens
                    num_sent_tokens = stats.num_output_tokens
                    done = data == done_marker(request.wire)
                    yield Frame(data, num_tokens=num_new, has_output=has_output, is_final=done, error=error,
                                timings=timings() if done else None)
        except Exception as exc:  # the engine died mid-stream: end the stream with an error event
            if done:
                raise
            logger.warning("Stream %s failed: %s", request.request_id, type(exc).__name__)
            error = {"message": "The model engine failed while streaming; retry the request.",
                     "type": "server_error", "param": None, "code": "engine_error"}
            yield Frame(final_error_events(error, request.wire), error=error, is_final=True)

    def _timings(self, request: ServerRequest, stats: RequestStats, start_wall_s: float,
                 first_output_s: float | None = None) -> dict[str, float]:
        """serve_app/server/timings.py; `first_output_s`: time.monotonic() of a stream's first output frame."""
        output_ms = decode_ms = None
        if stats.first_token_s is not None:
            decode_ms = (stats.last_token_s - stats.first_token_s) * 1000.0
            if first_output_s is not None:
                output_ms = (first_output_s - stats.first_token_s) * 1000.0
        return request_timings(request.timings_ms, request.handoff_time_s or None, start_wall_s, stats.ttft_ms,
                               stats.queue_ms, stats.prefill_ms, output_ms, decode_ms)

    def engine_stats(self) -> dict[str, float]:
        # The frontend's unfinished count is exact at any moment; the scheduler's waiting count arrives with
        # engine steps, so it is clamped to it (with nothing unfinished there is no next step).
        num_unfinished = self._engine.output_processor.get_num_unfinished_requests()
        num_waiting = min(self._load.num_waiting, num_unfinished)
        return {
            "num_running": num_unfinished - num_waiting,
            "num_waiting": num_waiting,
            "num_unfinished": num_unfinished,
            "num_active_streams": self._num_active,
            "is_healthy": 0 if self._engine.errored else 1,
            "spec_drafts": self._load.spec_drafts,
            "spec_draft_tokens": self._load.spec_draft_tokens,
            "spec_accepted_tokens": self._load.spec_accepted_tokens,
            "prefix_cache_queries": self._load.prefix_cache_queries,
            "prefix_cache_hits": self._load.prefix_cache_hits,
        }

    async def check_health(self) -> None:
        """A dead engine fails it (Ray Serve then replaces the replica)."""
        await self._engine.check_health()

    def autoscaling_stats(self) -> dict[str, float]:
        stats = self.engine_stats()
        self._latency.set_load(num_running=stats["num_running"], num_waiting=stats["num_waiting"])
        return self._latency.snapshot(time.monotonic())

    def shutdown(self) -> None:
        if self._metrics_task is not None:
            self._metrics_task.cancel()
        with contextlib.suppress(Exception):
            self._engine.shutdown()
