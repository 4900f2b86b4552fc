"""The latency-target autoscaling decision on synthetic traces, the replica stats, and the Serve hook.

The traces run a small fluid model of a model deployment, one tick a second: requests arrive at a rate,
each replica runs at most `BATCH` at once for `SERVICE_S` seconds each, the rest wait; a new replica starts
serving `STARTUP_S` after the decision; windowed p99 TTFT is the worst queueing delay of the last window.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, replace
from types import SimpleNamespace

import pytest

from serve_app.autoscaling.hook import (
    LatencyTargetPolicy,
    latency_target_policy,
    model_autoscaling_config,
    request_based_autoscaling_config,
)
from serve_app.autoscaling.policy import (
    ReplicaSignal,
    ScalingObservation,
    ScalingParams,
    ScalingState,
    decide_num_replicas,
)
from serve_app.autoscaling.window import ReplicaLatencyStats, WindowedPercentile
from serve_app.config import AppConfig, DeploymentScaling, LatencyTargets, ModelDeploymentConfig

BATCH = 8  # concurrent requests one replica runs
SERVICE_S = 4.0  # seconds a running request takes; one replica serves BATCH / SERVICE_S = 2 requests/s
STARTUP_S = 20  # seconds from decision to a new replica serving
BASE_TTFT_MS = 200.0
BASE_TPOT_MS = 40.0
WINDOW_S = 30

PARAMS = ScalingParams(
    min_replicas=1,
    max_replicas=6,
    ttft_p99_target_ms=2000.0,
    tpot_p99_target_ms=100.0,
    upscale_delay_s=5.0,
    downscale_delay_s=60.0,
    latency_settle_s=WINDOW_S,
    max_waiting_per_replica=4.0,
    queue_lookahead_s=10.0,
    min_samples=5,
)


@dataclass
class Tick:
    t: int
    target: int
    running_replicas: int
    waiting: float
    running: float
    ttft_p99_ms: float
    tpot_p99_ms: float
    reason: str


@dataclass
class Sim:
    params: ScalingParams = PARAMS
    initial_replicas: int = 1
    ttft_noise: float = 0.0
    seed: int = 0
    trace: list[Tick] = field(default_factory=list)

    def run(self, rate_at, duration_s: int, initial_running: float = 0.0) -> list[Tick]:
        rng = random.Random(self.seed)
        target = running_replicas = self.initial_replicas
        starting: list[tuple[int, int]] = []  # (ready_at_s, count)
        state = ScalingState()
        waiting, running = 0.0, initial_running
        ttft_window: list[tuple[int, float]] = []
        tpot_window: list[tuple[int, float]] = []
        for t in range(duration_s):
            ready = sum(c for at, c in starting if at <= t)
            starting = [(at, c) for at, c in starting if at > t]
            running_replicas = min(target, running_replicas + ready)
            if running_replicas > target:
                running_replicas = target
            # Fluid queue: arrivals, completions, admission into free batch slots.
            waiting += rate_at(t)
            running -= running / SERVICE_S
            running = running if running > 0.01 else 0.0
            admit = min(waiting, max(0.0, running_replicas * BATCH - running))
            running, waiting = running + admit, waiting - admit
            throughput = max(1e-9, running_replicas * BATCH / SERVICE_S)
            ttft_ms = BASE_TTFT_MS + 1000.0 * waiting / throughput
            tpot_ms = BASE_TPOT_MS * (1 + 0.5 * running / max(1, running_replicas) / BATCH)
            active = rate_at(t) > 0 or running > 0.01
            if active:
                ttft_window.append((t, ttft_ms))
                tpot_window.append((t, tpot_ms))
            ttft_window = [(s, v) for s, v in ttft_window if s > t - WINDOW_S]
            tpot_window = [(s, v) for s, v in tpot_window if s > t - WINDOW_S]
            # Measurement noise on the reported percentile itself (few samples, bursty arrivals).
            ttft_p99 = max((v for _, v in ttft_window), default=0.0) * math.exp(rng.gauss(0, self.ttft_noise))
            tpot_p99 = max((v for _, v in tpot_window), default=0.0)
            samples = 100 if ttft_window else 0
            per = max(1, running_replicas)
            replicas = [
                ReplicaSignal(ttft_p99, tpot_p99, samples, samples, running / per, waiting / per)
                for _ in range(running_replicas)
            ]
            decision = decide_num_replicas(
                self.params, ScalingObservation(float(t), target, running_replicas, replicas), state
            )
            state = decision.state
            self.trace.append(Tick(t, target, running_replicas, waiting, running, ttft_p99, tpot_p99, decision.reason))
            if decision.num_replicas > target:
                starting.append((t + STARTUP_S, decision.num_replicas - target))
            target = decision.num_replicas
            running_replicas = min(running_replicas, target)
        return self.trace


def changes(trace: list[Tick]) -> list[tuple[int, int, int]]:
    """(time, from, to) of every target change."""
    return [(b.t, a.target, b.target) for a, b in zip(trace, trace[1:]) if a.target != b.target]


def direction_reversals(trace: list[Tick]) -> int:
    signs = [1 if new > old else -1 for _, old, new in changes(trace)]
    return sum(1 for a, b in zip(signs, signs[1:]) if a != b)


# -------------------------------------------------------------------------------------------------- traces


def test_burst_scales_up_on_the_queue_before_p99_breaches():
    # 0.5 -> 3.5 requests/s: 1.75x what one replica serves, so its queue grows by 1.5 requests a second.
    burst_at = 60
    trace = Sim().run(lambda t: 0.5 if t < burst_at else 3.5, 300)
    first_pressure = next(tick for tick in trace if tick.t >= burst_at and tick.reason != "within targets")
    # The queue's growth fired while the windowed p99 TTFT was still under the point where latency would.
    assert first_pressure.reason.startswith("queue growth"), first_pressure
    assert first_pressure.ttft_p99_ms < PARAMS.upscale_latency_ratio * PARAMS.ttft_p99_target_ms
    ups = [c for c in changes(trace) if c[2] > c[1]]
    # (A trace tick shows the target the decision of the tick before set.)
    assert ups and ups[0][0] <= first_pressure.t + PARAMS.upscale_delay_s + 1
    # 3.5 requests/s needs 2 replicas at 2/s each; the queue drains once they serve.
    assert trace[-1].target >= 2
    assert trace[-1].waiting < 1.0
    # At most one correction after draining the backlog, never back up after coming down.
    assert direction_reversals(trace) <= 1
    first_down = next((c[0] for c in changes(trace) if c[2] < c[1]), None)
    assert first_down is None or all(c[2] < c[1] for c in changes(trace) if c[0] >= first_down)


def test_burst_queue_signal_beats_latency_only():
    def run(params):
        trace = Sim(params=params).run(lambda t: 0.5 if t < 60 else 3.5, 300)
        first_up = next(c[0] for c in changes(trace) if c[2] > c[1])
        return first_up, max(tick.waiting for tick in trace)

    with_queue = run(PARAMS)
    latency_only = run(replace(PARAMS, max_waiting_per_replica=1e9))
    assert with_queue[0] < latency_only[0]
    assert with_queue[1] < latency_only[1]


def test_steady_ramp_only_grows_and_keeps_the_queue_bounded():
    # 0.2 -> 7 requests/s over 10 minutes: needs 4 replicas at the end.
    trace = Sim().run(lambda t: 0.2 + 6.8 * min(t, 600) / 600, 720)
    assert all(new > old for _, old, new in changes(trace)), changes(trace)
    assert 4 <= trace[-1].target <= PARAMS.max_replicas
    # Growth is caught ahead: the queue never reaches a minute of work for the serving replicas.
    assert max(t.waiting / max(1, t.running_replicas) for t in trace) < 60


def test_decay_scales_down_one_step_per_delay_to_min_without_bouncing():
    # Start at 4 replicas with 7 requests/s; the rate halves every minute.
    sim = Sim(initial_replicas=4)
    trace = sim.run(lambda t: 7.0 * 0.5 ** (t / 60.0), 1200, initial_running=28.0)
    downs = changes(trace)
    assert downs and all(new < old for _, old, new in downs), downs
    assert trace[-1].target == PARAMS.min_replicas
    assert min(t.target for t in trace) >= PARAMS.min_replicas
    for (t0, _, _), (t1, _, _) in zip(downs, downs[1:]):
        assert t1 - t0 >= PARAMS.downscale_delay_s
    # Never removed capacity that was still needed.
    assert max(t.waiting for t in trace) < PARAMS.max_waiting_per_replica


def test_noisy_percentiles_do_not_cause_oscillation():
    # 3 requests/s on 2 replicas (75% busy): p99 TTFT sits at 0.55 of its target, inside the hysteresis
    # band, and each report is off by ~25% (lognormal), so single reports cross both marks often.
    sim = Sim(initial_replicas=2, ttft_noise=0.25, seed=7)
    params = replace(PARAMS, ttft_p99_target_ms=BASE_TTFT_MS / 0.55, tpot_p99_target_ms=100.0)
    sim.params = params
    trace = sim.run(lambda t: 3.0, 1800, initial_running=12.0)
    assert direction_reversals(trace) == 0
    assert len(changes(trace)) <= 1


# -------------------------------------------------------------------------------------------------- delays, bounds


def loaded(n: int, waiting_per_replica: float, ratio: float = 0.3, samples: int = 100) -> list[ReplicaSignal]:
    return [
        ReplicaSignal(ratio * PARAMS.ttft_p99_target_ms, 0.0, samples, samples, BATCH, waiting_per_replica)
        for _ in range(n)
    ]


def step(state, t, target, replicas, params=PARAMS, running=None):
    obs = ScalingObservation(float(t), target, target if running is None else running, replicas)
    return decide_num_replicas(params, obs, state)


def test_short_spike_shorter_than_upscale_delay_changes_nothing():
    state, target = ScalingState(), 1
    for t in range(0, 60):
        spike = 3 <= t < 6  # 3 s of queue, delay is 5 s
        decision = step(state, t, target, loaded(1, 10.0 if spike else 0.0))
        state, target = decision.state, decision.num_replicas
    assert target == 1


def test_sustained_pressure_acts_exactly_after_upscale_delay():
    state, target, changed_at = ScalingState(), 1, None
    for t in range(0, 30):
        decision = step(state, t, target, loaded(target, 10.0))
        if decision.num_replicas != target and changed_at is None:
            changed_at = t
        state, target = decision.state, decision.num_replicas
        if changed_at is not None:
            break
    assert changed_at == PARAMS.upscale_delay_s


def test_never_above_max_nor_below_min():
    params = replace(PARAMS, min_replicas=2, max_replicas=3, upscale_delay_s=0.0, downscale_delay_s=0.0)
    state, target, seen = ScalingState(), 2, set()
    for t in range(0, 200):
        replicas = loaded(target, 50.0) if t < 100 else [ReplicaSignal() for _ in range(target)]
        decision = step(state, t, target, replicas, params)
        state, target = decision.state, decision.num_replicas
        seen.add(target)
    assert seen <= {2, 3} and target == 2
    # A target outside the bounds (e.g. after a config change) is pulled back at once.
    assert step(ScalingState(), 0, 5, loaded(5, 0.0), params).num_replicas == 3
    assert step(ScalingState(), 0, 1, loaded(1, 0.0), params).num_replicas == 2


def test_replicas_still_starting_count_as_capacity_coming():
    params = replace(PARAMS, upscale_delay_s=0.0, max_replicas=16)
    # 3 wanted, 1 up: its 8 running + 12 waiting fit in the 2 x 8 slots coming. Hold, not another replica.
    decision = step(ScalingState(), 100, 3, loaded(1, 12.0), params, running=1)
    assert decision.num_replicas == 3 and decision.reason == "waiting for new replicas"
    # 8 running + 50 waiting need 8 replicas of 8: the 2 starting count once, and the step does not wait for them.
    assert step(ScalingState(), 100, 3, loaded(1, 50.0), params, running=1).num_replicas == 8
    # The latency signal alone never adds while replicas start (their effect is not in its window yet).
    assert step(ScalingState(), 100, 3, loaded(1, 0.0, ratio=3.0), params, running=1).num_replicas == 3


def test_upscale_sizes_to_the_queue_and_only_latency_is_capped_at_doubling():
    params = replace(PARAMS, upscale_delay_s=0.0, max_replicas=16)
    # 2 saturated replicas, 8 waiting each: running 16 + waiting 16 needs 4 replicas of 8.
    assert step(ScalingState(), 0, 2, loaded(2, 8.0), params).num_replicas == 4
    # (Was: a huge queue only doubled, so each doubling cost a cold start.) The queue sizes the whole step.
    assert step(ScalingState(), 0, 2, loaded(2, 40.0), params).num_replicas == 12
    assert step(ScalingState(), 0, 2, loaded(2, 500.0), params).num_replicas == 16
    # p99 at 4x the high mark with no queue: at most double.
    assert step(ScalingState(), 0, 2, loaded(2, 0.0, ratio=3.2), params).num_replicas == 4


def test_4x_step_takes_one_cold_start_up_and_comes_back_down_sized_to_the_load():
    # 1.5 -> 7 -> 1.5 requests/s; one replica serves 2/s, so the step needs 4 (3.5 at full batch).
    trace = Sim().run(lambda t: 1.5 if t < 60 or t >= 360 else 7.0, 700)
    ups = [c for c in changes(trace) if c[2] > c[1]]
    downs = [c for c in changes(trace) if c[2] < c[1]]
    # One step up, sized by the queue: no second cold start.
    assert len(ups) == 1 and ups[0][2] >= 4, changes(trace)
    # Within 20 s of the replicas serving, the cold start's backlog is gone; the windowed p99 TTFT is back
    # under target once the window has passed it, and stays there through the step.
    drained_s = ups[0][0] + STARTUP_S + 20
    assert all(t.waiting < 1.0 for t in trace if drained_s <= t.t < 360)
    assert all(t.ttft_p99_ms <= PARAMS.ttft_p99_target_ms for t in trace if drained_s + WINDOW_S <= t.t < 360)
    # The backlog's extra replicas go while the load is still high, to at most 75% of a replica's batch
    # (ceil(28 running / 6) = 5), and the rest after the step, after the hold, never back up.
    high = [t.target for t in trace if 250 <= t.t < 360]
    assert high and all(4 <= n <= 5 for n in high), high
    assert downs and all(b[0] - a[0] >= PARAMS.downscale_delay_s for a, b in zip(downs, downs[1:]))
    assert trace[-1].target == 1 and direction_reversals(trace) == 1
    # Fewer replica-seconds than stepping up by doubling (the old policy spent 3,243 on this trace).
    assert sum(t.target for t in trace) < 2600


def test_latency_breach_scales_up_and_p99_is_ignored_while_windows_refill():
    params = replace(PARAMS, upscale_delay_s=0.0)
    decision = step(ScalingState(), 0, 1, loaded(1, 0.0, ratio=1.2), params)
    assert decision.num_replicas == 2 and "p99" in decision.reason
    # Right after the change, the old window's p99 must not trigger another step.
    state = decision.state
    for t in range(1, WINDOW_S):
        decision = step(state, t, 2, loaded(2, 0.0, ratio=1.2), params)
        state = decision.state
        assert decision.num_replicas == 2
    assert step(state, WINDOW_S + 5, 2, loaded(2, 0.0, ratio=1.2), params).num_replicas == 3


def test_a_stale_p99_with_nothing_waiting_and_light_replicas_adds_none():
    """Replay (step_short, 2026-12-04): 4 -> 8 replicas on 'p99 latency' with 0 waiting and 1 request running,
    the window still holding the burst's queued requests after the new replicas had served them."""
    params = replace(PARAMS, upscale_delay_s=0.0)
    state = ScalingState(saturated_running_per_replica=BATCH)  # a replica is known to queue at BATCH running
    light = [ReplicaSignal(5.0 * PARAMS.ttft_p99_target_ms, 0.0, 100, 100, 1.0, 0.0) for _ in range(4)]
    assert step(state, 0, 4, light, params).num_replicas == 4
    busy = [ReplicaSignal(5.0 * PARAMS.ttft_p99_target_ms, 0.0, 100, 100, BATCH, 0.0) for _ in range(4)]
    assert step(state, 0, 4, busy, params).num_replicas > 4  # the same p99 on full replicas is current


