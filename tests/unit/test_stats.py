import random

import numpy as np
import pytest

from serve_app.stats import estimate_percentile, order_statistic_ci, percentile, percentile_key, summarize


@pytest.mark.parametrize("q", [0.0, 1.0, 50.0, 90.0, 99.0, 99.9, 100.0])
def test_percentile_matches_numpy_linear(q):
    rng = random.Random(1)
    values = sorted(rng.expovariate(1.0) for _ in range(257))
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_median_ci_ranks_match_published_table():
    # Conover's table: n = 100, 95% interval for the median is X(40)..X(61).
    assert order_statistic_ci(100, 50.0) == (40, 61)


def test_upper_bound_of_extreme_percentile_needs_enough_samples():
    # 100 samples cannot bound p99 from above at 95%: that needs P(B <= 99) >= 0.975.
    low, high = order_statistic_ci(100, 99.0)
    assert low is not None and high is None
    low, high = order_statistic_ci(2000, 99.0)
    assert low is not None and high is not None and low < 1980 < high


def test_coverage_is_at_least_nominal():
    rng = random.Random(7)
    q, n, trials = 90.0, 200, 400
    true_quantile = 0.9  # uniform(0, 1)
    covered = 0
    for _ in range(trials):
        sample = sorted(rng.random() for _ in range(n))
        estimate = estimate_percentile(sample, q)
        covered += estimate.ci_low <= true_quantile <= estimate.ci_high
    # Nominal 95%; binomial noise over 400 trials is about 1.1 points.
    assert covered / trials >= 0.92


def test_summary_keys_and_empty_input():
    summary = summarize([1.0, 2.0, 3.0])
    assert summary["n"] == 3 and summary["mean"] == 2.0
    assert set(summary) >= {"p50", "p90", "p95", "p99", "p99_9"}
    assert summarize([]) == {"n": 0}
    assert percentile_key(99.9) == "p99_9"


def test_merging_raw_samples_is_not_averaging_percentiles():
    fast = [10.0] * 99 + [1000.0]
    slow = [10.0] * 90 + [500.0] * 10
    merged_p99 = percentile(sorted(fast + slow), 99.0)
    averaged = (percentile(sorted(fast), 99.0) + percentile(sorted(slow), 99.0)) / 2
    assert merged_p99 == 500.0
    assert averaged != merged_p99
