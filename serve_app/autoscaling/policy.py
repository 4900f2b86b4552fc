"""The pure scaling decision: plain dataclasses in, a replica count and the next state out (no Ray, no I/O)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Mapping, Sequence

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
    # TPOT adds replicas only past this fraction of its target. It is set by the batch a replica runs, which
    # max_num_seqs caps: a TPOT under target at a full batch cannot grow with more load (the excess queues and shows
    # in TTFT), and more replicas only shrink batches that already meet it (replay step_4x, 2026-12-05: TPOT p99
    # 85 ms of 100 at full batches took 6 replicas to 8 with 27 of 48 slots busy).
    tpot_upscale_ratio: float = 1.0
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
    # What a full replica runs: its engine's max_num_seqs (AppConfig.batch_rows; tenancy's reserve above it is kept
    # for a quiet tenant). None: learnt from the replicas' reports instead (the most running seen on a replica with
    # a queue of its own).
    slots_per_replica: int | None = None


@dataclass(frozen=True)
class ReplicaSignal:
    """One replica's latest report."""

    ttft_p99_ms: float = 0.0
    tpot_p99_ms: float = 0.0
    num_ttft_samples: int = 0
    num_tpot_samples: int = 0
    num_running: float = 0.0
    # All load waiting for this deployment that this replica reports: its own queue plus its share of what waits
    # or was refused elsewhere (shed demand, ingress replicas' gates).
    num_waiting: float = 0.0
    # Its own queue only (engine, and its tenancy gate with placement with_model): what says *this* replica is full.
    num_local_waiting: float | None = None

    @property
    def own_waiting(self) -> float:
        return self.num_waiting if self.num_local_waiting is None else self.num_local_waiting

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
            num_local_waiting=float(snapshot["num_local_waiting"]) if "num_local_waiting" in snapshot else None,
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
    # The most running requests seen on a replica with a queue of its own: what one replica holds when full.
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
    # What one replica runs when full: the most running on a replica with a queue of its own, ever seen. Not the
    # latest: a request waits a step in an idle engine's queue too, and load refused or queued elsewhere says
    # nothing of this replica (replay step_4x, 2026-12-04: a latest-value estimate fell to 2 of 8 at light load).
    # Known rows need no learning: at a burst's start a request waits a step in a replica running 1 or 2, and a
    # first estimate of 1 sized the cold start for 8 replicas where 4 ran the load (replay bursty_cv3, 2026-12-05).
    saturated = [] if params.slots_per_replica else [
        r.num_running for r in obs.replicas if r.own_waiting > 0 and r.num_running > 0]
    state = replace(
        state,
        waiting_history=history,
        settled_since_s=settled_since_s,
        saturated_running_per_replica=max(saturated + [state.saturated_running_per_replica or 0.0]) or None,
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
    # How far past its upscale mark the worse of the two is (>= 1: a breach).
    latency_pressure = max(ttft_ratio / params.upscale_latency_ratio, tpot_ratio / params.tpot_upscale_ratio)
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
    capacity = params.slots_per_replica or state.saturated_running_per_replica or (
        total_running / num_up if total_waiting > 0 else None)
    # A p99 window keeps a burst's slow requests after the burst is served: with nothing waiting and the replicas
    # well below the batch at which they queue, a high p99 is the past, not a reason to add replicas.
    is_loaded = total_waiting > 0 or not capacity or total_running / num_up >= params.downscale_max_utilization * capacity
    # Nor is it one while the queue drains: the breach is behind (replay step_4x, 2026-12-05: a 15 s burst's p99
    # with under one request waiting and the queue shrinking took 6 replicas to 8, up 60 s after the step ended).
    # A breach with no queue at all (slope 0, e.g. long prefills) still scales up.
    is_draining = total_waiting < 1.0 and growth_per_s < 0
    if latency_usable and has_latency and latency_pressure >= 1.0 and is_loaded and not is_draining:
        up_reasons.append("p99 latency")

    is_starting = obs.num_running_replicas < target
    # Scale-down needs a quiet queue, not an empty one: at light load a request waits a step for its engine now
    # and then, and an empty-queue rule restarted the hold at each (replay step_4x, 2026-12-05: 6 replicas kept
    # 105 s past the step). Quiet: the projected queue under a quarter of the upscale mark.
    is_quiet = projected_waiting <= 0.25 * params.max_waiting_per_replica * num_up
    desired, direction, reason = n, 0, "within targets"
    if up_reasons and n < params.max_replicas:
        desired = _upscale_count(params, n, target - obs.num_running_replicas, total_running, total_waiting, projected_waiting,
                                 latency_pressure, up_reasons, capacity)
        if desired > n:
            direction, reason = 1, " + ".join(up_reasons)
        else:
            # The replicas already starting will hold what the queue asks for.
            reason = "waiting for new replicas"
    elif up_reasons:
        reason = "at max_replicas"
    elif n > params.min_replicas and is_quiet and not is_starting:
        if total_running == 0 and total_waiting == 0:
            desired, direction, reason = params.min_replicas, -1, "idle"
        elif latency_usable and has_latency:
            desired = _downscale_count(params, n, ttft_ratio, tpot_ratio, total_running + total_waiting, capacity)
            if desired < n:
                direction, reason = -1, "p99 well below target"
        elif not has_latency and capacity:
            # Too few requests per replica to fill a p99 window is itself light load (replay step_4x, 2026-12-04:
            # 8 replicas held 1.5 req/s for three minutes, each window short of min_samples, so none went).
            # Size by the batch at which a replica queues, as the p99 path does when both p99s are low.
            desired = _fewest_at_utilization(params, n, total_running + total_waiting, capacity)
            if desired < n:
                direction, reason = -1, "too few requests per replica for a p99"
    signals["desired_num_replicas"] = float(desired)
    signals["capacity_per_replica"] = float(capacity or 0.0)

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
    num_starting: int,
    total_running: float,
    total_waiting: float,
    projected_waiting: float,
    latency_pressure: float,
    up_reasons: list[str],
    capacity: float | None,
) -> int:
    """Replicas wanted on the way up; `n` (the target) already counts the replicas still starting.

    The queue sizes the step: the running and projected waiting requests over what one saturated replica runs
    (`capacity`). That is the whole need, so replicas already starting are counted once, by comparing with `n`,
    and the step is not capped: each capped step would cost a full cold start. The latency signal alone (its
    windows lag and it says nothing of the size) steps by at most double, and not while replicas start (their
    effect is not in the windows yet).
    """
    wanted = n
    if num_starting == 0:
        wanted = n + 1
        if "p99 latency" in up_reasons:
            wanted = max(wanted, min(2 * n, math.ceil(n * latency_pressure)))
    if capacity and ("queue depth" in up_reasons or "queue growth" in up_reasons):
        if num_starting > 0:
            # The queue grows mostly for want of the replicas starting: more only for what their slots will not take.
            if total_waiting - num_starting * capacity < params.max_waiting_per_replica * n:
                return n
            projected_waiting = total_waiting
        wanted = max(wanted, math.ceil((total_running + projected_waiting) / capacity - 1e-9))
    return min(wanted, params.max_replicas)


