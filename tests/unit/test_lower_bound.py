"""The offline lower bound on replicas (serve_app/autoscaling/lower_bound.py)."""

from __future__ import annotations

import pytest

from serve_app.autoscaling.lower_bound import (
    BoundRequest,
    ReplicaTiming,
    lower_bound_replicas,
    max_batch_within_tpot,
)

# 20 ms per step plus 1 ms per sequence in the batch; prefill 1 ms per 10 prompt tokens.
TIMING = ReplicaTiming(decode_step_s=lambda b: 0.020 + 0.001 * b, prefill_s=lambda p: p / 10_000, max_num_seqs=64)


def test_the_batch_limit_is_the_largest_within_the_tpot_target():
    assert max_batch_within_tpot(TIMING, tpot_target_ms=50.0) == 30
    assert max_batch_within_tpot(TIMING, tpot_target_ms=500.0) == 64
    # Even a target no batch meets leaves one sequence per replica.
    assert max_batch_within_tpot(TIMING, tpot_target_ms=1.0) == 1


def test_replicas_follow_the_mean_in_flight_sequences_per_interval():
    # 10 req/s for 60 s, each 100 prompt tokens and 99 output tokens at batch 30: 0.01 + 99 * 0.05 = 4.96 s,
    # so ~49.6 sequences in flight -> 2 replicas of 30; then nothing.
    requests = [BoundRequest(i / 10, 100, 99) for i in range(600)]
    bound = lower_bound_replicas(requests, 120.0, TIMING, tpot_target_ms=50.0, interval_s=10.0)
    assert bound.max_batch_within_tpot == 30
    assert bound.replicas[1:5] == (2, 2, 2, 2)
    assert bound.replicas[-1] == 0
    assert bound.gpu_seconds == pytest.approx(sum(bound.replicas) * 10.0)


def test_a_trickle_needs_one_replica_and_silence_none():
    requests = [BoundRequest(25.0, 10, 10)]
    bound = lower_bound_replicas(requests, 60.0, TIMING, tpot_target_ms=50.0, interval_s=10.0)
    assert bound.replicas == (0, 0, 1, 0, 0, 0)


def test_gpu_seconds_scale_with_gpus_per_replica():
    requests = [BoundRequest(i / 10, 100, 99) for i in range(300)]
    one = lower_bound_replicas(requests, 60.0, TIMING, tpot_target_ms=50.0)
    eight = lower_bound_replicas(requests, 60.0, TIMING, tpot_target_ms=50.0, gpus_per_replica=8)
    assert eight.gpu_seconds == pytest.approx(8 * one.gpu_seconds)