def test_too_few_samples_never_drive_a_decision():
    params = replace(PARAMS, upscale_delay_s=0.0, downscale_delay_s=0.0)
    few = loaded(2, 0.0, ratio=5.0, samples=PARAMS.min_samples - 1)
    assert step(ScalingState(), 0, 2, few, params).num_replicas == 2
    few_low = loaded(2, 0.0, ratio=0.01, samples=PARAMS.min_samples - 1)
    assert step(ScalingState(), 0, 2, few_low, params).num_replicas == 2


def test_light_load_too_thin_for_a_p99_still_scales_down_to_the_load():
    """Replay step_4x (2026-12-04): after the step, 8 replicas shared 1.5 req/s, no replica's window reached
    min_samples, and the deployment stayed at 8 for three minutes."""
    params = replace(PARAMS, max_replicas=8, downscale_delay_s=10.0)
    state = ScalingState(saturated_running_per_replica=BATCH)
    thin = [ReplicaSignal(0.0, 0.0, PARAMS.min_samples - 2, PARAMS.min_samples - 2, 1.0, 0.0) for _ in range(8)]
    decisions = []
    for t in range(0, 12):
        decision = step(state, t, 8, thin, params)
        state = decision.state
        decisions.append(decision.num_replicas)
    # Held through the delay, then straight to the fewest that run 8 requests at 75% of a batch of 8: 2.
    assert decisions[:10] == [8] * 10 and decisions[10] == 2, decisions
    # Without a known batch limit it holds (a thin window alone says nothing of the size).
    assert step(ScalingState(), 100, 8, thin, replace(params, downscale_delay_s=0.0)).num_replicas == 8
    # A request waiting a step on a few replicas does not hold it (it restarted the hold at each, replay
    # 2026-12-05) and is counted in the size; a queue past a quarter of the upscale mark does hold it.
    now = replace(params, downscale_delay_s=0.0)
    blips = [replace(r, num_waiting=1.0) if i < 2 else r for i, r in enumerate(thin)]
    assert step(ScalingState(saturated_running_per_replica=BATCH), 0, 8, blips, now).num_replicas == 2
    queued = [replace(r, num_waiting=1.5) for r in thin]  # 12 waiting > 0.25 x 4 x 8
    assert step(ScalingState(saturated_running_per_replica=BATCH), 0, 8, queued, now).num_replicas >= 8