def _fewest_at_utilization(params: ScalingParams, n: int, load: float, capacity: float) -> int:
    """The fewest replicas (at most `n`, at least min_replicas and 1) that run `load` requests at
    `downscale_max_utilization` of a replica's `capacity`."""
    fewest = math.ceil(load / (params.downscale_max_utilization * capacity) - 1e-9)
    return min(n, max(params.min_replicas, fewest, 1))


def _downscale_count(
    params: ScalingParams, n: int, ttft_ratio: float, tpot_ratio: float, load: float, capacity: float | None
) -> int:
    """Replicas wanted on the way down (hysteresis): both p99s below the low mark now, and no reason to come
    straight back up on the replicas left.

    When the batch at which a replica queues is known, go straight to the fewest replicas that run the current
    load at `downscale_max_utilization` of it (the way up sizes at 100%, so the two marks do not meet);
    otherwise one at a time. TTFT is mostly queueing, so it is assumed to grow with load per replica
    (x n / left); TPOT is mostly the per-step cost of a batch, so it is held to the low mark only when that
    batch bound is unknown.
    """
    # A known capacity bounds the batch the replicas left run, and so their TPOT: it need only be under the high mark.
    tpot_mark = params.tpot_upscale_ratio if capacity else params.downscale_latency_ratio
    if ttft_ratio > params.downscale_latency_ratio or tpot_ratio >= tpot_mark:
        return n
    if capacity:
        left = _fewest_at_utilization(params, n, load, capacity)
        if left == n:
            return n
    else:
        left = n - 1
    while left < n and ttft_ratio * n / left >= params.upscale_latency_ratio:
        left += 1
    return left


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
