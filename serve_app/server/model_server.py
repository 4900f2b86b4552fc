"""The model server: one vLLM engine (continuous batching, TP/PP shards, quantized checkpoints) behind vLLM's
own OpenAI frontend, in one process.

Streaming contract of `ModelServer.generate(request)`:
- input: a `ServerRequest` (serve_app/api/protocol.py) whose body is the client's checked JSON object; `generate`
  first validates it into vLLM's request type (chat, completion or Responses), a bad one answered as below;
- output: either one `WholeResponse` (a non-streamed answer, or an error before the first byte, with its HTTP
  status), or a stream of `Frame`s already encoded for the client's wire format (SSE or msgpack): one per
  engine step that produced output for the request, nothing held back on a timer; the final usage chunk
  carries serve_app's per-stage `timings`, and chat/completion streams end with the done marker;
- an error after the first byte arrives as an error frame followed by the done marker;
- closing the stream early (client gone, timeout) aborts the request in the engine.

Engine deaths are contained here (`engine.restart_in_place`): the server notices a dead engine (a failed request,
its watchdog or Serve's health check), builds a new one in the same replica while new requests wait for it,
retries once every request that had produced no output yet, and refuses for a while a request that was running at
two deaths (serve_app/server/quarantine.py). Streams that had started end with an error event and the done marker.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, AsyncIterator

from serve_app.autoscaling.window import ReplicaLatencyStats
from serve_app.config import AppConfig
from serve_app.platform.cpu_isolation import engine_spawn_affinity
from serve_app.api.errors import ServeAppError
from serve_app.api.framing import done_marker, final_error_events
from serve_app.api.protocol import EngineStats, Frame, RequestOutcome, ServerRequest, WholeResponse
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
from serve_app.server.quarantine import Quarantine, request_fingerprint
from serve_app.server.response_stream import StreamReframer, openai_error
from serve_app.server.timings import request_timings

logger = logging.getLogger("ray.serve")


class _EngineDiedBeforeOutput(Exception):
    """The engine died while a request had produced no output (internal: the request is retried once)."""


# How often the watchdog looks for a dead engine that no request has noticed (s).
_WATCHDOG_PERIOD_S = 1.0
# A request with no output yet, in the engine for less than this when its death was noticed, is not a suspect for
# the quarantine (s): it most likely arrived as the engine died.
_SUSPECT_MIN_AGE_S = 0.05


class ModelServer:
    """vLLM engine + vLLM's OpenAI serving layer. Call `await start()` once before `generate`."""

    def __init__(self, config: AppConfig):
        for key, value in engine_environment(config.engine).items():
            os.environ.setdefault(key, value)
        engine_cpus = config.engine.engine_cpus
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.entrypoints.launchers.cli_args import FrontendArgs

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
        self._engine_cpus = engine_cpus
        self._engine = self._make_engine()
        self._observed_engine = ObservedEngine(self._engine)
        self._state: Any = None
        # Containment (module docstring). A restarted engine is built on this one long-lived thread: the engine
        # process's parent-death signal (engine_guard.py) fires when the thread that spawned it exits.
        self._restart_in_place = config.engine.restart_in_place
        self._quarantine = Quarantine(quarantine_s=config.engine.poison_quarantine_s)
        # id(RequestStats) -> (fingerprint, its RequestStats) of each request in the engine
        self._in_flight: dict[int, tuple[str, RequestStats]] = {}
        self._engine_ready = asyncio.Event()
        self._generation = 0  # engines started in this replica, minus one
        self._restart_task: asyncio.Task | None = None
        self._restart_failed = False
        self._engine_starter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine-start")
        self._watchdog_task: asyncio.Task | None = None
        self._wait_for_engine_s = float(config.admission.request_timeout_s)
        self._metrics_task = None
        self._adapters = AdapterCache(config.model.adapters, config.model.max_loaded_adapters)
        self._latency = ReplicaLatencyStats(window_s=config.model_deployment.latency_targets.window_s)
        self._num_active = 0
        self.max_model_len = self._engine.model_config.max_model_len
        logger.info("Model server ready: %s (dtype %s from %r, max_model_len=%d)", model_path,
                    self._engine_args.dtype, config.engine.dtype, self.max_model_len)

    def _make_engine(self) -> Any:
        from vllm.v1.engine.async_llm import AsyncLLM

        with engine_spawn_affinity(self._engine_cpus):  # the engine process inherits its compute cores
            return AsyncLLM.from_engine_args(self._engine_args, stat_loggers=[self._load.stat_logger_factory()])

    async def start(self) -> None:
        await self._bind_engine()
        self._metrics_task = ReplicaEngineMetrics.start(
            self.model_name, self.engine_stats, self._config.model_deployment.latency_targets.report_interval_s)
        if self._restart_in_place:
            self._watchdog_task = asyncio.create_task(self._watch_engine())

    async def _bind_engine(self) -> None:
        """vLLM's serving layer around the current engine; requests waiting for an engine go on after this."""
        self._observed_engine = ObservedEngine(self._engine)
        self._state = await build_serving_state(self._observed_engine, self._engine_args, self._frontend_args)
        self._adapters.bind(self._state)  # a new engine holds no adapter: they load again on first use
        self._engine_ready.set()

    # ------------------------------------------------------------------ containment of engine deaths

    def _note_engine_death(self, generation: int) -> None:
        """Once per dead engine: quarantine bookkeeping, then a new engine in the background."""
        if not self._restart_in_place or generation != self._generation or self._restart_task is not None:
            return
        # Suspects: requests the engine was running: it had produced output for them, or had them for a moment at
        # least (a request that reached it as it died never ran there).
        noticed_s = time.monotonic()
        fingerprints = {fingerprint for fingerprint, stats in self._in_flight.values()
                        if stats.first_token_s is not None or noticed_s - stats.start_s >= _SUSPECT_MIN_AGE_S}
        newly = self._quarantine.record_death(fingerprints, noticed_s)
        logger.error("The model engine died with %d request(s) in flight; %s", len(fingerprints),
                     f"quarantined {len(newly)} request fingerprint(s) present at two deaths" if newly
                     else "restarting it in place")
        self._engine_ready.clear()
        self._restart_task = asyncio.create_task(self._restart_engine())

    async def _restart_engine(self) -> None:
        start_s = time.monotonic()
        with contextlib.suppress(Exception):
            self._engine.shutdown()
        try:
            self._engine = await asyncio.get_running_loop().run_in_executor(self._engine_starter, self._make_engine)
            self._generation += 1
            await self._bind_engine()
        except Exception:
            logger.exception("The model engine could not be restarted; the replica reports unhealthy")
            self._restart_failed = True
            return
        finally:
            self._restart_task = None
        logger.warning("Model engine restarted in place in %.1f s", time.monotonic() - start_s)

    async def _watch_engine(self) -> None:
        """Notices a dead engine that no request has noticed (it died idle, or between steps)."""
        while True:
            await asyncio.sleep(_WATCHDOG_PERIOD_S)
            if self._engine_ready.is_set() and self._engine.errored:
                self._note_engine_death(self._generation)

    def _quarantine_refusal(self, fingerprint: str) -> WholeResponse | None:
        remaining_s = self._quarantine.remaining_s(fingerprint, time.monotonic())
        if remaining_s is None:
            return None
        error = ServeAppError(
            f"This request was running each time the model engine failed ({self._quarantine.max_deaths} times); "
            f"identical requests are refused for another {remaining_s:.0f} s. Change the request or retry later.",
            status_code=400, code="request_quarantined", headers={"Retry-After": str(int(remaining_s) + 1)})
        return WholeResponse.from_error(error)

    async def _wait_for_engine(self) -> WholeResponse | None:
        """Wait while a new engine starts; an answer to give instead when it takes longer than a request may."""
        if self._engine_ready.is_set():
            return None
        try:
            await asyncio.wait_for(self._engine_ready.wait(), timeout=self._wait_for_engine_s)
            return None
        except asyncio.TimeoutError:
            error = ServeAppError("The model engine is restarting; retry the request.", status_code=503,
                                  type="server_error", code="engine_restarting", headers={"Retry-After": "10"})
            return WholeResponse.from_error(error)

    # ------------------------------------------------------------------ requests

    async def generate(self, request: ServerRequest) -> AsyncIterator[Frame | WholeResponse]:
        checked_json = request.body
        try:  # the ingress checked the JSON; vLLM's request type validates it here, before the first byte
            request = dataclasses.replace(request, body=ENDPOINTS[request.endpoint].validate(request))
        except ServeAppError as error:
            yield WholeResponse.from_error(error)
            return
        fingerprint = request_fingerprint(request.endpoint, checked_json if isinstance(checked_json, dict)
                                          else checked_json.model_dump(exclude_unset=True))
        for attempt in (1, 2):  # a request the engine died under before its first output is retried once
            refusal = self._quarantine_refusal(fingerprint) or await self._wait_for_engine()
            if refusal is not None:
                yield refusal
                return
            generation = self._generation
            try:
                async for item in self._generate_once(request, fingerprint, generation):
                    yield item
                return
            except _EngineDiedBeforeOutput:
                self._note_engine_death(generation)
                if attempt == 2 or not self._restart_in_place:
                    refusal = self._quarantine_refusal(fingerprint)
                    if refusal is None:
                        error = ServeAppError("The model engine failed; retry the request.", status_code=503,
                                              type="server_error", code="engine_error", headers={"Retry-After": "10"})
                        refusal = WholeResponse.from_error(error)
                    yield refusal
                    return
                logger.warning("Request %s: the engine died before its first output; retrying it once",
                               request.request_id)

    def _engine_died(self, generation: int) -> bool:
        return generation != self._generation or self._engine.errored

    async def _generate_once(self, request: ServerRequest, fingerprint: str,
                             generation: int) -> AsyncIterator[Frame | WholeResponse]:
        if self._engine_died(generation):
            # It arrived after the death: it never ran there, so it is no suspect (the quarantine counts only
            # requests the dead engine was running), and it waits for the new engine.
            raise _EngineDiedBeforeOutput()
        endpoint = ENDPOINTS[request.endpoint]
        stats = RequestStats()  # its start (time.monotonic()) and start_wall_s are one moment on two clocks
        start_wall_s = time.time()
        self._num_active += 1
        self._in_flight[id(stats)] = (fingerprint, stats)
        token = current_request_stats.set(stats)
        try:
            try:
                if getattr(request.body, "model", None) in self._adapters:
                    await self._adapters.ensure_loaded(request.body.model)
                result = await endpoint.call(self._state, request.body)
            except ServeAppError as error:
                yield WholeResponse.from_error(error)
                return
            except Exception as exc:  # vLLM raises request errors (bad values, too long) as exceptions
                if self._engine_died(generation):
                    raise _EngineDiedBeforeOutput() from exc
                status, body = openai_error(error_from_exception(exc))
                yield WholeResponse(status, body)
                return
            finally:
                current_request_stats.reset(token)
            if is_error_response(result):
                if self._engine_died(generation):
                    raise _EngineDiedBeforeOutput()
                status, body = openai_error(error_from_response(result))
                yield WholeResponse(status, body)
                return
            if not hasattr(result, "__aiter__"):
                body = dump(result)
                body["timings"] = timings_ms = self._timings(request, stats, start_wall_s)  # serve_app extension
                yield WholeResponse(200, body, replica=self.replica_id,
                                    outcome=RequestOutcome.of_usage(body.get("usage"), timings_ms))
                return
            async for frame in self._frames(result, request, stats, start_wall_s, generation):
                yield frame
        finally:
            if self._engine_died(generation):  # before leaving the in-flight set: the death's snapshot holds it
                self._note_engine_death(generation)
            self._in_flight.pop(id(stats), None)
            self._num_active -= 1
            if stats.ttft_ms is not None:
                self._latency.record_ttft_ms(stats.ttft_ms, time.monotonic())
            if stats.tpot_ms is not None:
                self._latency.record_tpot_ms(stats.tpot_ms, time.monotonic())

    async def _frames(self, events: AsyncIterator[Any], request: ServerRequest, stats: RequestStats,
                      start_wall_s: float, generation: int) -> AsyncIterator[Frame]:
        reframer = StreamReframer(request.wire)
        num_sent_tokens = 0
        num_frames = 0
        done = False
        first_output_s = None  # time.monotonic() of the first frame that carries output

        def timings() -> dict[str, float]:
            return self._timings(request, stats, start_wall_s, first_output_s)

        def outcome() -> RequestOutcome:
            return RequestOutcome(stats.num_prompt_tokens, stats.num_output_tokens, timings())

        try:
            async with contextlib.aclosing(events):
                async for event in events:
                    if not isinstance(event, str):  # Responses API events are objects
                        event = responses_event_to_sse(event)
                    data, error, has_output = reframer.reframe(event, timings)
                    if error is not None and num_frames == 0 and self._engine_died(generation):
                        raise _EngineDiedBeforeOutput()
                    num_frames += 1
                    if has_output and first_output_s is None:
                        first_output_s = time.monotonic()
                    num_new = stats.num_output_tokens - num_sent_tokens
                    num_sent_tokens = stats.num_output_tokens
                    done = data == done_marker(request.wire)
                    yield Frame(data, num_tokens=num_new, has_output=has_output, is_final=done, error=error,
                                outcome=outcome() if done else None)
            if not done and num_frames and error is None:  # a stream with no done marker (Responses API events)
                yield Frame("", is_final=True, outcome=outcome())
        except _EngineDiedBeforeOutput:
            raise
        except Exception as exc:  # the engine died mid-stream: end the stream with an error event
            if done:
                raise
            if num_frames == 0 and self._engine_died(generation):
                raise _EngineDiedBeforeOutput() from exc
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

    def engine_stats(self) -> EngineStats:
        # The frontend's unfinished count is exact at any moment; the scheduler's waiting count arrives with
        # engine steps, so it is clamped to it (with nothing unfinished there is no next step).
        num_unfinished = self._engine.output_processor.get_num_unfinished_requests()
        num_waiting = min(self._load.num_waiting, num_unfinished)
        load = self._load
        return EngineStats(
            num_running=num_unfinished - num_waiting, num_waiting=num_waiting, num_unfinished=num_unfinished,
            num_active_streams=self._num_active,
            is_healthy=not self._engine.errored and self._engine_ready.is_set(),
            spec_drafts=load.spec_drafts, spec_draft_tokens=load.spec_draft_tokens,
            spec_accepted_tokens=load.spec_accepted_tokens,
            prefix_cache_queries=load.prefix_cache_queries, prefix_cache_hits=load.prefix_cache_hits)

    async def check_health(self) -> None:
        """A dead engine fails it (Ray Serve then replaces the replica), unless it is being restarted in place."""
        if self._restart_failed or not self._restart_in_place:
            await self._engine.check_health()
            return
        if not self._engine_ready.is_set():
            return  # a new engine is starting in this replica
        if self._engine.errored:
            self._note_engine_death(self._generation)
            return
        await self._engine.check_health()

    def autoscaling_stats(self) -> dict[str, float]:
        stats = self.engine_stats()
        self._latency.set_load(num_running=stats.num_running, num_waiting=stats.num_waiting)
        return self._latency.snapshot(time.monotonic())

    def shutdown(self) -> None:
        for task in (self._metrics_task, self._watchdog_task, self._restart_task):
            if task is not None:
                task.cancel()
        self._engine_starter.shutdown(wait=False)
        with contextlib.suppress(Exception):
            self._engine.shutdown()