def test_a_replicas_capacity_is_learnt_from_its_own_queue_only():
    """Replay step_4x (2026-12-04): shed demand reported as waiting on a lightly loaded replica, and a request
    waiting one step in an idle engine, set 'what a full replica runs' to 2 of 8, so scale-down kept 6 of 7."""
    params = replace(PARAMS, max_replicas=8, upscale_delay_s=0.0)
    full = ReplicaSignal(0.1 * PARAMS.ttft_p99_target_ms, 0.0, 100, 100, BATCH, 3.0, num_local_waiting=3.0)
    state = step(ScalingState(), 0, 1, [full], params).state
    assert state.saturated_running_per_replica == BATCH
    # Refused load shared out as waiting on a replica running 2 with an empty queue of its own: not a full replica.
    shed_only = ReplicaSignal(0.1 * PARAMS.ttft_p99_target_ms, 0.0, 100, 100, 2.0, 3.0, num_local_waiting=0.0)
    assert step(ScalingState(), 0, 4, [shed_only] * 4, params).state.saturated_running_per_replica is None
    # A step's wait in a light engine's own queue does not lower what is known.
    blip = ReplicaSignal(0.1 * PARAMS.ttft_p99_target_ms, 0.0, 100, 100, 2.0, 1.0, num_local_waiting=1.0)
    assert step(state, 1, 4, [blip] * 4, params).state.saturated_running_per_replica == BATCH
    # Reports without the split (older replicas) count all waiting as their own.
    assert ReplicaSignal.from_snapshot({"num_waiting": 2.0}).own_waiting == 2.0
    assert ReplicaSignal.from_snapshot({"num_waiting": 2.0, "num_local_waiting": 0.0}).own_waiting == 0.0


