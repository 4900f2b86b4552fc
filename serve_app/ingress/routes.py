"""HTTP ingress (OpenAI-compatible): authenticate, parse and check, admit, then forward to a model server.

Bad or excess requests are answered before the first byte with an OpenAI-style error and the right status.
Once a stream has started, an error travels as a final `{"error": ...}` event and the stream still ends with
its done marker. With placement `with_model` (the default) this class also holds the model server, so a
generated token crosses one Ray hop (this replica -> Ray's HTTP proxy) on its way to the client.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve_app.ingress.admission import AdmissionController
from serve_app.ingress.auth import ApiKeyAuth
from serve_app.config import AppConfig
from serve_app.api.errors import ServeAppError, error_body, find_serve_app_error
from serve_app.api.framing import (
    MSGPACK_CONTENT_TYPE,
    SSE_CONTENT_TYPE,
    WireFormat,
    choose_wire_format,
    compact_json,
    final_error_events,
    maybe_gzip,
)
from serve_app.ingress.health import DEGRADED, OK, UNAVAILABLE, DeploymentReplicas, model_health, no_replica_up
from serve_app.ingress.backends import HandleBackend, InProcessBackend, ModelBackend
from serve_app.ingress.request_checks import (
    RequestLimits,
    check_header_size,
    known_fields,
    parse_request,
    read_body,
    requested_max_tokens,
    validation_error,
)
from serve_app.ingress.metrics import IngressMetrics
from serve_app.ingress.ray_metrics_mirror import RegistryMirror
from serve_app.ingress.stream_lifetime import Once, StreamWithCleanup
from serve_app.platform.ray_env import replica_context
from serve_app.api.openapi import json_body
from serve_app.server.openai_frontend import CHAT, COMPLETION, ENDPOINTS, RESPONSES, Endpoint
from serve_app.server.response_stream import Frame
from serve_app.server.timings import ingress_timings

logger = logging.getLogger("ray.serve")
REQUEST_ID_HEADER = "x-request-id"
REPLICA_HEADER = "x-serve-app-replica"  # which model server replica answered (non-streamed responses)
# Retry-After of a 503 while a model has no running replica: about a replacement replica's start on CPU.
UNAVAILABLE_RETRY_AFTER_S = 10

# The API docs are routes of the Ingress below (FastAPI's own would be fixed when this module is imported, before
# the config is known), so `api_docs_enabled: false` turns them off.
app = FastAPI(title="serve_app", description="OpenAI-compatible LLM serving on Ray Serve", version="0.2.0",
              docs_url=None, redoc_url=None, openapi_url=None)


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


def not_found(request: Request) -> JSONResponse:
    return JSONResponse(error_body(f"Invalid URL ({request.method} {request.url.path[:200]}).",
                                   type="invalid_request_error", code="not_found"), status_code=404)


async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Router-level errors (no such path, a method the path does not take) in the OpenAI error format."""
    if exc.status_code == 404:
        return not_found(request)
    if exc.status_code == 405:
        message, code = f"Method {request.method} is not allowed for {request.url.path[:200]}.", "method_not_allowed"
    else:
        message, code = str(exc.detail), None
    error_type = "server_error" if exc.status_code >= 500 else "invalid_request_error"
    return JSONResponse(error_body(message, type=error_type, code=code), status_code=exc.status_code,
                        headers=exc.headers)


async def request_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's own parameter validation (a 422 `{"detail": ...}` by default) as an OpenAI-style 400."""
    error = validation_error(exc) if exc.errors() else ServeAppError("Invalid request.", code="invalid_value")
    return JSONResponse(error.to_body(), status_code=error.status_code)


def install_error_handlers(fastapi_app: FastAPI) -> None:
    fastapi_app.add_exception_handler(StarletteHTTPException, http_error)
    fastapi_app.add_exception_handler(RequestValidationError, request_validation_error)


install_error_handlers(app)


def api_docs_page(request: Request) -> Response:
    """The OpenAPI schema, Swagger UI or ReDoc page for `request`'s path, as FastAPI would serve them."""
    root_path = request.scope.get("root_path", "").rstrip("/")
    if request.url.path.endswith("/openapi.json"):
        return JSONResponse(request.app.openapi())
    if request.url.path.endswith("/docs"):
        return get_swagger_ui_html(openapi_url=root_path + "/openapi.json", title=f"{request.app.title} - Swagger UI")
    return get_redoc_html(openapi_url=root_path + "/openapi.json", title=f"{request.app.title} - ReDoc")


