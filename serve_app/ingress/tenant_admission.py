"""Multi-tenant admission at the ingress (`tenancy.enabled`): whose request it is, its cluster-wide limits, its
fair turn for an engine slot, and whether it can still meet its TTFT target.

Per request, in order (each refusal is immediate, in the OpenAI error format):
1. tenant: the API key's tenant (auth on) or, with `trust_tenant_header`, the header's; priority from the key's settings
   or the priority header where the tenant allows it (400 otherwise);
2. limits: tokens and requests per minute across all ingress replicas (serve_app/tenancy/limits.py): 429 with
   Retry-After, or 503 while the limiter is unreachable with `limits_failure_mode: fail_closed`;
3. deadline: with a TTFT target (tenant's or the request's header), the TTFT predicted from the work queued
   ahead in fair order and the measured rates (serve_app/tenancy/ttft_predictor.py); a request that would miss
   it is refused now with 429 and a Retry-After of when that work will have drained, and so is one that waits
   for a slot past the point where it could still meet it (`slot_wait_budget_s`);
4. fair slot: this ingress replica's part of the running model replicas' max_num_seqs rows (with_model: its own
   engine's) run in the engines at once, following the live replica counts (`follow_replicas`), plus
   `reserved_slots` per engine above them (the engines' headroom) for tenants under their share; the rest wait
   in weighted fair order by tokens (serve_app/tenancy/fair_queue.py), at most `max_queue_wait_s` (then 429).
   The engine's own queue stays empty, so vLLM's first-come-first-served order never decides who waits; with
   `pace_prefills` a tenant over its share starts about one request per engine step (serve_app/tenancy/pacing.py).
   `gate_stats` is the queue the autoscaler should add to the engines' own.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass
from typing import Callable

from serve_app.api.errors import ServeAppError
from serve_app.autoscaling.shed_demand import ShedDemand
from serve_app.config import AppConfig, DeploymentScaling
from serve_app.tenancy.config import PriorityNotAllowed, TenancyConfig, TenantConfig
from serve_app.tenancy.accounting import UsageCharge, expected_output_tokens
from serve_app.tenancy.fair_queue import FairGate, GateStats, QueueTimeout
from serve_app.tenancy.pacing import PrefillPacer
from serve_app.tenancy.limits import ClusterLimiter, LocalLedgerBackend
from serve_app.tenancy.ttft_predictor import (
    EngineRates,
    RateEstimator,
    predict_ttft_s,
    retry_after_s,
    slot_wait_budget_s,
    would_miss_slo,
)

# While requests wait at a gate (placement `separate`), how often it reads the replica view afresh.
FOLLOW_INTERVAL_S = 1.0
# Until measured: rates of a small model on a CPU (the estimator replaces them after a few requests).
PRIOR_RATES = EngineRates(prefill_tokens_per_s=2000.0, decode_step_base_s=0.02, decode_step_per_seq_s=0.004)


def _planned_replicas(scaling: DeploymentScaling) -> int:
    """A deployment's fixed replica count, or its autoscaling minimum (at least 1)."""
    return scaling.num_replicas if isinstance(scaling.num_replicas, int) else max(1, scaling.min_replicas)


@dataclass(frozen=True)
class GateSize:
    """One model's gate at one ingress replica."""

    slots: int  # shared slots: this replica's part of the engines' max_num_seqs rows
    reserved: int  # above them: its part of the engines' headroom (tenancy.reserved_slots per engine)
    num_engines: float  # model replicas behind this gate (its part of them; with_model: its own engine, 1)

    @property
    def capacity(self) -> int:
        return self.slots + self.reserved


def gate_size(view: AppConfig, num_model_replicas: int, num_ingress_replicas: int = 1) -> GateSize:
    """The gate of one model at one ingress replica, for the live replica counts: with placement `separate`
    each of `num_ingress_replicas` ingress replicas gets its part of every model replica's rows; with
    `with_model` the ingress replica sends to its own engine only, whatever the counts."""
    if view.placement != "separate":
        num_model_replicas = num_ingress_replicas = 1
    num_engines = max(1, num_model_replicas) / max(1, num_ingress_replicas)
    slots = view.tenancy.engine_slots or max(1, int(view.batch_rows * num_engines))
    reserved = view.tenancy.reserved_slots and max(1, int(view.tenancy.reserved_slots * num_engines))
    return GateSize(slots, reserved, num_engines)