def test_known_engine_rows_size_a_burst_not_a_first_replicas_one_step_wait():
    """Replay bursty_cv3 (2026-12-05): at the burst's start one replica ran 1 request with 1 waiting a step in its
    own queue; learnt from that, 'a full replica runs 1' took the deployment from 1 to 8 replicas for 18 requests
    (8-row engines). Given the rows, the step is sized on them."""
    params = replace(PARAMS, max_replicas=8, upscale_delay_s=0.0)
    first = ReplicaSignal(0.1 * PARAMS.ttft_p99_target_ms, 0.0, 100, 100, 1.0, 1.0, num_local_waiting=1.0)
    rest = ReplicaSignal(0.1 * PARAMS.ttft_p99_target_ms, 0.0, 100, 100, 5.0, 11.0, num_local_waiting=0.0)
    learnt = step(ScalingState(), 0, 2, [first, rest], params)
    assert learnt.num_replicas == 8  # the fault, kept visible: 17 requests at 1 per replica
    known = step(ScalingState(), 0, 2, [first, rest], replace(params, slots_per_replica=8))
    assert known.num_replicas == math.ceil((6 + known.signals["projected_waiting"]) / 8)
    assert known.signals["capacity_per_replica"] == 8.0 and known.state.saturated_running_per_replica is None
    # The app hands the policy what a full replica runs for the load at large: max_num_seqs, not tenancy's reserve
    # above it (kept for a quiet tenant); the engine and the router get both.
    cfg = AppConfig.model_validate({"engine": {"max_num_seqs": 6}, "tenancy": {"enabled": True, "reserved_slots": 2},
                                    "model_deployment": {"num_replicas": "auto"}})
    assert (cfg.batch_rows, cfg.engine_rows) == (6, 8)
    from serve_app.app import model_options

    kwargs = model_options(cfg)["autoscaling_config"]["policy"]["policy_kwargs"]
    assert ScalingParams(**kwargs).slots_per_replica == 6
    # The simulated engine's rows are its own: set, or its profile's.
    sim = {"backend": "simulated", "simulated": {"profile": "gpu-h100-llama3.1-8b"}}
    assert AppConfig.model_validate({"engine": sim}).batch_rows == 1024
    sim["simulated"]["max_num_seqs"] = 8
    assert AppConfig.model_validate({"engine": sim}).batch_rows == 8


