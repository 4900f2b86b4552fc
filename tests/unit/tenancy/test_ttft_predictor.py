"""TTFT prediction from queued work, the SLO decision, Retry-After, and the online rate estimator."""

import random
from itertools import pairwise

import pytest

from serve_app.tenancy.ttft_predictor import (
    EngineRates,
    PredictionErrors,
    RateEstimator,
    predict_ttft_s,
    retry_after_s,
    slot_wait_budget_s,
    would_miss_slo,
)

RATES = EngineRates(prefill_tokens_per_s=2000.0, decode_step_base_s=0.02, decode_step_per_seq_s=0.001,
                    prefill_chunk_tokens=512, overhead_s=0.01)


def test_idle_engine_is_overhead_plus_own_prefill():
    assert predict_ttft_s(0, 0, 1000, RATES) == pytest.approx(0.01 + 0.5)


def test_running_decodes_add_one_step_per_prefill_chunk():
    # 1000 tokens = 2 chunks of 512; each step also decodes 10 sequences: 0.02 + 0.01 s.
    assert predict_ttft_s(0, 10, 1000, RATES) == pytest.approx(0.01 + 0.5 + 2 * 0.03)


def test_slot_wait_budget_is_the_target_less_the_own_ttft_in_a_full_batch():
    own_s = predict_ttft_s(0, 7, 1000, RATES)  # 0.01 + 0.5 + 2 * (0.02 + 0.007)
    assert slot_wait_budget_s(2.0, 1000, RATES, batch_size=7) == pytest.approx(2.0 - own_s)
    assert slot_wait_budget_s(0.3, 1000, RATES, batch_size=7) == 0.0  # cannot be met even with a slot now


def test_prediction_grows_with_queued_work():
    predictions = [predict_ttft_s(ahead, 8, 200, RATES) for ahead in range(0, 20_000, 500)]
    assert all(b > a for a, b in pairwise(predictions))
    by_batch = [predict_ttft_s(1000, batch, 200, RATES) for batch in range(0, 64, 4)]
    assert all(b > a for a, b in pairwise(by_batch))
    assert predict_ttft_s(0, 8, 200, RATES, queued_decode_tokens_ahead=800) > predict_ttft_s(0, 8, 200, RATES)


def test_decode_drain_uses_the_batch_throughput():
    extra = predict_ttft_s(0, 8, 200, RATES, queued_decode_tokens_ahead=800) - predict_ttft_s(0, 8, 200, RATES)
    assert extra == pytest.approx(800 * (0.02 + 0.008) / 8)


def test_would_miss_slo():
    assert would_miss_slo(0.6, 0.5)
    assert not would_miss_slo(0.5, 0.5)
    assert not would_miss_slo(100.0, None)
    assert would_miss_slo(0.45, 0.5, margin=0.8)


def test_retry_after_is_at_least_one_and_monotone_in_queue_size():
    values = [retry_after_s(ahead, RATES) for ahead in range(0, 400_000, 1000)]
    assert values[0] == 1
    assert all(b >= a for a, b in pairwise(values))
    assert retry_after_s(10_000, RATES) == 5  # 10k tokens at 2k/s
    assert retry_after_s(10**9, RATES) == 60  # capped
    assert retry_after_s(0, RATES, queued_decode_tokens_ahead=8000, running_decode_seqs=8) == 28


def test_rates_are_validated():
    with pytest.raises(ValueError):
        EngineRates(0.0, 0.01, 0.001)
    with pytest.raises(ValueError):
        EngineRates(1000.0, -0.01, 0.001)


def test_estimator_uses_the_prior_until_enough_samples():
    estimator = RateEstimator(RATES, min_samples=8)
    estimator.observe_prefill(100, 1.0, 500.0)
    assert estimator.rates() == RATES


def test_estimator_converges_on_synthetic_data():
    true = EngineRates(prefill_tokens_per_s=5000.0, decode_step_base_s=0.015, decode_step_per_seq_s=0.0005,
                       prefill_chunk_tokens=512, overhead_s=0.004)
    estimator = RateEstimator(RATES, decay=0.99)
    rng = random.Random(3)
    for _ in range(2000):
        prompt_tokens = rng.randint(16, 2048)
        prefill_s = true.overhead_s + prompt_tokens / true.prefill_tokens_per_s
        estimator.observe_prefill(prompt_tokens, queue_ms=rng.uniform(0, 5),
                                  prefill_ms=1000 * prefill_s * rng.uniform(0.95, 1.05))
        batch = rng.randint(1, 64)
        num_tokens = rng.randint(1, 50)
        decode_ms = 1000 * num_tokens * true.decode_step_s(batch) * rng.uniform(0.95, 1.05)
        estimator.observe_decode(num_tokens, decode_ms, batch)
    rates = estimator.rates()
    assert rates.prefill_tokens_per_s == pytest.approx(5000.0, rel=0.05)
    assert rates.overhead_s == pytest.approx(0.004, abs=0.002)
    assert rates.decode_step_base_s == pytest.approx(0.015, rel=0.1)
    assert rates.decode_step_per_seq_s == pytest.approx(0.0005, rel=0.1)
    assert estimator.mean_queue_s == pytest.approx(0.0025, abs=0.001)


def test_estimator_follows_a_change_in_speed():
    estimator = RateEstimator(RATES, decay=0.95)
    for speed in (1000.0, 4000.0):
        for tokens in range(100, 2100, 10):
            estimator.observe_prefill(tokens, 0.0, 1000 * tokens / speed)
    assert estimator.rates().prefill_tokens_per_s == pytest.approx(4000.0, rel=0.02)


def test_estimator_with_one_batch_size_keeps_the_prior_slope():
    estimator = RateEstimator(RATES)
    for _ in range(20):
        estimator.observe_decode(10, 10 * 30.0, 10)  # 30 ms steps, always at batch 10
    rates = estimator.rates()
    assert rates.decode_step_per_seq_s == RATES.decode_step_per_seq_s
    assert rates.decode_step_s(10) == pytest.approx(0.030)


def test_estimator_ignores_malformed_samples():
    estimator = RateEstimator(RATES, min_samples=1)
    estimator.observe_prefill(0, 0.0, 10.0)
    estimator.observe_decode(0, 10.0, 4)
    estimator.observe_decode(4, 10.0, 0)
    assert estimator.rates() == RATES


def test_prediction_errors_summary():
    errors = PredictionErrors(max_samples=3)
    assert errors.summary()["n"] == 0 and errors.summary()["mean_error_s"] is None
    for predicted, measured in ((1.0, 1.0), (1.2, 1.0), (0.5, 1.0), (2.0, 1.0)):
        errors.record(predicted, measured)
    summary = errors.summary()
    assert len(errors) == 3 and summary["n"] == 3
    assert summary["mean_error_s"] == pytest.approx((0.2 - 0.5 + 1.0) / 3)
    assert summary["abs_error_p50_s"] == pytest.approx(0.5)
    assert summary["rel_error_p50"] == pytest.approx(0.5)