def num_running(view: dict[str, tuple[dict[str, int], str]] | None, deployment: str | None) -> int | None:
    """RUNNING replicas of `deployment` in the controller's view (serve_app/ingress/health.py); None: unknown."""
    if view is None or not deployment or deployment not in view:
        return None
    return view[deployment][0].get("RUNNING", 0)


def _drain_retry_after_s(gate: FairGate, rates: EngineRates) -> int:
    """Retry-After of a refusal: when the work now waiting at `gate` will have drained."""
    return retry_after_s(0, rates, queued_decode_tokens_ahead=gate.queue.queued_tokens(),
                         running_decode_seqs=gate.num_in_use)


@dataclass
class Admitted:
    tenant: TenantConfig
    priority: int
    release: Callable[[], None]  # idempotent: the slot may be handed on at the request's last step, before its end
    first_token: Callable[[], None]  # call at the first output (ends the request's prefill for pacing)
    waited_s: float
    predicted_ttft_s: float | None  # from `admitted_at_s`; None without a TTFT target
    admitted_at_s: float  # time.time() when admission began (the prediction's origin)
    # Exact accounting (serve_app/tenancy/accounting.py): call `generated` with each frame's new tokens and
    # `settle` once at the end, however it ends, with the model server's prompt count and all output tokens.
    generated: Callable[[int], None] = lambda num_tokens: None
    settle: Callable[[int | None, int], None] = lambda prompt_tokens, output_tokens: None