def test_tpot_under_target_at_a_full_batch_adds_no_replica_but_a_breach_does():
    """Replay step_4x (2026-12-05): a full batch's TPOT p99 (85 ms of a 100 ms target) took 6 replicas to 8."""
    params = replace(PARAMS, max_replicas=8, upscale_delay_s=0.0)
    state = ScalingState(saturated_running_per_replica=BATCH)

    def replicas(tpot_ratio):
        return [ReplicaSignal(0.3 * PARAMS.ttft_p99_target_ms, tpot_ratio * PARAMS.tpot_p99_target_ms, 100, 100,
                              BATCH, 0.5) for _ in range(4)]

    assert step(state, 0, 4, replicas(0.85), params).num_replicas == 4
    breach = step(state, 0, 4, replicas(1.2), params)
    assert breach.num_replicas == 5 and "p99" in breach.reason


def test_a_p99_breach_while_the_queue_drains_adds_no_replica():
    params = replace(PARAMS, max_replicas=8, upscale_delay_s=0.0)
    state = ScalingState(saturated_running_per_replica=BATCH)
    for t, waiting in ((0, 4.0), (3, 2.0), (6, 0.0)):  # a burst's queue, served
        state = step(state, t, 6, loaded(6, waiting / 6, ratio=0.3), params).state
    breach = loaded(6, 0.0, ratio=1.35)
    assert step(state, 9, 6, breach, params).num_replicas == 6
    # Shares of demand reported elsewhere add fractions of a request: still draining.
    assert step(state, 9, 6, loaded(6, 0.07 / 6, ratio=2.0), params).num_replicas == 6
    # The same p99 with the queue holding: more replicas.
    assert step(ScalingState(saturated_running_per_replica=BATCH), 9, 6, breach, params).num_replicas > 6


