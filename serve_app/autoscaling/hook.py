"""The Ray Serve hook: reads this deployment's per-replica custom metrics from the `AutoscalingContext`, calls
the pure policy, keeps its state in `policy_state`; and the `autoscaling_config` dicts the builder uses.

Imports nothing from Ray at import time: Ray pickles this module by value into the Serve controller, which then
imports only `serve_app.autoscaling.policy` (standard library only) by reference.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any

from serve_app.autoscaling.policy import ReplicaSignal, ScalingObservation, ScalingParams, ScalingState, decide_num_replicas

if TYPE_CHECKING:
    from serve_app.config import DeploymentScaling, ModelDeploymentConfig

logger = logging.getLogger("ray.serve")

POLICY_IMPORT_PATH = "serve_app.autoscaling.hook:LatencyTargetPolicy"
_STATE_KEY = "serve_app_latency_policy"


# ----------------------------------------------------------------------------------------------------------
# The Ray Serve hook
# ----------------------------------------------------------------------------------------------------------


def latency_target_policy(ctx: Any, params: ScalingParams | None = None) -> tuple[int, dict[str, Any]]:
    """Ray Serve deployment-level autoscaling policy: `AutoscalingContext` in, (replicas, policy_state) out.

    Usable directly as `policy_function` (default `ScalingParams`); `LatencyTargetPolicy` carries the
    configured targets. Bounds come from the context (min/max adjusted for target capacity). Ray applies its
    own delays after this; `model_autoscaling_config` sets them to 0 because this policy applies its own.
    """
    import time

    params = replace(
        params or ScalingParams(),
        min_replicas=int(ctx.capacity_adjusted_min_replicas),
        max_replicas=int(ctx.capacity_adjusted_max_replicas),
    )
    policy_state = dict(ctx.policy_state or {})
    state = ScalingState.from_dict(policy_state.get(_STATE_KEY))
    try:
        obs = ScalingObservation(
            now_s=float(ctx.current_time if ctx.current_time is not None else time.time()),
            target_num_replicas=int(ctx.target_num_replicas),
            num_running_replicas=int(ctx.current_num_replicas),
            replicas=tuple(_replica_signals(ctx)),
            num_queued_at_handles=_queued_at_handles(ctx),
        )
        decision = decide_num_replicas(params, obs, state)
    except Exception:
        logger.exception("latency_target_policy failed; keeping %s replicas", ctx.target_num_replicas)
        return int(ctx.target_num_replicas), policy_state
    if decision.num_replicas != obs.target_num_replicas:
        logger.info(
            "Autoscaling %s: %d -> %d replicas (%s; %s)",
            ctx.deployment_name,
            obs.target_num_replicas,
            decision.num_replicas,
            decision.reason,
            {k: round(v, 3) for k, v in decision.signals.items()},
        )
    policy_state[_STATE_KEY] = decision.state.to_dict()
    return decision.num_replicas, policy_state


class LatencyTargetPolicy:
    """Class-callable form of `latency_target_policy`: Ray builds it once with `policy_kwargs` (the targets)."""

    def __init__(self, **params: Any):
        self.params = ScalingParams(**params)

    def __call__(self, ctx: Any) -> tuple[int, dict[str, Any]]:
        return latency_target_policy(ctx, self.params)


def _replica_signals(ctx: Any) -> list[ReplicaSignal]:
    """The latest report of each running replica of this deployment (the context holds only its own)."""
    raw = ctx.raw_metrics or {}
    signals = []
    for replica_id in ctx.running_replicas:
        snapshot = {}
        for name, per_replica in raw.items():
            series = per_replica.get(replica_id)
            if series:
                snapshot[name] = float(max(series, key=lambda point: point.timestamp).value)
        if snapshot:
            signals.append(ReplicaSignal.from_snapshot(snapshot))
    return signals


def _queued_at_handles(ctx: Any) -> float:
    try:
        return float(ctx.total_queued_requests or 0.0)
    except Exception:  # Older controllers may not track it; the engine queues still count.
        return 0.0


# ----------------------------------------------------------------------------------------------------------
# Serve `autoscaling_config` dicts
# ----------------------------------------------------------------------------------------------------------


def scaling_params(cfg: "ModelDeploymentConfig", slots_per_replica: int | None = None) -> ScalingParams:
    targets = cfg.latency_targets
    return ScalingParams(
        min_replicas=cfg.min_replicas,
        max_replicas=cfg.max_replicas,
        ttft_p99_target_ms=targets.ttft_p99_ms,
        tpot_p99_target_ms=targets.tpot_p99_ms,
        upscale_latency_ratio=targets.upscale_latency_ratio,
        downscale_latency_ratio=targets.downscale_latency_ratio,
        max_waiting_per_replica=targets.max_waiting_per_replica,
        queue_lookahead_s=targets.queue_lookahead_s,
        min_samples=targets.min_samples,
        upscale_delay_s=cfg.upscale_delay_s,
        downscale_delay_s=cfg.downscale_delay_s,
        latency_settle_s=targets.window_s,
        queue_growth_window_s=max(targets.queue_lookahead_s, 4 * targets.report_interval_s),
        slots_per_replica=slots_per_replica,
    )


def model_autoscaling_config(cfg: "ModelDeploymentConfig", slots_per_replica: int | None = None) -> dict[str, Any]:
    """`autoscaling_config=` for the model deployment: the latency-target policy with its targets, or Ray Serve's
    request-based policy when `autoscaling_policy` is `ongoing_requests`. `slots_per_replica`: what a full replica
    runs (`AppConfig.batch_rows`)."""
    if cfg.autoscaling_policy == "ongoing_requests":
        return request_based_autoscaling_config(cfg)
    targets = cfg.latency_targets
    return {
        "min_replicas": cfg.min_replicas,
        "max_replicas": cfg.max_replicas,
        # The policy applies upscale/downscale delays itself; Ray's would add to them.
        "upscale_delay_s": 0.0,
        "downscale_delay_s": 0.0,
        "metrics_interval_s": targets.report_interval_s,
        # Replicas already window their stats; Ray only needs to keep a few reports.
        "look_back_period_s": max(targets.window_s, 3 * targets.report_interval_s),
        "policy": {"policy_function": POLICY_IMPORT_PATH,
                   "policy_kwargs": asdict(scaling_params(cfg, slots_per_replica))},
    }


def request_based_autoscaling_config(cfg: "DeploymentScaling") -> dict[str, Any]:
    """`autoscaling_config=` of Ray Serve's request-based policy (the ingress with placement `separate`, or a model
    deployment with `autoscaling_policy: ongoing_requests`)."""
    target = cfg.target_ongoing_requests or max(1.0, cfg.max_ongoing_requests / 2)
    return {
        "min_replicas": cfg.min_replicas,
        "max_replicas": cfg.max_replicas,
        "target_ongoing_requests": target,
        "upscale_delay_s": cfg.upscale_delay_s,
        "downscale_delay_s": cfg.downscale_delay_s,
    }
