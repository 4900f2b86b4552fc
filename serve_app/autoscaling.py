"""Latency-target autoscaling for the model deployment.

Three layers, outermost last:

- `ReplicaLatencyStats` (used inside each model replica): windowed p99 TTFT / TPOT in bounded memory plus
  the engine's running / waiting counts; `snapshot()` is what the replica's `record_autoscaling_stats`
  returns to Ray Serve.
- `decide_num_replicas` (pure): plain dataclasses in, a replica count and the next state out. It scales up on
  whichever comes first of (a) the engine queue per replica, now or projected `queue_lookahead_s` ahead from
  its growth, crossing `max_waiting_per_replica`, or (b) the worst replica's p99 reaching
  `upscale_latency_ratio` of its target; it scales down only when the queue is empty and p99 sits below
  `downscale_latency_ratio` (with room to spare after removing a replica), or when fully idle. A direction must
  hold for `upscale_delay_s` / `downscale_delay_s` before it acts, and p99s are ignored until the windows have
  refilled after a change, so one slow window cannot trigger a second step.
- `LatencyTargetPolicy` / `latency_target_policy` (the Ray Serve hook): read this deployment's per-replica
  custom metrics from the `AutoscalingContext`, call the pure function, keep its state in `policy_state`.

This module imports nothing from Ray or the rest of serve_app at import time: Ray pickles the policy by value
into the Serve controller, which runs without this package's environment.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Mapping, Sequence

if TYPE_CHECKING:
    from serve_app.config import DeploymentScaling, ModelDeploymentConfig

logger = logging.getLogger("ray.serve")

POLICY_IMPORT_PATH = "serve_app.autoscaling:LatencyTargetPolicy"
_STATE_KEY = "serve_app_latency_policy"


# ----------------------------------------------------------------------------------------------------------
# Windowed percentiles inside a replica
# ----------------------------------------------------------------------------------------------------------


class WindowedPercentile:
    """Percentiles of values seen in the last `window_s` seconds, in bounded memory.

    Values land in log-spaced buckets (each `growth` times wider than the last, so a percentile is within
    about (growth - 1) / 2 of the true value) kept per time slice; a slice older than the window is dropped
    whole. Memory is at most `num_slices` x the number of distinct buckets, whatever the sample rate.
    """

    def __init__(self, window_s: float, num_slices: int = 10, min_value: float = 0.01, growth: float = 1.05):
        if window_s <= 0 or num_slices < 1:
            raise ValueError("window_s must be > 0 and num_slices >= 1")
        self.window_s = window_s
        self._slice_s = window_s / num_slices
        self._num_slices = num_slices
        self._min_value = min_value
        self._log_growth = math.log(growth)
        self._growth = growth
        # (slice index, {bucket index: count}); oldest first.
        self._slices: deque[tuple[int, dict[int, int]]] = deque()

    def record(self, value: float, now_s: float) -> None:
        slice_index = int(now_s // self._slice_s)
        if not self._slices or slice_index > self._slices[-1][0]:
            self._slices.append((slice_index, {}))
            self._evict(slice_index)
        counts = self._slices[-1][1]
        bucket = self._bucket(value)
        counts[bucket] = counts.get(bucket, 0) + 1

    def count(self, now_s: float) -> int:
        self._evict(int(now_s // self._slice_s))
        return sum(sum(counts.values()) for _, counts in self._slices)

    def percentile(self, q: float, now_s: float) -> float | None:
        """The q-quantile (0 < q <= 1) of the window, or None when it is empty."""
        self._evict(int(now_s // self._slice_s))
        merged: dict[int, int] = {}
        for _, counts in self._slices:
            for bucket, n in counts.items():
                merged[bucket] = merged.get(bucket, 0) + n
        total = sum(merged.values())
        if total == 0:
            return None
        rank = max(1, math.ceil(q * total))
        seen = 0
        for bucket in sorted(merged):
            seen += merged[bucket]
            if seen >= rank:
                return self._value(bucket)
        return self._value(max(merged))

    def _evict(self, now_slice: int) -> None:
        while self._slices and self._slices[0][0] <= now_slice - self._num_slices:
            self._slices.popleft()

    def _bucket(self, value: float) -> int:
        if value <= self._min_value:
            return 0
        return 1 + int(math.log(value / self._min_value) / self._log_growth)

    def _value(self, bucket: int) -> float:
        if bucket == 0:
            return self._min_value
        # Geometric middle of the bucket [min * g^(b-1), min * g^b).
        return self._min_value * self._growth ** (bucket - 0.5)


class ReplicaLatencyStats:
    """What one model replica reports for autoscaling: windowed p99 TTFT / TPOT and its engine load.

    TTFT is one sample per request; TPOT may be one per request (its mean time per output token) or one per
    gap. Thread-safe: requests record on the replica's event loop while Serve may call `snapshot` elsewhere.
    """

    def __init__(self, window_s: float = 30.0, num_slices: int = 10):
        self._ttft_ms = WindowedPercentile(window_s, num_slices)
        self._tpot_ms = WindowedPercentile(window_s, num_slices)
        self._num_running = 0.0
        self._num_waiting = 0.0
        self._lock = threading.Lock()

    def record_ttft_ms(self, value: float, now_s: float) -> None:
        with self._lock:
            self._ttft_ms.record(value, now_s)

    def record_tpot_ms(self, value: float, now_s: float) -> None:
        with self._lock:
            self._tpot_ms.record(value, now_s)

    def set_load(self, num_running: float, num_waiting: float) -> None:
        with self._lock:
            self._num_running = float(num_running)
            self._num_waiting = float(num_waiting)

    def snapshot(self, now_s: float) -> dict[str, float]:
        """Plain floats for `record_autoscaling_stats`; a p99 is 0.0 when its window holds no samples."""
        with self._lock:
            num_ttft = self._ttft_ms.count(now_s)
            num_tpot = self._tpot_ms.count(now_s)
            return {
                "ttft_p99_ms": float(self._ttft_ms.percentile(0.99, now_s) or 0.0),
                "tpot_p99_ms": float(self._tpot_ms.percentile(0.99, now_s) or 0.0),
                "num_samples": float(num_ttft),
                "num_ttft_samples": float(num_ttft),
                "num_tpot_samples": float(num_tpot),
                "num_running": self._num_running,
                "num_waiting": self._num_waiting,
            }


# ----------------------------------------------------------------------------------------------------------
# The pure decision
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScalingParams:
    """Targets and knobs of the decision (see `LatencyTargets` in serve_app/config.py for their meaning)."""

    min_replicas: int = 1
    max_replicas: int = 4
    ttft_p99_target_ms: float = 1000.0
    tpot_p99_target_ms: float = 200.0
    upscale_latency_ratio: float = 0.8
    downscale_latency_ratio: float = 0.5
    max_waiting_per_replica: float = 4.0
    queue_lookahead_s: float = 10.0
    min_samples: int = 10
    upscale_delay_s: float = 10.0
    downscale_delay_s: float = 60.0
    # p99 windows still hold samples from before a change for this long after the replicas settle.
    latency_settle_s: float = 30.0
    # The queue's growth rate is a slope over this many seconds of history.
    queue_growth_window_s: float = 10.0
    # Scale down only if the replicas left would run at most this fraction of the batch size at which
    # a replica last started queueing (when that has been seen).
    downscale_max_utilization: float = 0.75


@dataclass(frozen=True)
class ReplicaSignal:
    """One replica's latest report."""

    ttft_p99_ms: float = 0.0
    tpot_p99_ms: float = 0.0
    num_ttft_samples: int = 0
    num_tpot_samples: int = 0
    num_running: float = 0.0
    num_waiting: float = 0.0

    @classmethod
    def from_snapshot(cls, snapshot: Mapping[str, float]) -> "ReplicaSignal":
        num_ttft = snapshot.get("num_ttft_samples", snapshot.get("num_samples", 0.0))
        return cls(
            ttft_p99_ms=float(snapshot.get("ttft_p99_ms", 0.0)),
            tpot_p99_ms=float(snapshot.get("tpot_p99_ms", 0.0)),
            num_ttft_samples=int(num_ttft),
            num_tpot_samples=int(snapshot.get("num_tpot_samples", num_ttft)),
            num_running=float(snapshot.get("num_running", 0.0)),
            num_waiting=float(snapshot.get("num_waiting", 0.0)),
        )


