"""The HTTP ingress replica (OpenAI-compatible): its backends, gate and relay, and the routes' handlers.

The request path, drawn once (docs/architecture.md):

    route (app.py) -> Ingress.serve -> Gate.admit (gate.py) -> Relay.respond (relay.py) -> backend.generate

Backends are passed in: `model_handles` (placement `separate`: one Ray handle per model), `backends` (anything
with ModelBackend's methods, e.g. a fake in unit tests), or neither (placement `with_model`: this replica builds
the model server through serve_app/server/factory.py and calls it in-process, so a generated token crosses one
Ray hop on its way to the client).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from ray import serve

from serve_app.api.endpoints import Endpoint
from serve_app.api.errors import ServeAppError, error_body
from serve_app.api.protocol import EngineStats
from serve_app.config import AppConfig
from serve_app.ingress.admission import AdmissionController
from serve_app.ingress.cold_start import ColdStart
from serve_app.ingress.app import build_fastapi_app, request_id_of
from serve_app.ingress.auth import ApiKeyAuth
from serve_app.ingress.backends import HandleBackend, InProcessBackend, ModelBackend
from serve_app.ingress.gate import Gate, Router
from serve_app.ingress.health import DEGRADED, OK, UNAVAILABLE, DeploymentReplicas, model_health, view_predates_replica
from serve_app.ingress.metrics import IngressMetrics
from serve_app.ingress.ray_metrics_mirror import RegistryMirror
from serve_app.ingress.relay import Relay, error_response
from serve_app.platform.ray_env import replica_context
from serve_app.server.tracing import build_stage_tracer

logger = logging.getLogger("ray.serve")


class Ingress:
    """Routes and admission for the models of `config`. Ray Serve builds it (`IngressDeployment`); tests build it
    with `await Ingress.create(config, backends=...)` and drive `asgi_app()`."""

    async def __init__(self, config: AppConfig, model_handles: dict[str, Any] | None = None, *,
                     backends: dict[str, ModelBackend] | None = None):
        self._config = config
        models = config.model_views()  # one one-model config per served model
        default_model = models[0].model.resolved_name()
        # First: auth enabled without keys fails here with one message naming the setting, before an engine starts.
        self._auth = ApiKeyAuth.from_config(config.auth)
        self._server = None
        context = replica_context()
        if backends is not None:
            self._backends = dict(backends)
            deployments = {name: "" for name in backends}
        elif model_handles is not None:
            self._backends = {name: HandleBackend(handle) for name, handle in model_handles.items()}
            deployments = {name: handle.deployment_name for name, handle in model_handles.items()}
        else:
            from serve_app.server.factory import build_model_server

            self._server = build_model_server(models[0])
            await self._server.start()
            self._backends = {default_model: InProcessBackend(self._server)}
            deployments = {default_model: context.deployment if context else ""}
        self._deployments = deployments  # the Serve deployment holding each model's replicas
        self._replicas = DeploymentReplicas()
        # Placement separate: models whose deployment scales from zero (their requests wait for a cold start).
        scales_from_zero = ({view.model.resolved_name(): view.model_deployment.min_replicas == 0 for view in models}
                            if model_handles is not None else {})
        self._served = config.served_names()  # client-facing name (model or adapter) -> the model serving it
        self._admission = AdmissionController(config.admission.max_in_flight_requests, config.admission.retry_after_s)
        tenants = None
        if config.tenancy.enabled:
            from serve_app.ingress.tenant_admission import TenantAdmission

            # Inside Serve its gates follow the running replicas of each model and of this ingress deployment.
            tenants = TenantAdmission(config, context.app_name if context else "local",
                                      replicas=self._replicas if context else None, deployments=deployments,
                                      ingress_deployment=context.deployment if context else None)
        self._metrics = IngressMetrics()
        self._tenants = tenants
        if tenants is not None:
            self._metrics.watch_gates(tenants.gate_stats)
        # Every ingress replica's counts through Ray's metrics (tagged by replica), beside this replica's /metrics.
        self._metrics_mirror = RegistryMirror.start(self._metrics.registry, before=self._before_scrape)
        cold_starts = {view.model.resolved_name(): ColdStart(
            expected_s=view.model_deployment.cold_start_s,
            max_waiting=view.model_deployment.cold_start_max_waiting or view.batch_rows)
            for view in models if scales_from_zero.get(view.model.resolved_name())}
        router = Router(self._served, default_model, deployments, scales_from_zero, self._replicas, cold_starts)
        self._gate = Gate(config, router, self._backends, self._auth, self._admission, tenants, self._metrics)
        self._relay = Relay(self._metrics, build_stage_tracer(config.tracing.otlp_endpoint,
                                                              config.tracing.service_name))
        self._created_s = int(time.time())

    @classmethod
    async def create(cls, config: AppConfig, model_handles: dict[str, Any] | None = None, *,
                     backends: dict[str, ModelBackend] | None = None) -> "Ingress":
        """An ingress outside Ray Serve (its `__init__` is a coroutine, as Serve's replicas allow)."""
        ingress = cls.__new__(cls)
        await ingress.__init__(config, model_handles, backends=backends)
        return ingress

    def asgi_app(self) -> FastAPI:
        return build_fastapi_app(self)

    def __serve_build_asgi_app__(self) -> FastAPI:  # Ray Serve's late-bound ingress app (serve.ingress())
        return build_fastapi_app(self, echo_request_id=False)  # Ray's RequestIdMiddleware sends x-request-id

    # ------------------------------------------------------------------ the request path

    async def serve(self, http_request: Request, endpoint: Endpoint) -> Response:
        arrival_s = time.time()
        request_id = request_id_of(http_request)
        try:
            request = await self._gate.admit(http_request, endpoint, request_id, arrival_s)
        except ServeAppError as error:
            return error_response(error)
        return await self._relay.respond(request, http_request)

    # ------------------------------------------------------------------ Serve hooks (placement with_model)

    async def check_health(self) -> None:
        if self._server is not None:
            await self._server.check_health()

    def record_autoscaling_stats(self) -> dict[str, float]:
        if self._server is None:
            return {}
        stats = self._server.autoscaling_stats()
        if self._tenants is not None:
            # Requests tenancy's gate holds wait for this engine too, and those deadline admission refused for want
            # of capacity are load it could not take: the policy sees both as waiting.
            gate_waiting = sum(gate.num_waiting for gate in self._tenants.gate_stats().values())
            stats["num_waiting"] += gate_waiting + sum(self._tenants.shed_demand().values())
            # This replica's gate holds requests for this replica's engine only: its own queue too.
            stats["num_local_waiting"] = stats.get("num_local_waiting", 0) + gate_waiting
        return stats

    # ------------------------------------------------------------------ other routes

    @property
    def api_docs_enabled(self) -> bool:
        return self._config.api_docs_enabled

    def playground(self) -> Response:
        if not self._config.playground_enabled:
            return JSONResponse(error_body("Not found.", type="invalid_request_error", code="not_found"), status_code=404)
        from serve_app.playground import playground_html

        return HTMLResponse(playground_html())

    async def _all_engine_stats(self, timeout_s: float) -> dict[str, EngineStats | None]:
        """Each model's engine stats (None where its replicas did not answer in time)."""

        async def one(backend: ModelBackend) -> EngineStats | None:
            try:
                return await asyncio.wait_for(backend.engine_stats(), timeout=timeout_s)
            except Exception as exc:  # noqa: BLE001 - an unreachable model is reported, not raised
                logger.warning("Engine stats failed: %s", type(exc).__name__)
                return None

        names = list(self._backends)
        results = await asyncio.gather(*(one(self._backends[name]) for name in names))
        return dict(zip(names, results))

    async def health(self) -> Response:
        stats, replicas = await asyncio.gather(self._all_engine_stats(timeout_s=5.0), self._replicas.get())
        if any(view_predates_replica((replicas or {}).get(self._deployments[name], (None, None))[0], engine)
               for name, engine in stats.items()):
            replicas = await self._replicas.get(max_age_s=0.0)  # a read begun now, not the one just shared
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

    async def metrics(self, request: Request) -> Response:
        if self._auth is not None and self._config.auth.metrics_require_auth:
            try:
                self._gate.authenticate(request)
            except ServeAppError as error:
                return error_response(error)
        for name, stats in (await self._all_engine_stats(timeout_s=15.0)).items():
            if stats is None:
                self._metrics.engine_healthy.labels(model=name).set(0)
                continue
            self._metrics.engine_running.labels(model=name).set(stats.num_running)
            self._metrics.engine_waiting.labels(model=name).set(stats.num_waiting)
            self._metrics.engine_healthy.labels(model=name).set(1 if stats.is_healthy else 0)
            self._metrics.speculation.update(name, stats)
        self._before_scrape()
        return Response(self._metrics.render(), media_type="text/plain; version=0.0.4")

    def _before_scrape(self) -> None:
        """The gauges read from state, set in the event loop before the registry is read (here or by the mirror,
        which reads it in a thread)."""
        self._metrics.in_flight.set(self._admission.num_in_flight)
        if self._tenants is not None:
            self._tenants.follow_live_replicas()

    def list_models(self, request: Request) -> Response:
        try:
            self._gate.authenticate(request)
        except ServeAppError as error:
            return error_response(error)
        data = [{"id": name, "object": "model", "created": self._created_s, "owned_by": "serve_app",
                 "root": name, "parent": None if parent == name else parent}
                for name, parent in self._served.items()]
        return JSONResponse({"object": "list", "data": data})


IngressDeployment = serve.deployment(serve.ingress()(Ingress), name="Ingress")