def test_hysteresis_band_holds():
    params = replace(PARAMS, upscale_delay_s=0.0, downscale_delay_s=0.0)
    for ratio in (0.55, 0.7, 0.79):
        assert step(ScalingState(), 0, 2, loaded(2, 0.0, ratio=ratio), params).num_replicas == 2
    # Below the low mark but removing one of 2 would double it past the high mark: hold.
    assert step(ScalingState(), 0, 2, loaded(2, 0.0, ratio=0.45), params).num_replicas == 2
    assert step(ScalingState(), 0, 2, loaded(2, 0.0, ratio=0.3), params).num_replicas == 1


def test_cold_start_from_zero():
    params = replace(PARAMS, min_replicas=0)
    assert step(ScalingState(), 0, 0, [], params).num_replicas == 0
    obs = ScalingObservation(0.0, 0, 0, (), num_queued_at_handles=3)
    assert decide_num_replicas(params, obs, ScalingState()).num_replicas == 1


def test_state_round_trips_through_a_plain_dict():
    decision = step(ScalingState(), 0, 1, loaded(1, 10.0))
    assert ScalingState.from_dict(decision.state.to_dict()) == decision.state
    assert ScalingState.from_dict(None) == ScalingState()


# -------------------------------------------------------------------------------------------------- replica stats