def _error_response(error: ServeAppError, request_id: str) -> JSONResponse:
    return JSONResponse(error.to_body(), status_code=error.status_code,
                        headers={REQUEST_ID_HEADER: request_id, **error.headers})


def _error_frame(wire: WireFormat, message: str, type: str, code: str) -> str | bytes:
    return final_error_events({"message": message, "type": type, "code": code}, wire)


def _request_schema(endpoint: Endpoint) -> dict[str, Any]:
    try:
        return json_body(endpoint.request_type())
    except Exception:  # noqa: BLE001 - documentation only; never block serving on a schema
        return {}


@serve.ingress(app)
class Ingress:
    """Routes and admission. `model_handles` maps each served model to its model server deployment (placement
    `separate`); None runs the one model's server in this replica (placement `with_model`)."""

    async def __init__(self, config: AppConfig, model_handles: dict[str, Any] | None = None):
        self._config = config
        views = config.model_views()
        self._default_model = views[0].model.resolved_name()
        self._served = config.served_names()  # client-facing name (model or adapter) -> the model serving it
        # First: auth enabled without keys fails here with one message naming the setting, before an engine starts.
        self._auth = ApiKeyAuth.from_config(config.auth)
        self._server = None
        if model_handles is None:
            from serve_app.server.factory import build_model_server

            self._server = build_model_server(views[0])
            await self._server.start()
            self._backends: dict[str, ModelBackend] = {self._default_model: InProcessBackend(self._server)}
        else:
            self._backends = {name: HandleBackend(handle) for name, handle in model_handles.items()}
        # The Serve deployment holding each model's replicas (this one with placement with_model).
        context = replica_context()
        self._deployments = ({name: handle.deployment_name for name, handle in model_handles.items()}
                             if model_handles is not None else {self._default_model: context.deployment if context else ""})
        self._replicas = DeploymentReplicas()
        # Placement separate: models whose deployment scales from zero (their requests wait for a cold start).
        self._scales_from_zero = {view.model.resolved_name(): view.model_deployment.min_replicas == 0
                                  for view in views} if model_handles is not None else {}
        self._admission = AdmissionController(config.admission.max_in_flight_requests, config.admission.retry_after_s)
        self._tenants = None
        if config.tenancy.enabled:
            from serve_app.ingress.tenant_admission import TenantAdmission

            self._tenants = TenantAdmission(config, context.app_name if context else "local")
        self._metrics = IngressMetrics()
        # Every ingress replica's counts through Ray's metrics (tagged by replica), beside this replica's /metrics.
        self._metrics_mirror = RegistryMirror.start(
            self._metrics.registry, before=lambda: self._metrics.in_flight.set(self._admission.num_in_flight))
        self._limits = RequestLimits(max_tokens=config.admission.max_tokens_limit, max_n=config.admission.max_n)
        self._request_types = {name: e.request_type() for name, e in ENDPOINTS.items()}
        self._fields = {name: known_fields(t) for name, t in self._request_types.items()}
        self._created_s = int(time.time())

    # ------------------------------------------------------------------ Serve hooks (placement with_model)

    async def check_health(self) -> None:
        if self._server is not None:
            await self._server.check_health()

    def record_autoscaling_stats(self) -> dict[str, float]:
        return self._server.autoscaling_stats() if self._server is not None else {}

    # ------------------------------------------------------------------ public routes

    async def _all_engine_stats(self, timeout_s: float) -> dict[str, dict[str, float] | None]:
        """Each model's engine stats (None where its replicas did not answer in time)."""

        async def one(backend: ModelBackend) -> dict[str, float] | None:
            try:
                return await asyncio.wait_for(backend.engine_stats(), timeout=timeout_s)
            except Exception as exc:  # noqa: BLE001 - an unreachable model is reported, not raised
                logger.warning("Engine stats failed: %s", type(exc).__name__)
                return None

        names = list(self._backends)
        results = await asyncio.gather(*(one(self._backends[name]) for name in names))
        return dict(zip(names, results))

    @app.get("/health")
    async def health(self) -> Response:
        stats, replicas = await asyncio.gather(self._all_engine_stats(timeout_s=5.0), self._replicas.get())
        models, counts = {}, {}
        for name, engine in stats.items():
            states, status = (replicas or {}).get(self._deployments[name], (None, None))
            models[name] = model_health(states, status, engine)
            if states is not None:
                counts[name] = {"running": states.get("RUNNING", 0), "total": sum(states.values())}
            self._metrics.engine_healthy.labels(model=name).set(0 if models[name] == UNAVAILABLE else 1)
        down = sorted(name for name, state in models.items() if state == UNAVAILABLE)
        if not down:
            overall = OK if all(state == OK for state in models.values()) else DEGRADED
            return JSONResponse({"status": overall, "models": models, "replicas": counts})
        body = error_body(f"Model engine not available: {', '.join(down)}.", type="server_error",
                          code="engine_unavailable")
        return JSONResponse(body | {"models": models, "replicas": counts}, status_code=503)

    @app.get("/metrics")
    async def metrics(self, request: Request) -> Response:
        if self._auth is not None and self._config.auth.metrics_require_auth:
            try:
                self._auth.authenticate(request.headers.get("authorization"))
            except ServeAppError as error:
                return _error_response(error, _request_id(request))
        for name, stats in (await self._all_engine_stats(timeout_s=15.0)).items():
            if stats is None:
                self._metrics.engine_healthy.labels(model=name).set(0)
                continue
            self._metrics.engine_running.labels(model=name).set(stats["num_running"])
            self._metrics.engine_waiting.labels(model=name).set(stats["num_waiting"])
            self._metrics.engine_healthy.labels(model=name).set(stats["is_healthy"])
            self._metrics.speculation.update(name, stats)
        self._metrics.in_flight.set(self._admission.num_in_flight)
        return Response(self._metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def list_models(self, request: Request) -> Response:
        request_id = _request_id(request)
        try:
            self._authenticate(request)
        except ServeAppError as error:
            return _error_response(error, request_id)
        data = [{"id": name, "object": "model", "created": self._created_s, "owned_by": "serve_app",
                 "root": name, "parent": None if parent == name else parent}
                for name, parent in self._served.items()]
        return JSONResponse({"object": "list", "data": data}, headers={REQUEST_ID_HEADER: request_id})

    @app.post(CHAT.route, openapi_extra=_request_schema(CHAT))
    async def chat_completions(self, request: Request) -> Response:
        return await self._serve(request, CHAT)

    @app.post(COMPLETION.route, openapi_extra=_request_schema(COMPLETION))
    async def completions(self, request: Request) -> Response:
        return await self._serve(request, COMPLETION)

    @app.post(RESPONSES.route, openapi_extra=_request_schema(RESPONSES))
    async def responses(self, request: Request) -> Response:
        return await self._serve(request, RESPONSES)

    @app.get("/")
    @app.get("/playground")
    async def playground(self) -> Response:
        if not self._config.playground_enabled:
            return JSONResponse(error_body("Not found.", type="invalid_request_error", code="not_found"), status_code=404)
        from serve_app.playground import playground_html

        return HTMLResponse(playground_html())

    @app.get("/openapi.json", include_in_schema=False)
    @app.get("/docs", include_in_schema=False)
    @app.get("/redoc", include_in_schema=False)
    async def api_docs(self, request: Request) -> Response:
        if not self._config.api_docs_enabled:
            return not_found(request)
        return api_docs_page(request)

    # ------------------------------------------------------------------ request path

    def _authenticate(self, request: Request) -> str | None:
        if self._auth is None:
            return None
        return self._auth.authenticate(request.headers.get("authorization"))

    async def _serve(self, http_request: Request, endpoint: Endpoint) -> Response:
        from serve_app.server.model_server import ServerRequest, WholeResponse

        arrival_s = time.time()
        request_id = _request_id(http_request)
        route = http_request.url.path
        try:
            check_header_size(http_request.scope["headers"], self._config.admission.max_header_bytes)
            key_digest = self._authenticate(http_request)
            raw = await read_body(http_request, self._config.admission.max_body_bytes,
                                  self._config.admission.body_timeout_s)
            body = parse_request(raw, self._request_types[endpoint.name], self._fields[endpoint.name], self._limits)
            model, adapter = self._route(body.model)
            await self._check_replica_up(model)
        except ServeAppError as error:
            self._metrics.requests.labels(model="", route=route, status=str(error.status_code)).inc()
            return _error_response(error, request_id)

        if not self._admission.try_acquire():
            self._metrics.rejected.labels(reason="overloaded").inc()
            self._metrics.requests.labels(model=model, route=route, status="429").inc()
            return _error_response(self._admission.overloaded_error(), request_id)
        release = Once(self._admission.release)
        deadline_s = arrival_s + self._config.admission.request_timeout_s  # one deadline for every stage
        done = first_output = None
        gate_wait_s = None
        try:
            # Prompt tokens are counted by the model server; here the body's size stands in for them.
            prompt_tokens = len(raw) // 4
            if self._tenants is not None:
                tenant = self._tenants.tenant_of(key_digest, http_request.headers)
                try:
                    admitted = await self._tenants.admit(model, tenant, http_request.headers, prompt_tokens,
                                                         requested_max_tokens(body), arrival_s, deadline_s)
                except ServeAppError as error:
                    self._metrics.tenant_admissions.labels(tenant=tenant.name, outcome=error.code or "refused").inc()
                    raise
                self._metrics.tenant_admissions.labels(tenant=tenant.name, outcome="admitted").inc()
                release = Once(lambda: (admitted.release(), self._admission.release()))
                if hasattr(body, "priority"):
                    body.priority = admitted.priority  # tenancy turns on vLLM's priority scheduling (engine_args)
                gate_wait_s = admitted.waited_s
                done = lambda first_token_at_s, n, decode_s: self._tenants.observe(
                    model, admitted, prompt_tokens, first_token_at_s, n, decode_s)
                first_output = admitted.first_token
                if not getattr(body, "stream", False):
                    admitted.first_token()  # its first token is not seen before its end: not paced
            elif self._auth is not None:
                self._auth.admit(key_digest, prompt_tokens + requested_max_tokens(body))
            if hasattr(body, "request_id"):
                body.request_id = request_id  # vLLM's ids (and the engine's) then carry the client's request id
            if self._config.logging.log_prompts:
                logger.info("request %s body=%s", request_id, raw[:2000])
            stream = bool(getattr(body, "stream", False))
            wire = choose_wire_format(http_request.headers.get("accept")) if stream else "sse"
            backend = self._backends[model]
            handoff_s = time.time()  # the model server's stages count from here (serve_app/server/timings.py)
            timings_ms = ingress_timings(arrival_s, handoff_s, gate_wait_s)
            if self._tenants is not None and admitted.predicted_ttft_s is not None:
                # From arrival, like the reported ttft_ms, so a client can judge the deadline admission's predictor.
                timings_ms["predicted_ttft_ms"] = (admitted.admitted_at_s - arrival_s + admitted.predicted_ttft_s) * 1000.0
            server_request = ServerRequest(endpoint=endpoint.name, body=body, request_id=request_id, wire=wire,
                                           handoff_time_s=handoff_s, timings_ms=timings_ms)
            frames = backend.generate(server_request, adapter)
            # Pull the first item before answering, so an error before any output gets a real status code.
            try:
                first = await asyncio.wait_for(frames.__anext__(), timeout=max(0.001, deadline_s - time.time()))
            except BaseException:
                await backend.close_stream(frames)
                raise
            if isinstance(first, WholeResponse):
                await backend.close_stream(frames)
                return self._whole_response(first, model, route, arrival_s, request_id, http_request, done)
            release.hand_over()

            async def cleanup() -> None:  # also when the relay never started (stream_lifetime.py)
                release()
                await backend.close_stream(frames)

            return StreamWithCleanup(
                self._relay(first, frames, backend, model, route, arrival_s, deadline_s, release, wire, done,
                            first_output),
                cleanup,
                media_type=MSGPACK_CONTENT_TYPE if wire == "msgpack" else SSE_CONTENT_TYPE,
                headers={REQUEST_ID_HEADER: request_id, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        except Exception as exc:
            return self._failure_response(exc, model, route, request_id)
        finally:
            release.unless_handed_over()

    def _whole_response(self, whole, model: str, route: str, arrival_s: float, request_id: str,
                        http_request: Request, done=None) -> Response:
        metrics = self._metrics
        metrics.requests.labels(model=model, route=route, status=str(whole.status_code)).inc()
        if whole.status_code == 200:
            metrics.e2e.labels(model=model).observe(time.time() - arrival_s)
            usage = whole.body.get("usage") or {}
            metrics.output_tokens.labels(model=model).inc(usage.get("completion_tokens") or usage.get("output_tokens") or 0)
            metrics.prompt_tokens.labels(model=model).inc(usage.get("prompt_tokens") or usage.get("input_tokens") or 0)
            timings = whole.body.get("timings") or {}
            if timings:
                metrics.observe_timings(model, timings)
            if done is not None and "ttft_ms" in timings:  # its first token: the engine's, from arrival
                done(arrival_s + timings["ttft_ms"] / 1000.0, usage.get("completion_tokens") or 0,
                     timings.get("decode_ms", 0) / 1000.0)
        data, encoding = maybe_gzip(compact_json(whole.body).encode(), http_request.headers.get("accept-encoding"))
        headers = {REQUEST_ID_HEADER: request_id, **encoding}
        if whole.replica:
            headers[REPLICA_HEADER] = whole.replica
        return Response(data, status_code=whole.status_code, media_type="application/json", headers=headers)

    async def _relay(self, first: Frame, frames: AsyncIterator[Any], backend: ModelBackend, model: str, route: str,
                     arrival_s: float, deadline_s: float, release: Once, wire: WireFormat,
                     done=None, first_output=None) -> AsyncIterator[Any]:
        metrics = self._metrics
        ttft, inter_token, output_tokens = (metrics.ttft.labels(model=model), metrics.inter_token.labels(model=model),
                                            metrics.output_tokens.labels(model=model))
        status = "200"
        first_output_s = last_output_s = None
        num_tokens = 0
        frame = first
        try:
            while True:
                now_s = time.time()
                if frame.has_output:
                    if last_output_s is None:
                        first_output_s = now_s
                        ttft.observe(now_s - arrival_s)
                        if first_output is not None:
                            first_output()
                    else:
                        inter_token.observe(now_s - last_output_s)
                    last_output_s = now_s
                if frame.num_tokens:
                    num_tokens += frame.num_tokens
                    output_tokens.inc(frame.num_tokens)
                if frame.error is not None:
                    status = "500"
                if frame.timings:
                    metrics.observe_timings(model, frame.timings)
                yield frame.data
                if frame.is_final:
                    break
                try:
                    frame = await asyncio.wait_for(frames.__anext__(), timeout=max(deadline_s - time.time(), 0.001))
                except asyncio.TimeoutError:
                    status = "504"
                    yield _error_frame(wire, "The request timed out.", "timeout_error", "timeout")
                    break
                except StopAsyncIteration:
                    break
                except Exception as exc:  # the model server died mid-stream: end it with an error event
                    logger.warning("A stream lost its model server: %s", type(exc).__name__)
                    status = "503"
                    yield _error_frame(wire, "The stream was interrupted; retry the request.", "server_error", "unavailable")
                    break
        except (asyncio.CancelledError, GeneratorExit):
            status = "499"  # client went away (or the response was closed); closing `frames` aborts the request
            raise
        finally:
            # Release and count first: under a cancelled scope every await below may be interrupted again.
            release()
            metrics.e2e.labels(model=model).observe(time.time() - arrival_s)
            metrics.requests.labels(model=model, route=route, status=status).inc()
            if done is not None and first_output_s is not None and status == "200":
                done(first_output_s, num_tokens, last_output_s - first_output_s)
            await backend.close_stream(frames)

    # ------------------------------------------------------------------ helpers

    def _route(self, requested: str | None) -> tuple[str, str | None]:
        """The model serving `requested` (None: the default model) and the adapter asked for, if any."""
        if requested is None:
            return self._default_model, None
        model = self._served.get(requested)
        if model is None:
            names = list(self._served)
            shown = ", ".join(f"'{name}'" for name in names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
            raise ServeAppError(f"The model '{requested[:200]}' does not exist. Available: {shown}.",
                                status_code=404, param="model", code="model_not_found")
        return model, (requested if requested != model else None)

    async def _check_replica_up(self, model: str) -> None:
        """Placement separate: 503 with Retry-After at once when the controller reports no running replica of
        `model` (with_model: this replica is one). Reads the controller's view cached by `DeploymentReplicas`."""
        if model not in self._scales_from_zero:
            return
        states, status = (self._replicas.peek() or {}).get(self._deployments[model], (None, None))
        if no_replica_up(states, status, self._scales_from_zero[model]) and self._replicas.is_stale():
            # A view older than its TTL may predate a recovery: refresh it (briefly) before refusing.
            states, status = (await self._replicas.get() or {}).get(self._deployments[model], (None, None))
        if no_replica_up(states, status, self._scales_from_zero[model]):
            raise ServeAppError(f"No replica of model '{model}' is running right now; retry shortly.",
                                status_code=503, type="server_error", code="model_unavailable",
                                headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER_S)})

    def _failure_response(self, exc: Exception, model: str, route: str, request_id: str) -> Response:
        error = find_serve_app_error(exc)
        if error is None:
            if isinstance(exc, asyncio.TimeoutError):
                error = ServeAppError("The request timed out.", status_code=504, type="timeout_error", code="timeout")
            else:
                logger.warning("Request %s failed: %s: %s", request_id, type(exc).__name__, str(exc)[:200])
                error = ServeAppError("The model is temporarily unavailable; retry the request.",
                                      status_code=503, type="server_error", code="unavailable",
                                      headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER_S)})
        self._metrics.requests.labels(model=model, route=route, status=str(error.status_code)).inc()
        return _error_response(error, request_id)


IngressDeployment = serve.deployment(Ingress, name="Ingress")