class TenantAdmission:
    """Tenancy at one ingress replica. `replicas` (health.DeploymentReplicas), `deployments` (model -> its Serve
    deployment) and `ingress_deployment` let the gates follow the live replica counts (autoscaling, replicas
    replaced); without them the planned counts stand."""

    def __init__(self, config: AppConfig, app_name: str, replicas=None, deployments: dict[str, str] | None = None,
                 ingress_deployment: str | None = None):
        self.tenancy: TenancyConfig = config.tenancy
        # Only placement `separate` sizes gates by the replica counts (with `with_model` each ingress gates its own
        # engine): there is nothing to follow otherwise, and each read of the view is a call to Serve's controller.
        self._replica_view = replicas if config.placement == "separate" else None
        self._deployments = deployments or {}
        self._ingress_deployment = ingress_deployment
        self._seen_view = None
        self._follower: asyncio.Task | None = None
        self._hash_labels = config.auth.metrics_require_auth
        if self.tenancy.limits_backend == "cluster":
            from serve_app.tenancy.limiter_actor import RayLimiterBackend

            backend = RayLimiterBackend(app_name)
        else:
            backend = LocalLedgerBackend()
        self._limiter = ClusterLimiter.from_config(self.tenancy, backend)
        self._views = {view.model.resolved_name(): view for view in config.model_views()}
        self._gates: dict[str, FairGate] = {}
        self._rates: dict[str, RateEstimator] = {}
        # Requests refused for want of capacity (deadline, slot wait), as load the autoscaler must still see.
        self._shed: dict[str, ShedDemand] = {}
        self._sizes: dict[str, GateSize] = {}
        self._mean_output: dict[str, float] = {}
        self._num_ingress = _planned_replicas(config.ingress_deployment)
        self._num_models = {name: _planned_replicas(view.model_deployment) for name, view in self._views.items()}
        for name, view in self._views.items():
            # The reserve sits above the engines' max_num_seqs (engine_args adds it as headroom), so a tenant
            # alone still fills every engine row it had without tenancy.
            size = self._sizes[name] = gate_size(view, self._num_models[name], self._num_ingress)
            pacer = PrefillPacer(self._spacing_s(PRIOR_RATES, size), self.tenancy.prefill_hold_s) \
                if self.tenancy.pace_prefills else None
            self._gates[name] = FairGate(size.capacity, reserved=size.reserved, pacer=pacer)
            self._rates[name] = RateEstimator(PRIOR_RATES)
            self._shed[name] = ShedDemand()

    @staticmethod
    def _spacing_s(rates: EngineRates, size: GateSize, prompt_tokens: int = 0) -> float:
        """A flood starts about one request per engine step and engine behind the gate: a step of a full batch's
        decodes that also carries one prefill of `prompt_tokens` (rates measured). On a CPU a 128-token prefill
        takes two decode steps' time, so spacing by decode steps alone let 2-4 of the flood's prefills into one
        step (noisy-neighbour run of a4845eb on a 2-core EPYC: 4 grants 100 ms apart in one 1.1 s step)."""
        step_s = rates.decode_step_s(round(size.slots / size.num_engines)) + prompt_tokens / rates.prefill_tokens_per_s
        return step_s / size.num_engines

    def follow_replicas(self, view: dict[str, tuple[dict[str, int], str]] | None) -> None:
        """Resize each model's gate for the controller's view of the running replicas (a count the view does not
        know, or 0 while a model scales from zero, keeps its last value). Slots held beyond a smaller gate are
        kept until released; waiters get new slots at once."""
        if view is None or view is self._seen_view:
            return
        self._seen_view = view
        self._num_ingress = num_running(view, self._ingress_deployment) or self._num_ingress
        for name, view_config in self._views.items():
            self._num_models[name] = num_running(view, self._deployments.get(name)) or self._num_models[name]
            size = gate_size(view_config, self._num_models[name], self._num_ingress)
            if size != self._sizes[name]:
                self._sizes[name] = size
                self._gates[name].set_capacity(size.capacity, size.reserved)

    def _keep_following(self) -> None:
        """While requests wait at a gate, read the replica view again every `FOLLOW_INTERVAL_S`: a replica the
        autoscaler adds takes waiters as soon as it runs, not at the next arrival (a closed-loop flood whose
        clients all wait at the gate sends none)."""
        if self._replica_view is None or (self._follower is not None and not self._follower.done()):
            return
        self._follower = asyncio.get_running_loop().create_task(self._follow_while_waiting())

    async def _follow_while_waiting(self) -> None:
        while any(gate.num_waiting for gate in self._gates.values()):
            await asyncio.sleep(FOLLOW_INTERVAL_S)
            self.follow_replicas(await self._replica_view.get(max_age_s=FOLLOW_INTERVAL_S))

    def tenant_of(self, key_digest: str | None, headers) -> TenantConfig:
        """The API key's tenant (auth on); else the tenant header's, only when the config trusts it."""
        trusted = key_digest is None and self.tenancy.trust_tenant_header
        return self.tenancy.tenant_for(key_digest, headers.get(self.tenancy.tenant_header) if trusted else None)

    def metric_label(self, tenant: TenantConfig) -> str:
        """The tenant as metrics name it: its name, or with `auth.metrics_require_auth` a digest of it (the
        metrics are mirrored to Ray's metrics port, which no key protects)."""
        if not self._hash_labels:
            return tenant.name
        return "t-" + hashlib.sha256(tenant.name.encode()).hexdigest()[:12]

    async def admit(self, model: str, tenant: TenantConfig, headers, prompt_tokens: int, max_tokens: int,
                    arrival_s: float, deadline_s: float, num_sequences: int = 1,
                    on_charge: Callable[[int], None] | None = None) -> Admitted:
        """`arrival_s`, `deadline_s`: time.time() of the request's arrival and of its end at the latest.
        `prompt_tokens`: the ingress's estimate; `max_tokens` 0: not set; `num_sequences`: the request's `n`.
        `on_charge(delta_tokens)`: told each later correction of the charge (the API key's limits compose)."""
        try:
            priority = tenant.priority_for(headers.get(self.tenancy.priority_header))
        except PriorityNotAllowed as exc:
            raise ServeAppError(str(exc), status_code=400, param=self.tenancy.priority_header,
                                code="invalid_priority") from None
        try:
            slo_s = tenant.ttft_slo_s_for(headers.get(self.tenancy.ttft_slo_header))
        except ValueError as exc:
            raise ServeAppError(str(exc), status_code=400, param=self.tenancy.ttft_slo_header,
                                code="invalid_value") from None
        charge = UsageCharge(prompt_tokens, expected_output_tokens(max_tokens, num_sequences,
                                                                   self._mean_output.get(model)))
        num_tokens = charge.charged_tokens
        decision = await self._limiter.check_and_count(tenant, num_tokens)
        if not decision.allowed:
            unavailable = decision.reason == "limiter_unavailable"
            raise ServeAppError(
                "Rate limits cannot be checked right now; retry shortly." if unavailable else
                f"Rate limit reached for tenant '{tenant.name}' ({decision.reason.replace('_', ' ')}).",
                status_code=503 if unavailable else 429, type="server_error" if unavailable else "rate_limit_error",
                code="limiter_unavailable" if unavailable else "rate_limit_exceeded",
                headers={"Retry-After": str(max(1, decision.retry_after_s))})
        admitted_at_s = time.time()
        self.follow_live_replicas()
        gate, rates = self._gates[model], self._rates[model].rates()
        if gate.pacer is not None:
            gate.pacer.spacing_s = self._spacing_s(rates, self._sizes[model], prompt_tokens)
        cost = num_tokens
        predicted_s = None
        if slo_s is not None:
            ahead = gate.queue.tokens_ahead(tenant.name, tenant.weight, priority) if gate.num_waiting else 0
            full = gate.num_in_use >= gate.capacity
            predicted_s = predict_ttft_s(0, gate.num_in_use, prompt_tokens, rates,
                                         queued_decode_tokens_ahead=ahead + (charge.output_tokens if full else 0))
            if would_miss_slo(predicted_s, slo_s):
                self._limiter.refund(tenant, num_tokens)
                self._shed[model].refused(time.monotonic())
                raise ServeAppError(
                    f"The request would miss its time-to-first-token target ({slo_s * 1000:.0f} ms; predicted "
                    f"{predicted_s * 1000:.0f} ms behind the queued work).", status_code=429,
                    type="rate_limit_error", code="deadline_unmeetable",
                    headers={"Retry-After": str(_drain_retry_after_s(gate, rates))})
        start_s = time.monotonic()
        timeout_s = max(0.001, min(self.tenancy.max_queue_wait_s, deadline_s - time.time()))
        # With a TTFT target, waiting for a slot ends when the target can no longer be met.
        # The target counts from arrival; one engine's batch is the gate's slots over its model replicas.
        batch = max(0, round(self._sizes[model].slots / self._sizes[model].num_engines) - 1)
        slo_wait_s = None if slo_s is None else slot_wait_budget_s(slo_s - (time.time() - arrival_s), prompt_tokens,
                                                                   rates, batch)
        if slo_wait_s is not None and slo_wait_s < timeout_s:
            timeout_s = max(0.001, slo_wait_s)
        else:
            slo_wait_s = None
        if gate.num_waiting or gate.num_in_use >= gate.capacity - gate.reserved:
            self._keep_following()  # this request may wait: the gate must see replicas added meanwhile
        try:
            grant = await gate.acquire(tenant.name, cost, tenant.weight, priority, timeout_s=timeout_s)
        except BaseException as exc:  # not admitted (timed out, or the client went away): not counted either
            self._limiter.refund(tenant, num_tokens)
            if isinstance(exc, QueueTimeout):
                self._shed[model].refused(time.monotonic())
                retry = {"Retry-After": str(_drain_retry_after_s(gate, rates))}
                if slo_wait_s is not None:
                    raise ServeAppError(
                        f"The request would miss its time-to-first-token target ({slo_s * 1000:.0f} ms): no engine "
                        f"slot came within {timeout_s * 1000:.0f} ms.", status_code=429, type="rate_limit_error",
                        code="deadline_missed_in_queue", headers=retry) from None
                raise ServeAppError(f"No engine slot within {timeout_s:.0f} s; the model is saturated.",
                                    status_code=429, type="rate_limit_error", code="queue_timeout",
                                    headers=retry) from None
            raise

        def correct(delta_tokens: int) -> None:
            if delta_tokens:
                gate.adjust(tenant.name, delta_tokens, tenant.weight)
                self._limiter.adjust(tenant, delta_tokens)
                if on_charge is not None:
                    on_charge(delta_tokens)

        def settle(used_prompt_tokens: int | None, output_tokens: int) -> None:
            if not charge.is_settled and output_tokens > 0:
                self._learn_output(model, output_tokens / max(1, num_sequences))
            correct(charge.settle(used_prompt_tokens, output_tokens))

        granted_s = time.monotonic()
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                gate.release(tenant.name, grant)
                self._shed[model].held(time.monotonic() - granted_s)

        num_sequences = max(1, num_sequences)
        bound_tokens = max_tokens * num_sequences if max_tokens > 0 else None

        def generated(num_new: int) -> None:
            correct(charge.generated(num_new))
            # The step that ends the request has begun once at most one token per sequence is left: hand its slot
            # on now, so the next request reaches the engine while that step runs and takes the row it frees.
            # Released at the end instead, a refill came through the gate and the frontend during the next step
            # and started a step later: one step per request (a tenant alone ran 7.3 of 8 rows, 0.90x first come
            # first served's output with 16-token requests). Only a request ending at its bound is known this
            # early; one that stops sooner releases at its end, and so does one whose frames carry several tokens
            # (`stream_interval`, speculation): "what is left fits in one more frame like this one" let a client
            # asking for frames of 1,000 tokens release its slot 999 steps early.
            if bound_tokens is not None and bound_tokens - charge.num_generated_tokens <= num_sequences:
                release()

        return Admitted(tenant, priority, release, lambda: gate.first_token(grant),
                        time.monotonic() - start_s, predicted_s, admitted_at_s, generated, settle)

    def _learn_output(self, model: str, output_tokens: float) -> None:
        """Moving mean of the output tokens per sequence (what a request without max_tokens is expected to use)."""
        mean = self._mean_output.get(model)
        self._mean_output[model] = output_tokens if mean is None else 0.95 * mean + 0.05 * output_tokens

    def observe(self, model: str, admitted: Admitted, prompt_tokens: int, first_token_at_s: float | None,
                num_tokens: int, decode_s: float | None) -> None:
        """Feed the rate estimator from a finished request: `first_token_at_s` is time.time() of its first token
        (None: none came). The prediction counts from `admitted_at_s` and covers the wait for a slot too, so the
        prefill sample is the time from the slot's grant to the first token: neither the ingress's checks before
        admission nor the gate wait (the predictor's error is judged by clients, from the response's
        `timings.predicted_ttft_ms`: benchmarks/goodput.py)."""
        rates = self._rates[model]
        if first_token_at_s is not None:
            granted_at_s = admitted.admitted_at_s + admitted.waited_s
            rates.observe_prefill(prompt_tokens, 0.0, max(0.0, first_token_at_s - granted_at_s) * 1000.0)
        if decode_s is not None and num_tokens > 1:
            rates.observe_decode(num_tokens - 1, decode_s * 1000.0, max(1, self._gates[model].num_in_use))

    def shed_demand(self) -> dict[str, float]:
        """Per model: the requests that would be running or waiting now had the ones refused for want of
        capacity in the last seconds been admitted (serve_app/autoscaling/shed_demand.py)."""
        now_s = time.monotonic()
        return {model: shed.concurrency(now_s) for model, shed in self._shed.items()}

    def note_shed(self, model: str) -> None:
        """A request for `model` refused elsewhere for want of capacity (a cold start's 429)."""
        if model in self._shed:
            self._shed[model].refused(time.monotonic())

    def demand_share(self, model: str) -> float:
        """This ingress replica's requests for `model` waiting for a slot or shed, per running model replica: what
        each model replica adds to its autoscaling report (serve_app/autoscaling/ingress_demand.py)."""
        waiting = self._gates[model].num_waiting + self._shed[model].concurrency(time.monotonic())
        return waiting / max(1, self._num_models[model])

    def follow_live_replicas(self) -> None:
        """Resize the gates for the replica view (re-read in the background when stale), in the event loop: each
        admission, and a scrape first, so the gates it shows follow a scale change no request has come through yet."""
        if self._replica_view is not None:
            self.follow_replicas(self._replica_view.peek())

    def gate_stats(self) -> dict[str, GateStats]:
        """Per model: this ingress replica's slots in use and requests waiting for one (for autoscaling)."""
        return {model: gate.stats() for model, gate in self._gates.items()}