@dataclass(frozen=True)
class ScalingObservation:
    now_s: float
    # The count the controller is currently aiming for, and how many replicas are up.
    target_num_replicas: int
    num_running_replicas: int
    replicas: Sequence[ReplicaSignal] = ()
    # Requests held at handles because every replica is at `max_ongoing_requests`.
    num_queued_at_handles: float = 0.0


@dataclass(frozen=True)
class ScalingState:
    """What the decision remembers between calls (kept in Ray's `policy_state` as a plain dict)."""

    # +1 while scale-up is wanted, -1 while scale-down is wanted, 0 otherwise; since when.
    pressure: int = 0
    pressure_since_s: float | None = None
    last_scale_up_s: float | None = None
    last_scale_down_s: float | None = None
    # When the running replicas first matched the target after the last change.
    settled_since_s: float | None = None
    # (time_s, total waiting requests), oldest first, spaced and bounded by the growth window.
    waiting_history: tuple[tuple[float, float], ...] = ()
    # Running requests of a replica that had a queue, last time one had: what one replica holds.
    saturated_running_per_replica: float | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["waiting_history"] = [list(point) for point in self.waiting_history]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "ScalingState":
        if not data:
            return cls()
        values = dict(data)
        values["waiting_history"] = tuple((float(t), float(w)) for t, w in values.get("waiting_history", ()))
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in values.items() if k in known})


