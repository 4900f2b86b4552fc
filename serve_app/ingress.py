"""HTTP ingress (OpenAI-compatible): parse, authenticate, admit, then compose the graph's handles.

Bad or excess requests are answered before the first byte with an OpenAI-style error and the right
status. Once a stream has started, an error travels as a final `{"error": ...}` event and the stream
still ends with its done marker.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from ray import serve

from serve_app.admission import AdmissionController
from serve_app.auth import ApiKeyAuth
from serve_app.config import AppConfig
from serve_app.errors import ServeAppError, error_body, find_serve_app_error
from serve_app.framing import (
    MSGPACK_CONTENT_TYPE,
    SSE_CONTENT_TYPE,
    ChunkBuilder,
    choose_wire_format,
    compact_json,
    done_marker,
    encode,
    maybe_gzip,
)
from serve_app.metrics import IngressMetrics
from serve_app.openapi import json_body
from serve_app.protocol import ChatCompletionRequest, CompletionRequest, GenerationRequest, SamplingOptions
from serve_app.request_parsing import parse_body, read_body

logger = logging.getLogger("ray.serve")
REQUEST_ID_HEADER = "x-request-id"

app = FastAPI(title="serve_app", description="OpenAI-compatible LLM serving on Ray Serve", version="0.1.0")


def _request_id(request: Request) -> str:
    existing = getattr(request.state, "request_id", None)
    if existing is None:
        existing = f"req-{uuid.uuid4().hex}"
        request.state.request_id = existing
    return existing


@app.middleware("http")
async def add_request_id(request: Request, call_next):
    request_id = _request_id(request)
    try:
        response = await call_next(request)
    except Exception as exc:  # noqa: BLE001 - whatever a route did not anticipate is still an OpenAI error
        logger.exception("Unhandled error in %s %s (request %s)", request.method, request.url.path, request_id)
        return JSONResponse(
            error_body(f"Internal server error ({type(exc).__name__}); request id {request_id}",
                       type="server_error", code="internal_error"),
            status_code=500, headers={REQUEST_ID_HEADER: request_id})
    response.headers.setdefault(REQUEST_ID_HEADER, request_id)
    return response


def _error_response(error: ServeAppError, request_id: str) -> JSONResponse:
    return JSONResponse(
        error.to_body(), status_code=error.status_code, headers={REQUEST_ID_HEADER: request_id, **error.headers}
    )


class _Once:
    """Calls `fn` once: at hand-over to a stream, the stream's end releases; otherwise the request's end does."""

    def __init__(self, fn):
        self._fn = fn
        self._done = False
        self._handed_over = False

    def hand_over(self) -> None:
        self._handed_over = True

    def unless_handed_over(self) -> None:
        if not self._handed_over:
            self()

    def __call__(self) -> None:
        if not self._done:
            self._done = True
            self._fn()


def _error_frame(generation: GenerationRequest, wire: str, message: str, type: str, code: str) -> str | bytes:
    """A final error event (and the done marker) for a stream that has already started."""
    builder = ChunkBuilder(generation.request_id, generation.model_name, generation.created_s, generation.endpoint)
    return encode(builder.error(message, type=type, code=code), wire) + done_marker(wire)


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else ""


@serve.ingress(app)
class Ingress:
    def __init__(self, config: AppConfig, tokenizer_handle, streamer_handle, model_handle):
        self._config = config
        self._model_name = config.model.resolved_name()
        self._tokenizer = tokenizer_handle
        self._streamer = streamer_handle
        self._model = model_handle
        self._admission = AdmissionController(config.admission.max_in_flight_requests, config.admission.retry_after_s)
        self._auth = ApiKeyAuth.from_config(config.auth)
        self._metrics = IngressMetrics()
        self._created_s = int(time.time())

    # ------------------------------------------------------------------ public routes

    @app.get("/health")
    async def health(self) -> Response:
        try:
            stats = await asyncio.wait_for(self._model.engine_stats.remote(), timeout=5.0)
            healthy = bool(stats.get("is_healthy"))
        except Exception as exc:
            logger.warning("Health check failed: %s", type(exc).__name__)
            healthy = False
        self._metrics.engine_healthy.set(1 if healthy else 0)
        if healthy:
            return JSONResponse({"status": "ok"})
        return JSONResponse(error_body("The model engine is not available.", type="server_error", code="engine_unavailable"), status_code=503)

    @app.get("/metrics")
    async def metrics(self, request: Request) -> Response:
        if self._auth is not None and self._config.auth.metrics_require_auth:
            try:
                self._auth.authenticate(request.headers.get("authorization"))
            except ServeAppError as error:
                return _error_response(error, _request_id(request))
        try:
            stats = await asyncio.wait_for(self._model.engine_stats.remote(), timeout=15.0)
            self._metrics.engine_running.set(stats["num_running"])
            self._metrics.engine_waiting.set(stats["num_waiting"])
            self._metrics.engine_healthy.set(stats["is_healthy"])
        except Exception:
            self._metrics.engine_healthy.set(0)
        self._metrics.in_flight.set(self._admission.num_in_flight)
        return Response(self._metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def list_models(self, request: Request) -> Response:
        request_id = _request_id(request)
        try:
            self._authenticate(request)
        except ServeAppError as error:
            return _error_response(error, request_id)
        data = [{"id": self._model_name, "object": "model", "created": self._created_s, "owned_by": "serve_app"}]
        return JSONResponse({"object": "list", "data": data}, headers={REQUEST_ID_HEADER: request_id})

    @app.post("/v1/chat/completions", openapi_extra=json_body(ChatCompletionRequest))
    async def chat_completions(self, request: Request) -> Response:
        return await self._serve(request, ChatCompletionRequest, "chat")

    @app.post("/v1/completions", openapi_extra=json_body(CompletionRequest))
    async def completions(self, request: Request) -> Response:
        return await self._serve(request, CompletionRequest, "completion")

    @app.get("/")
    @app.get("/playground")
    async def playground(self) -> Response:
        if not self._config.playground_enabled:
            return JSONResponse(error_body("Not found.", type="invalid_request_error", code="not_found"), status_code=404)
        from serve_app.playground import playground_html

        return HTMLResponse(playground_html())

    # ------------------------------------------------------------------ request path

    def _authenticate(self, request: Request) -> str | None:
        if self._auth is None:
            return None
        return self._auth.authenticate(request.headers.get("authorization"))

    async def _serve(self, http_request: Request, model_cls, endpoint: str) -> Response:
        arrival_s = time.time()
        request_id = _request_id(http_request)
        route = http_request.url.path
        try:
            key_digest = self._authenticate(http_request)
            raw = await read_body(http_request, self._config.admission.max_body_bytes)
            body = parse_body(raw, model_cls)
            self._check_model(body.model)
            max_tokens = self._check_max_tokens(body)
        except ServeAppError as error:
            self._metrics.requests.labels(route=route, status=str(error.status_code)).inc()
            return _error_response(error, request_id)

        if not self._admission.try_acquire():
            self._metrics.rejected.labels(reason="overloaded").inc()
            self._metrics.requests.labels(route=route, status="429").inc()
            return _error_response(self._admission.overloaded_error(), request_id)
        release = _Once(self._admission.release)
        try:
            ingress_ms = (time.time() - arrival_s) * 1000.0
            tokenize_start_s = time.time()
            if endpoint == "chat":
                messages = [{"role": m.role, "content": m.text()} for m in body.messages]
                pending = self._tokenizer.prepare_chat.remote(messages, max_tokens)
            else:
                pending = self._tokenizer.prepare_completion.remote(body.prompt, max_tokens)
            # While a tokenizer replica is being replaced the call waits for the new one, within the timeout.
            prepared = await asyncio.wait_for(pending, timeout=self._config.admission.request_timeout_s)
            if self._auth is not None:
                self._auth.admit(key_digest, prepared.num_prompt_tokens + (max_tokens or 0))
            generation = GenerationRequest(
                request_id=request_id,
                prompt_ids=prepared.prompt_ids,
                sampling=SamplingOptions(
                    max_tokens=max_tokens or self._default_max_tokens(prepared.num_prompt_tokens),
                    temperature=body.temperature,
                    top_p=body.top_p,
                    seed=body.seed,
                    presence_penalty=body.presence_penalty,
                    frequency_penalty=body.frequency_penalty,
                    ignore_eos=body.ignore_eos,
                ),
                stop=body.stop,
                endpoint=endpoint,
                model_name=self._model_name,
                created_s=int(arrival_s),
                include_usage=body.include_usage,
                arrival_time_s=arrival_s,
                timings_ms={"ingress_ms": ingress_ms, "tokenize_ms": (time.time() - tokenize_start_s) * 1000.0},
            )
            self._metrics.prompt_tokens.inc(prepared.num_prompt_tokens)
            if self._config.logging.log_prompts:
                logger.info("request %s prompt_ids=%s", request_id, prepared.prompt_ids)
            if body.stream:
                wire = choose_wire_format(http_request.headers.get("accept"))
                return await self._start_stream(generation, wire, route, release)
            response = await asyncio.wait_for(
                self._streamer.complete.remote(generation), timeout=self._config.admission.request_timeout_s
            )
            self._record_complete(route, response, arrival_s)
            body, encoding = maybe_gzip(compact_json(response).encode(), http_request.headers.get("accept-encoding"))
            return Response(body, media_type="application/json", headers={REQUEST_ID_HEADER: request_id, **encoding})
        except Exception as exc:
            return self._failure_response(exc, route, request_id)
        finally:
            release.unless_handed_over()

    async def _start_stream(self, generation: GenerationRequest, wire: str, route: str, release: "_Once") -> Response:
        frames = self._streamer.options(stream=True).stream.remote(generation, wire)
        # Pull the first frame before answering, so an error before any output gets a real status code.
        first = await asyncio.wait_for(frames.__anext__(), timeout=self._config.admission.request_timeout_s)
        release.hand_over()
        media_type = MSGPACK_CONTENT_TYPE if wire == "msgpack" else SSE_CONTENT_TYPE
        return StreamingResponse(
            self._relay(first, frames, generation, route, release, wire),
            media_type=media_type,
            headers={REQUEST_ID_HEADER: generation.request_id, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def _relay(
        self, first, frames, generation: GenerationRequest, route: str, release: "_Once", wire: str
    ) -> AsyncIterator[Any]:
        metrics = self._metrics
        deadline_s = generation.arrival_time_s + self._config.admission.request_timeout_s
        status = "200"
        last_s = None
        frame = first
        try:
            while True:
                now_s = time.time()
                if frame.is_first_text:
                    metrics.ttft.observe(now_s - generation.arrival_time_s)
                elif last_s is not None and frame.num_tokens:
                    metrics.inter_token.observe(now_s - last_s)
                if frame.num_tokens:
                    last_s = now_s
                    metrics.output_tokens.inc(frame.num_tokens)
                yield frame.data
                if frame.finish_reason is not None:
                    if frame.timings_ms:
                        metrics.observe_timings(frame.timings_ms)
                    status = "200" if frame.error is None else "500"
                    break
                remaining_s = deadline_s - time.time()
                try:
                    frame = await asyncio.wait_for(frames.__anext__(), timeout=max(remaining_s, 0.001))
                except asyncio.TimeoutError:
                    status = "504"
                    yield _error_frame(generation, wire, "The request timed out.", "timeout_error", "timeout")
                    break
                except StopAsyncIteration:
                    break
                except Exception as exc:  # the streaming node died mid-stream: end it with an error event
                    logger.warning("Stream %s lost its streaming node: %s", generation.request_id, type(exc).__name__)
                    status = "503"
                    yield _error_frame(generation, wire, "The stream was interrupted; retry the request.", "server_error", "unavailable")
                    break
        except asyncio.CancelledError:
            status = "499"  # client went away; cancelling `frames` aborts the request in the engine
            raise
        finally:
            frames.cancel()
            metrics.e2e.observe(time.time() - generation.arrival_time_s)
            metrics.requests.labels(route=route, status=status).inc()
            release()

    # ------------------------------------------------------------------ helpers

    def _check_model(self, model: str) -> None:
        if model != self._model_name:
            raise ServeAppError(
                f"The model '{model}' does not exist. Available: '{self._model_name}'.",
                status_code=404, param="model", code="model_not_found",
            )

    def _check_max_tokens(self, body) -> int | None:
        limit = self._config.admission.max_tokens_limit
        max_tokens = body.output_token_limit if isinstance(body, ChatCompletionRequest) else body.max_tokens
        if max_tokens is not None and max_tokens > limit:
            raise ServeAppError(f"max_tokens must be at most {limit}, got {max_tokens}.", param="max_tokens", code="invalid_value")
        return max_tokens

    def _default_max_tokens(self, num_prompt_tokens: int) -> int:
        max_model_len = self._config.engine.max_model_len or 2048
        return max(1, min(self._config.admission.max_tokens_limit, max_model_len - num_prompt_tokens))

    def _record_complete(self, route: str, response: dict[str, Any], arrival_s: float) -> None:
        elapsed_s = time.time() - arrival_s
        self._metrics.e2e.observe(elapsed_s)
        self._metrics.output_tokens.inc(response["usage"]["completion_tokens"])
        self._metrics.requests.labels(route=route, status="200").inc()
        timings = response.get("timings")
        if timings:
            self._metrics.observe_timings(timings)

    def _failure_response(self, exc: Exception, route: str, request_id: str) -> Response:
        error = find_serve_app_error(exc)
        if error is None:
            if isinstance(exc, asyncio.TimeoutError):
                error = ServeAppError("The request timed out.", status_code=504, type="timeout_error", code="timeout")
            else:
                logger.warning("Request %s failed: %s: %s", request_id, type(exc).__name__, _short(exc))
                error = ServeAppError(
                    "The model is temporarily unavailable; retry the request.",
                    status_code=503, type="server_error", code="unavailable",
                )
        self._metrics.requests.labels(route=route, status=str(error.status_code)).inc()
        return _error_response(error, request_id)


IngressDeployment = serve.deployment(Ingress, name="Ingress")