def test_windowed_percentile_accuracy_and_eviction():
    rng = random.Random(1)
    values = [rng.lognormvariate(4, 1) for _ in range(20_000)]
    window = WindowedPercentile(window_s=10.0)
    for i, v in enumerate(values):
        window.record(v, 0.0 + i * 1e-4)
    exact = sorted(values)[math.ceil(0.99 * len(values)) - 1]
    assert window.percentile(0.99, 2.0) == pytest.approx(exact, rel=0.03)
    assert window.count(2.0) == len(values)
    assert window.percentile(0.99, 20.0) is None and window.count(20.0) == 0


def test_replica_stats_memory_is_bounded():
    stats = ReplicaLatencyStats(window_s=5.0)
    for i in range(200_000):
        stats.record_tpot_ms(1.0 + (i % 5000), i * 1e-3)
    slices = stats._tpot_ms._slices
    assert len(slices) <= 11
    assert sum(len(counts) for _, counts in slices) < 11 * 500


def test_replica_stats_snapshot():
    stats = ReplicaLatencyStats(window_s=30.0)
    assert stats.snapshot(0.0)["num_samples"] == 0.0 and stats.snapshot(0.0)["ttft_p99_ms"] == 0.0
    for i in range(100):
        stats.record_ttft_ms(100.0 if i < 98 else 900.0, 1.0)
        stats.record_tpot_ms(20.0, 1.0)
    stats.set_load(num_running=7, num_waiting=3)
    snap = stats.snapshot(2.0)
    assert snap["ttft_p99_ms"] == pytest.approx(900.0, rel=0.03)
    assert snap["tpot_p99_ms"] == pytest.approx(20.0, rel=0.03)
    assert (snap["num_samples"], snap["num_running"], snap["num_waiting"]) == (100.0, 7.0, 3.0)
    assert all(isinstance(v, float) for v in snap.values())
    assert ReplicaSignal.from_snapshot(snap).num_ttft_samples == 100
    # Older than the window: gone.
    assert stats.snapshot(40.0)["num_samples"] == 0.0


# -------------------------------------------------------------------------------------------------- Serve hook


def fake_ctx(reports: dict[str, dict[str, float]], target: int, policy_state=None, queued=0.0, now=1000.0):
    point = SimpleNamespace
    raw: dict[str, dict[str, list]] = {}
    for replica_id, snap in reports.items():
        for name, value in snap.items():
            # Older point first; the hook must take the newest.
            raw.setdefault(name, {})[replica_id] = [point(timestamp=now - 5, value=-1.0), point(timestamp=now, value=value)]
    return SimpleNamespace(
        deployment_name="ModelReplicaDeployment",
        running_replicas=list(reports),
        raw_metrics=raw,
        current_num_replicas=len(reports),
        target_num_replicas=target,
        capacity_adjusted_min_replicas=1,
        capacity_adjusted_max_replicas=4,
        policy_state=policy_state or {},
        total_queued_requests=queued,
        current_time=now,
    )


def test_hook_reads_latest_replica_metrics_and_keeps_state():
    stats = ReplicaLatencyStats(window_s=30.0)
    for _ in range(50):
        stats.record_ttft_ms(5000.0, 1.0)
    stats.set_load(8, 20)
    reports = {"r1": stats.snapshot(2.0), "r2": ReplicaLatencyStats().snapshot(2.0)}
    policy = LatencyTargetPolicy(**{**vars(ScalingParams()), "upscale_delay_s": 0.0})
    num_replicas, state = policy(fake_ctx(reports, target=2, policy_state={"ray_internal": 1}))
    assert num_replicas == 4  # min(2 * 2, max 4)
    assert state["ray_internal"] == 1 and "serve_app_latency_policy" in state
    # With the default 10 s delay the first call only records pressure; the state carries it forward.
    num_replicas, state = latency_target_policy(fake_ctx(reports, target=2))
    assert num_replicas == 2 and state["serve_app_latency_policy"]["pressure"] == 1


def test_hook_holds_on_error():
    ctx = fake_ctx({"r1": {"num_running": 1.0}}, target=2)
    ctx.raw_metrics = {"num_running": {"r1": [object()]}}  # malformed
    assert latency_target_policy(ctx)[0] == 2