@dataclass(frozen=True)
class ScalingDecision:
    num_replicas: int
    state: ScalingState
    reason: str
    # What the signals ask for right now, before delays.
    desired_num_replicas: int = 0
    signals: dict[str, float] = field(default_factory=dict)


def decide_num_replicas(params: ScalingParams, obs: ScalingObservation, state: ScalingState) -> ScalingDecision:
    """Replica count for the model deployment from its replicas' latency and queue signals."""
    now_s = obs.now_s
    target = obs.target_num_replicas
    bounded = min(max(target, params.min_replicas), params.max_replicas)

    total_running = sum(r.num_running for r in obs.replicas)
    total_waiting = sum(r.num_waiting for r in obs.replicas) + max(0.0, obs.num_queued_at_handles)
    history = _update_history(state.waiting_history, now_s, total_waiting, params.queue_growth_window_s)
    growth_per_s = _slope(history, now_s, total_waiting, params.queue_growth_window_s)
    is_settled = obs.num_running_replicas == target
    settled_since_s = (state.settled_since_s if state.settled_since_s is not None else now_s) if is_settled else None
    saturated = [r.num_running for r in obs.replicas if r.num_waiting > 0 and r.num_running > 0]
    state = replace(
        state,
        waiting_history=history,
        settled_since_s=settled_since_s,
        saturated_running_per_replica=max(saturated) if saturated else state.saturated_running_per_replica,
    )

    if bounded != target:
        return _changed(state, bounded, target, now_s, "bounds", bounded, {})
    if target == 0:
        # Scale from zero at once: nothing can serve the queue meanwhile (Ray also does this before us).
        wanted = 1 if (total_waiting > 0 or total_running > 0) and params.max_replicas > 0 else 0
        return _changed(state, wanted, target, now_s, "cold start", wanted, {}) if wanted else _hold(
            state, target, "idle at zero", 0, {}
        )

    n = target
    num_up = max(1, obs.num_running_replicas)
    projected_waiting = total_waiting + max(0.0, growth_per_s) * params.queue_lookahead_s
    ttft_ratio, tpot_ratio, has_latency = _latency_ratios(params, obs.replicas)
    latency_ratio = max(ttft_ratio, tpot_ratio)
    last_change_s = max((t for t in (state.last_scale_up_s, state.last_scale_down_s) if t is not None), default=None)
    latency_usable = last_change_s is None or (
        settled_since_s is not None and now_s - settled_since_s >= params.latency_settle_s
    )
    signals = {
        "ttft_ratio": ttft_ratio,
        "tpot_ratio": tpot_ratio,
        "total_running": total_running,
        "total_waiting": total_waiting,
        "waiting_growth_per_s": growth_per_s,
        "projected_waiting": projected_waiting,
    }

    up_reasons = []
    if total_waiting / num_up >= params.max_waiting_per_replica:
        up_reasons.append("queue depth")
    elif growth_per_s > 0 and projected_waiting / num_up >= params.max_waiting_per_replica:
        up_reasons.append("queue growth")
    if latency_usable and has_latency and latency_ratio >= params.upscale_latency_ratio:
        up_reasons.append("p99 latency")

    desired, direction, reason = n, 0, "within targets"
    if up_reasons and n < params.max_replicas:
        if obs.num_running_replicas < target:
            # Replicas are still starting: their capacity is not in the signals yet.
            reason = "waiting for new replicas"
        else:
            desired = _upscale_count(params, n, total_running, projected_waiting, latency_ratio, up_reasons)
            direction, reason = 1, " + ".join(up_reasons)
    elif up_reasons:
        reason = "at max_replicas"
    elif n > params.min_replicas and total_waiting == 0 and growth_per_s <= 0 and obs.num_running_replicas >= target:
        if total_running == 0:
            desired, direction, reason = params.min_replicas, -1, "idle"
        elif latency_usable and has_latency and _can_remove_one(params, state, n, ttft_ratio, tpot_ratio, total_running):
            desired, direction, reason = n - 1, -1, "p99 well below target"
    signals["desired_num_replicas"] = float(desired)

    if direction == 0:
        return _hold(replace(state, pressure=0, pressure_since_s=None), n, reason, desired, signals)
    if state.pressure != direction or state.pressure_since_s is None:
        state = replace(state, pressure=direction, pressure_since_s=now_s)
    delay_s = params.upscale_delay_s if direction > 0 else params.downscale_delay_s
    if now_s - state.pressure_since_s + 1e-9 < delay_s:
        return _hold(state, n, f"{reason} (waiting {delay_s:g}s delay)", desired, signals)
    return _changed(state, desired, n, now_s, reason, desired, signals)


