"""The relay: an admitted request to its model server, and what comes back to the client.

The first item decides the answer: a `WholeResponse` is sent as JSON with its status (a non-streamed answer, or
an error before the first byte); a `Frame` starts a stream, relayed frame by frame until the final one, within
the request's deadline. After the first byte an error can only travel as a final error event (the stream still
ends with its done marker). Every way out releases the gate's slot once, counts the request in the metrics, and
closes the model server's stream (which aborts the request in the engine).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import AsyncIterator

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from serve_app.api.errors import ServeAppError, find_serve_app_error
from serve_app.api.framing import MSGPACK_CONTENT_TYPE, SSE_CONTENT_TYPE, compact_json, final_error_events, maybe_gzip
from serve_app.api.protocol import Frame, WholeResponse
from serve_app.ingress.gate import UNAVAILABLE_RETRY_AFTER_S, AdmittedRequest
from serve_app.ingress.metrics import IngressMetrics
from serve_app.ingress.stream_lifetime import StreamWithCleanup
from serve_app.server.timings import ingress_timings
from serve_app.server.tracing import StageTracer

logger = logging.getLogger("ray.serve")
REPLICA_HEADER = "x-serve-app-replica"  # which model server replica answered (non-streamed responses)


def error_response(error: ServeAppError) -> JSONResponse:
    return JSONResponse(error.to_body(), status_code=error.status_code, headers=error.headers)


class Relay:
    def __init__(self, metrics: IngressMetrics, tracer: StageTracer | None = None):
        self._metrics = metrics
        self._tracer = tracer  # opt-in: each response's stages as OpenTelemetry spans (config `tracing`)

    def _observe_timings(self, request: AdmittedRequest, timings_ms: dict[str, float]) -> None:
        """A response's final `timings`: the stage histogram, and the stage spans when tracing is on."""
        self._metrics.observe_timings(request.model, timings_ms)
        if self._tracer is not None:
            self._tracer.record(request.request_id, request.model, request.arrival_s, timings_ms)

    async def respond(self, request: AdmittedRequest, http_request: Request) -> Response:
        """Hand `request` to its backend; answer with its whole response or start relaying its stream."""
        try:
            handoff_s = time.time()  # the model server's stages count from here (serve_app/server/timings.py)
            timings_ms = ingress_timings(request.arrival_s, handoff_s, request.gate_wait_s)
            if request.predicted_ttft_ms is not None:
                timings_ms["predicted_ttft_ms"] = request.predicted_ttft_ms
            frames = request.backend.generate(request.server_request(handoff_s, timings_ms), request.adapter)
            # Pull the first item before answering, so an error before any output gets a real status code.
            try:
                first = await asyncio.wait_for(frames.__anext__(), timeout=max(0.001, request.deadline_s - time.time()))
            except BaseException:
                await request.backend.close_stream(frames)
                raise
            if isinstance(first, WholeResponse):
                await request.backend.close_stream(frames)
                return self._whole(first, request, http_request.headers.get("accept-encoding"))
            request.release.hand_over()  # the stream releases it when it ends (or never starts)

            async def cleanup() -> None:
                request.release()
                await request.backend.close_stream(frames)

            return StreamWithCleanup(
                self._stream(first, frames, request), cleanup,
                media_type=MSGPACK_CONTENT_TYPE if request.wire == "msgpack" else SSE_CONTENT_TYPE,
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        except Exception as exc:
            return self._failure(exc, request)
        finally:
            request.release.unless_handed_over()

    def _whole(self, whole: WholeResponse, request: AdmittedRequest, accept_encoding: str | None) -> Response:
        metrics, model = self._metrics, request.model
        metrics.requests.labels(model=model, route=request.route, status=str(whole.status_code)).inc()
        outcome = whole.outcome if whole.status_code == 200 else None
        if outcome is not None:
            metrics.e2e.labels(model=model).observe(time.time() - request.arrival_s)
            metrics.output_tokens.labels(model=model).inc(outcome.num_output_tokens)
            metrics.prompt_tokens.labels(model=model).inc(outcome.num_prompt_tokens or 0)
            self._observe_timings(request, outcome.timings_ms)
            if request.on_outcome is not None and outcome.ttft_s is not None:
                request.on_outcome(outcome)
        if request.on_end is not None:  # an error answer used nothing
            request.on_end(outcome.num_prompt_tokens if outcome else 0, outcome.num_output_tokens if outcome else 0)
        data, encoding = maybe_gzip(compact_json(whole.body).encode(), accept_encoding)
        headers = dict(encoding)
        if whole.replica:
            headers[REPLICA_HEADER] = whole.replica
        if whole.headers:
            headers.update(whole.headers)
        return Response(data, status_code=whole.status_code, media_type="application/json", headers=headers)

    async def _stream(self, first: Frame, frames: AsyncIterator[Frame], request: AdmittedRequest
                      ) -> AsyncIterator[str | bytes]:
        metrics, model, wire = self._metrics, request.model, request.wire
        ttft, inter_token, output_tokens = (metrics.ttft.labels(model=model), metrics.inter_token.labels(model=model),
                                            metrics.output_tokens.labels(model=model))
        status = "200"
        last_output_s = None
        num_tokens = 0
        outcome = None  # the model server's counts and timings, on its done marker
        frame = first
        try:
            while True:
                now_s = time.time()
                if frame.has_output:
                    if last_output_s is None:
                        ttft.observe(now_s - request.arrival_s)
                        if request.on_first_output is not None:
                            request.on_first_output()
                    else:
                        inter_token.observe(now_s - last_output_s)
                    last_output_s = now_s
                if frame.num_tokens:
                    num_tokens += frame.num_tokens
                    output_tokens.inc(frame.num_tokens)
                    if request.on_tokens is not None:
                        request.on_tokens(frame.num_tokens)
                if frame.error is not None:
                    status = "500"
                if frame.outcome is not None:
                    outcome = frame.outcome
                    self._observe_timings(request, outcome.timings_ms)
                if frame.data:  # a Responses stream's closing frame carries only its outcome
                    yield frame.data
                if frame.is_final:
                    break
                try:
                    frame = await asyncio.wait_for(frames.__anext__(), timeout=max(request.deadline_s - time.time(), 0.001))
                except asyncio.TimeoutError:
                    status = "504"
                    yield final_error_events(_error("The request timed out.", "timeout_error", "timeout"), wire)
                    break
                except StopAsyncIteration:
                    break
                except Exception as exc:  # the model server died mid-stream: end it with an error event
                    logger.warning("A stream lost its model server: %s", type(exc).__name__)
                    status = "503"
                    yield final_error_events(_error("The stream was interrupted; retry the request.", "server_error",
                                                    "unavailable"), wire)
                    break
        except (asyncio.CancelledError, GeneratorExit):
            status = "499"  # client went away (or the response was closed); closing `frames` aborts the request
            raise
        finally:
            # Release and count first: under a cancelled scope every await below may be interrupted again.
            request.release()
            if request.on_end is not None:
                request.on_end(outcome.num_prompt_tokens if outcome else None, num_tokens)
            metrics.e2e.labels(model=model).observe(time.time() - request.arrival_s)
            metrics.requests.labels(model=model, route=request.route, status=status).inc()
            if request.on_outcome is not None and outcome is not None and outcome.ttft_s is not None and status == "200":
                request.on_outcome(outcome)
            await request.backend.close_stream(frames)

    def _failure(self, exc: Exception, request: AdmittedRequest) -> Response:
        """An exception before the first byte as an OpenAI-style error (a model server gone: 503, retry)."""
        if request.on_end is not None:  # no output came
            request.on_end(None, 0)
        error = find_serve_app_error(exc)
        if error is None:
            if isinstance(exc, asyncio.TimeoutError):
                error = ServeAppError("The request timed out.", status_code=504, type="timeout_error", code="timeout")
            else:
                logger.warning("Request %s failed: %s: %s", request.request_id, type(exc).__name__, str(exc)[:200])
                error = ServeAppError("The model is temporarily unavailable; retry the request.",
                                      status_code=503, type="server_error", code="unavailable",
                                      headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER_S)})
        self._metrics.requests.labels(model=request.model, route=request.route, status=str(error.status_code)).inc()
        return error_response(error)


def _error(message: str, type: str, code: str) -> dict[str, str]:
    return {"message": message, "type": type, "code": code}
