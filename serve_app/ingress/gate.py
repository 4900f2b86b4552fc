"""The gate: one HTTP request in, one `AdmittedRequest` out, or an OpenAI-style error before the first byte.

In order: header size, API key, body (size, time, JSON checks: request_checks.py), routing by `model`, the
replica-up check (placement separate), the in-flight cap (429), then tenancy's fair slot (TenantAdmission) or the
API key's token limits. Whatever the gate took (the in-flight slot, tenancy's slot) is released exactly once by
the returned request's `release`, whoever ends the request. No vLLM here: the model server validates the body.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable

from starlette.requests import Request

from serve_app.api.endpoints import Endpoint
from serve_app.api.errors import ServeAppError
from serve_app.api.framing import choose_wire_format
from serve_app.api.protocol import RequestOutcome, ServerRequest, WireFormat
from serve_app.config import AppConfig
from serve_app.ingress.admission import AdmissionController
from serve_app.ingress.auth import ApiKeyAuth
from serve_app.tenancy.accounting import UsageCharge, expected_output_tokens, requested_n
from serve_app.ingress.backends import ModelBackend
from serve_app.ingress.cold_start import ColdStart
from serve_app.ingress.health import NO_REPLICA_RECHECK_S, DeploymentReplicas, no_replica_up
from serve_app.ingress.metrics import IngressMetrics
from serve_app.ingress.request_checks import (
    RequestLimits,
    check_header_size,
    check_request,
    read_body,
    requested_max_tokens,
    wants_stream,
)
from serve_app.ingress.stream_lifetime import Once

logger = logging.getLogger("ray.serve")
# Retry-After of a 503 while a model has no running replica: about a replacement replica's start on CPU.
UNAVAILABLE_RETRY_AFTER_S = 10
INGRESS_ID = uuid.uuid4().hex[:12]  # this ingress process, as model replicas tell ingress replicas apart


@dataclass(slots=True)
class AdmittedRequest:
    """Everything the relay needs about one admitted request, decided once by the gate."""

    request_id: str
    route: str
    endpoint: Endpoint
    body: dict[str, Any]  # checked, not yet validated (the model server does that)
    model: str  # the model serving it
    adapter: str | None  # the LoRA adapter asked for, if any
    backend: ModelBackend
    wire: WireFormat
    is_stream: bool
    arrival_s: float  # time.time() when the ingress saw the request
    deadline_s: float  # arrival + request_timeout_s: one deadline for every stage
    release: Once  # gives back the in-flight slot (and tenancy's slot) exactly once
    estimated_prompt_tokens: int  # the body's size / 4 until the model server counts them
    priority: int | None = None  # tenancy's vLLM priority
    gate_wait_s: float | None = None  # time spent waiting for tenancy's fair slot
    predicted_ttft_ms: float | None = None  # tenancy's deadline predictor, from arrival
    on_first_output: Callable[[], None] | None = None  # tenancy's prefill pacing: the first token arrived
    on_outcome: Callable[[RequestOutcome], None] | None = None  # tenancy learns from a successful request
    # Accounting (serve_app/tenancy/accounting.py): each frame's new tokens, then once, however the request ends,
    # the model server's prompt count (None: unknown) and all output tokens.
    on_tokens: Callable[[int], None] | None = None
    on_end: Callable[[int | None, int], None] | None = None
    ingress_demand: float = 0.0  # this ingress replica's share of the model's waiting and shed load (autoscaling)

    def server_request(self, handoff_s: float, timings_ms: dict[str, float]) -> ServerRequest:
        return ServerRequest(endpoint=self.endpoint.name, body=self.body, request_id=self.request_id, wire=self.wire,
                             handoff_time_s=handoff_s, timings_ms=timings_ms, priority=self.priority,
                             ingress_id=INGRESS_ID, ingress_demand=self.ingress_demand)


class Router:
    """Client-facing model names (models and adapters) -> the model serving them, and whether it is up."""

    def __init__(self, served: dict[str, str], default_model: str, deployments: dict[str, str],
                 scales_from_zero: dict[str, bool], replicas: DeploymentReplicas,
                 cold_starts: dict[str, ColdStart] | None = None):
        self.served = served  # client-facing name -> the model serving it
        self.default_model = default_model
        self.deployments = deployments  # model -> the Serve deployment holding its replicas
        self._scales_from_zero = scales_from_zero  # placement separate only: model -> min_replicas == 0
        self._replicas = replicas
        self._cold_starts = cold_starts or {}  # models that scale from zero: who waits for a cold start

    def route(self, requested: str | None) -> tuple[str, str | None]:
        """The model serving `requested` (None: the default model) and the adapter asked for, if any."""
        if requested is None:
            return self.default_model, None
        model = self.served.get(requested)
        if model is None:
            names = list(self.served)
            shown = ", ".join(f"'{name}'" for name in names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
            raise ServeAppError(f"The model '{requested[:200]}' does not exist. Available: {shown}.",
                                status_code=404, param="model", code="model_not_found")
        return model, (requested if requested != model else None)

    async def check_replica_up(self, model: str) -> None:
        """Placement separate: 503 with Retry-After, without waiting for the model, when the controller reports no
        running replica of `model` (with_model: this replica is one). Reads the controller's view cached by
        `DeploymentReplicas`; one that says none runs is read again first unless it answered just now."""
        if model not in self._scales_from_zero:
            return
        states, status = (self._replicas.peek() or {}).get(self.deployments[model], (None, None))
        if no_replica_up(states, status, self._scales_from_zero[model]) and \
                self._replicas.since_landed_s() > NO_REPLICA_RECHECK_S:
            # A view may predate the replica's start or recovery, even within its TTL (an ingress replica that read
            # it just before the model came up refused the first requests after /health said ok): read it again
            # before refusing, unless one answered within NO_REPLICA_RECHECK_S (while the model is really down, the
            # requests of that moment get their 503 without a read each; those arriving together share one).
            states, status = (await self._replicas.get(max_age_s=NO_REPLICA_RECHECK_S) or {}).get(
                self.deployments[model], (None, None))
        if no_replica_up(states, status, self._scales_from_zero[model]):
            raise ServeAppError(f"No replica of model '{model}' is running right now; retry shortly.",
                                status_code=503, type="server_error", code="model_unavailable",
                                headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER_S)})
        cold_start = self._cold_starts.get(model)
        if cold_start is not None and states is not None:
            retry_after_s = cold_start.on_request(states.get("RUNNING", 0), time.monotonic())
            if retry_after_s is not None:
                raise ServeAppError(f"Model '{model}' is starting (scaled from zero); retry in {retry_after_s} s.",
                                    status_code=429, type="rate_limit_error", code="model_cold_starting",
                                    headers={"Retry-After": str(retry_after_s)})


class Gate:
    """Admits requests; refusals are counted in the ingress metrics and raised as `ServeAppError`."""

    def __init__(self, config: AppConfig, router: Router, backends: dict[str, ModelBackend],
                 auth: ApiKeyAuth | None, admission: AdmissionController, tenants: Any, metrics: IngressMetrics):
        self._config = config
        self._router = router
        self._backends = backends
        self._auth = auth
        self._admission = admission
        self._tenants = tenants  # serve_app.ingress.tenant_admission.TenantAdmission, or None
        self._metrics = metrics
        self._limits = RequestLimits(max_tokens=config.admission.max_tokens_limit, max_n=config.admission.max_n)

    def authenticate(self, http_request: Request) -> str | None:
        """The API key's digest (None with auth off); 401 without a valid key."""
        if self._auth is None:
            return None
        return self._auth.authenticate(http_request.headers.get("authorization"))

    async def admit(self, http_request: Request, endpoint: Endpoint, request_id: str,
                    arrival_s: float) -> AdmittedRequest:
        route = http_request.url.path
        admission = self._config.admission
        try:
            check_header_size(http_request.scope["headers"], admission.max_header_bytes)
            key_digest = self.authenticate(http_request)
            raw = await read_body(http_request, admission.max_body_bytes, admission.body_timeout_s)
            body = check_request(raw, endpoint, self._limits)
            model, adapter = self._router.route(body.get("model"))
            await self._router.check_replica_up(model)
        except ServeAppError as error:
            self._metrics.requests.labels(model="", route=route, status=str(error.status_code)).inc()
            if error.code == "model_cold_starting" and self._tenants is not None:
                self._tenants.note_shed(model)  # demand the replicas must be started for
            raise
        if not self._admission.try_acquire():
            self._metrics.rejected.labels(reason="overloaded").inc()
            self._metrics.requests.labels(model=model, route=route, status="429").inc()
            raise self._admission.overloaded_error()
        if self._config.logging.log_prompts:
            logger.info("request %s body=%s", request_id, raw[:2000])
        is_stream = wants_stream(body)
        request = AdmittedRequest(
            request_id=request_id, route=route, endpoint=endpoint, body=body, model=model, adapter=adapter,
            backend=self._backends[model], is_stream=is_stream,
            wire=choose_wire_format(http_request.headers.get("accept")) if is_stream else "sse",
            arrival_s=arrival_s, deadline_s=arrival_s + admission.request_timeout_s,
            release=Once(self._admission.release), estimated_prompt_tokens=len(raw) // 4)
        try:
            await self._limit(request, key_digest, http_request.headers)
        except BaseException as exc:
            request.release()
            if isinstance(exc, ServeAppError):
                self._metrics.requests.labels(model=model, route=route, status=str(exc.status_code)).inc()
            raise
        return request

    async def _limit(self, request: AdmittedRequest, key_digest: str | None, headers) -> None:
        """The API key's limits, then tenancy's fair slot (it may wait, or refuse): both hold when both are on.
        Each counts an estimate now and what the request used when it ends (`on_tokens`, `on_end`)."""
        max_tokens, num_sequences = requested_max_tokens(request.body), requested_n(request.body)
        key_charge = None
        if self._auth is not None and self._auth.has_limits:
            key_charge = UsageCharge(request.estimated_prompt_tokens, expected_output_tokens(max_tokens, num_sequences))
            self._auth.admit(key_digest, key_charge.charged_tokens)
            request.on_tokens = lambda num: self._auth.adjust(key_digest, key_charge.generated(num))
            request.on_end = lambda prompt, output: self._auth.adjust(key_digest, key_charge.settle(prompt, output))
        if self._tenants is None:
            return
        tenants, model = self._tenants, request.model
        tenant = tenants.tenant_of(key_digest, headers)
        try:
            admitted = await tenants.admit(model, tenant, headers, request.estimated_prompt_tokens, max_tokens,
                                           request.arrival_s, request.deadline_s, num_sequences=num_sequences)
        except BaseException as error:
            if key_charge is not None:  # not served: the key's limits do not count it
                self._auth.adjust(key_digest, -key_charge.charged_tokens, num_requests=-1)
            if isinstance(error, ServeAppError):
                self._metrics.tenant_admissions.labels(tenant=tenants.metric_label(tenant), outcome=error.code or "refused").inc()
            raise
        key_tokens, key_end = request.on_tokens, request.on_end
        request.on_tokens = lambda num: (admitted.generated(num), key_tokens and key_tokens(num))
        request.on_end = lambda prompt, output: (admitted.settle(prompt, output), key_end and key_end(prompt, output))
        self._metrics.tenant_admissions.labels(tenant=tenants.metric_label(tenant), outcome="admitted").inc()
        request.release = Once(lambda: (admitted.release(), self._admission.release()))
        request.priority = admitted.priority
        request.gate_wait_s = admitted.waited_s
        if admitted.predicted_ttft_s is not None:
            # From arrival, like the reported ttft_ms, so a client can judge the deadline admission's predictor.
            request.predicted_ttft_ms = (admitted.admitted_at_s - request.arrival_s + admitted.predicted_ttft_s) * 1000.0
        request.on_first_output = admitted.first_token
        request.ingress_demand = tenants.demand_share(model)
        # The estimator learns from the same estimate it predicts from (the body's size, not the served count).
        request.on_outcome = lambda outcome: tenants.observe(
            model, admitted, request.estimated_prompt_tokens, request.arrival_s + outcome.ttft_s,
            outcome.num_output_tokens, outcome.decode_s)
        if not request.is_stream:
            admitted.first_token()  # its first token is not seen before its end: not paced