def _update_history(
    history: tuple[tuple[float, float], ...], now_s: float, total_waiting: float, window_s: float
) -> tuple[tuple[float, float], ...]:
    # Keep about 8 points per window: enough for a slope, bounded however often the policy runs.
    points = [p for p in history if now_s - window_s <= p[0] <= now_s]
    if not points or now_s - points[-1][0] >= window_s / 8:
        points.append((now_s, total_waiting))
    return tuple(points)


def _slope(history: tuple[tuple[float, float], ...], now_s: float, total_waiting: float, window_s: float) -> float:
    if not history:
        return 0.0
    oldest_s, oldest_waiting = history[0]
    span_s = now_s - oldest_s
    if span_s < window_s / 4:
        return 0.0
    return (total_waiting - oldest_waiting) / span_s


def _latency_ratios(params: ScalingParams, replicas: Sequence[ReplicaSignal]) -> tuple[float, float, bool]:
    """Worst p99 / target of TTFT and of TPOT over replicas with enough samples; whether any had enough."""
    ttft = [r.ttft_p99_ms / params.ttft_p99_target_ms for r in replicas if r.num_ttft_samples >= params.min_samples]
    tpot = [r.tpot_p99_ms / params.tpot_p99_target_ms for r in replicas if r.num_tpot_samples >= params.min_samples]
    return max(ttft, default=0.0), max(tpot, default=0.0), bool(ttft or tpot)


def _upscale_count(
    params: ScalingParams,
    n: int,
    total_running: float,
    projected_waiting: float,
    latency_ratio: float,
    up_reasons: list[str],
) -> int:
    wanted = n + 1
    if "p99 latency" in up_reasons:
        wanted = max(wanted, math.ceil(n * latency_ratio / params.upscale_latency_ratio))
    if total_running > 0 and ("queue depth" in up_reasons or "queue growth" in up_reasons):
        # A replica with a queue is saturated: its running count is what one replica holds.
        per_replica = total_running / n
        wanted = max(wanted, math.ceil((total_running + projected_waiting) / per_replica))
    # At most double per step: the next step sees the new replicas' effect first.
    return min(wanted, 2 * n, params.max_replicas)


def _can_remove_one(
    params: ScalingParams, state: ScalingState, n: int, ttft_ratio: float, tpot_ratio: float, total_running: float
) -> bool:
    """Hysteresis: both p99s below the low mark now, and no reason to come straight back up on n - 1 replicas.

    TTFT is mostly queueing, so it is assumed to grow with load per replica (x n / (n - 1)); TPOT is mostly
    the per-step cost of a batch, so it is only held to the low mark. When the batch size at which a replica
    starts queueing is known, the replicas left must stay well under it.
    """
    if max(ttft_ratio, tpot_ratio) > params.downscale_latency_ratio:
        return False
    if ttft_ratio * n / (n - 1) >= params.upscale_latency_ratio:
        return False
    capacity = state.saturated_running_per_replica
    return capacity is None or total_running / (n - 1) <= params.downscale_max_utilization * capacity


def _hold(state: ScalingState, n: int, reason: str, desired: int, signals: dict[str, float]) -> ScalingDecision:
    return ScalingDecision(n, state, reason, desired, signals)


def _changed(
    state: ScalingState, new: int, old: int, now_s: float, reason: str, desired: int, signals: dict[str, float]
) -> ScalingDecision:
    state = replace(state, pressure=0, pressure_since_s=None, settled_since_s=None)
    if new > old:
        state = replace(state, last_scale_up_s=now_s)
    elif new < old:
        state = replace(state, last_scale_down_s=now_s)
    return ScalingDecision(new, state, reason, desired, signals)


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


def scaling_params(cfg: "ModelDeploymentConfig") -> ScalingParams:
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
    )


def model_autoscaling_config(cfg: "ModelDeploymentConfig") -> dict[str, Any]:
    """`autoscaling_config=` for the model deployment: the latency-target policy with its targets."""
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
        "policy": {"policy_function": POLICY_IMPORT_PATH, "policy_kwargs": asdict(scaling_params(cfg))},
    }


def stage_autoscaling_config(cfg: "DeploymentScaling") -> dict[str, Any]:
    """`autoscaling_config=` for a CPU stage (tokenizer, streaming node, ingress): Ray's request-based policy."""
    target = cfg.target_ongoing_requests or max(1.0, cfg.max_ongoing_requests / 2)
    return {
        "min_replicas": cfg.min_replicas,
        "max_replicas": cfg.max_replicas,
        "target_ongoing_requests": target,
        "upscale_delay_s": cfg.upscale_delay_s,
        "downscale_delay_s": cfg.downscale_delay_s,
    }