def test_hook_through_rays_own_wrapper_and_pickling():
    """The dict from model_autoscaling_config builds Ray's AutoscalingConfig, and the policy Ray would
    unpickle in the controller runs under Ray's wrapper with a real AutoscalingContext."""
    from ray.serve._private.autoscaling_state import _resolve_policy_callable
    from ray.serve._private.common import DeploymentID, ReplicaID, TimeStampedValue
    from ray.serve.autoscaling_policy import _apply_autoscaling_config
    from ray.serve.config import AutoscalingConfig, AutoscalingContext

    model = ModelDeploymentConfig(
        min_replicas=1, max_replicas=3, upscale_delay_s=0, latency_targets=LatencyTargets(ttft_p99_ms=100)
    )
    with pytest.warns(DeprecationWarning):  # metrics_interval_s: Ray prefers an env var, still honours it
        config = AutoscalingConfig(**model_autoscaling_config(model))
    assert config.upscale_delay_s == 0 and config.downscale_delay_s == 0
    policy = _apply_autoscaling_config(_resolve_policy_callable(config.policy))
    dep = DeploymentID(name="Model", app_name="app")
    replica = ReplicaID(unique_id="a", deployment_id=dep)
    stats = ReplicaLatencyStats()
    for _ in range(20):
        stats.record_ttft_ms(500.0, 1.0)
    raw = {k: {replica: [TimeStampedValue(99.0, v)]} for k, v in stats.snapshot(2.0).items()}
    ctx = AutoscalingContext(
        deployment_id=dep,
        deployment_name="Model",
        app_name="app",
        current_num_replicas=1,
        target_num_replicas=1,
        running_replicas=[replica],
        total_num_requests=0.0,
        total_queued_requests=0.0,
        aggregated_metrics={},
        raw_metrics=lambda: raw,
        capacity_adjusted_min_replicas=1,
        capacity_adjusted_max_replicas=3,
        policy_state={},
        last_scale_up_time=None,
        last_scale_down_time=None,
        current_time=100.0,
        config=config,
    )
    num_replicas, state = policy(ctx)
    assert num_replicas == 2 and "serve_app_latency_policy" in state


def test_request_based_autoscaling_config_is_rays_request_based_policy():
    from ray.serve.config import AutoscalingConfig

    stage = DeploymentScaling(min_replicas=1, max_replicas=3, max_ongoing_requests=64)
    config = AutoscalingConfig(**request_based_autoscaling_config(stage))
    assert config.policy.is_default_policy_function()
    assert config.target_ongoing_requests == 32
    explicit = DeploymentScaling(target_ongoing_requests=5, upscale_delay_s=3)
    assert request_based_autoscaling_config(explicit)["target_ongoing_requests"] == 5
    assert request_based_autoscaling_config(explicit)["upscale_delay_s"] == 3


def test_config_knobs_flow_into_the_policy_kwargs():
    cfg = AppConfig.model_validate(
        {
            "model_deployment": {
                "min_replicas": 2,
                "max_replicas": 5,
                "downscale_delay_s": 7,
                "latency_targets": {"ttft_p99_ms": 300, "max_waiting_per_replica": 2, "window_s": 12},
            }
        }
    )
    kwargs = model_autoscaling_config(cfg.model_deployment)["policy"]["policy_kwargs"]
    params = ScalingParams(**kwargs)
    assert (params.min_replicas, params.max_replicas, params.downscale_delay_s) == (2, 5, 7)
    assert (params.ttft_p99_target_ms, params.max_waiting_per_replica, params.latency_settle_s) == (300, 2, 12)
    with pytest.raises(ValueError):
        LatencyTargets(upscale_latency_ratio=0.5, downscale_latency_ratio=0.6)


def test_the_model_deployment_can_use_rays_request_based_policy_instead():
    """`autoscaling_policy: ongoing_requests` gives Ray Serve's default policy (no policy function) aiming for
    `target_ongoing_requests` per replica, with the deployment's own delays."""
    from ray.serve.config import AutoscalingConfig

    model = ModelDeploymentConfig(autoscaling_policy="ongoing_requests", target_ongoing_requests=12,
                                  min_replicas=0, max_replicas=8, upscale_delay_s=5, downscale_delay_s=30)
    config = AutoscalingConfig(**model_autoscaling_config(model))
    assert config.target_ongoing_requests == 12
    assert (config.min_replicas, config.max_replicas) == (0, 8)
    assert (config.upscale_delay_s, config.downscale_delay_s) == (5, 30)
    assert "policy" not in model_autoscaling_config(model)
