"""Confidence intervals for A/B comparisons over interleaved repeats, and the p99 sample floor."""

import math
import random

import pytest

from serve_app.stats import (paired_difference_ci, paired_ratio_ci, student_t_cdf, student_t_quantile, tail_label,
                             tail_value)


@pytest.mark.parametrize("dof, expected", [(1, 12.706), (2, 4.303), (3, 3.182), (5, 2.571), (10, 2.228), (30, 2.042)])
def test_t_quantile_matches_published_table(dof, expected):
    assert student_t_quantile(0.975, dof) == pytest.approx(expected, abs=1e-3)


def test_t_cdf_is_symmetric_and_tends_to_normal():
    assert student_t_cdf(0.0, 7) == pytest.approx(0.5)
    assert student_t_cdf(-1.3, 4) == pytest.approx(1 - student_t_cdf(1.3, 4))
    assert student_t_cdf(1.96, 2000) == pytest.approx(0.975, abs=1e-3)


def test_ratio_of_identical_servers_is_one_with_an_interval_around_it():
    rng = random.Random(3)
    a = [100 * rng.uniform(0.95, 1.05) for _ in range(3)]
    b = [100 * rng.uniform(0.95, 1.05) for _ in range(3)]
    estimate = paired_ratio_ci(a, b)
    assert estimate.num_pairs == 3
    assert estimate.ci_low < 1.0 < estimate.ci_high


def test_ratio_is_the_geometric_mean_and_a_constant_ratio_has_no_width():
    estimate = paired_ratio_ci([10.0, 20.0, 40.0], [15.0, 30.0, 60.0])
    assert estimate.value == pytest.approx(1.5)
    assert estimate.ci_low == pytest.approx(1.5) and estimate.ci_high == pytest.approx(1.5)
    # 2x in one pair and 0.5x in the other average to 1x, not 1.25x
    assert paired_ratio_ci([1.0, 1.0], [2.0, 0.5]).value == pytest.approx(1.0)


def test_one_pair_gives_no_interval():
    estimate = paired_ratio_ci([10.0], [12.0])
    assert estimate.value == pytest.approx(1.2) and estimate.ci_low is None and estimate.ci_high is None


def test_ratio_interval_covers_the_true_ratio_at_nominal_rate():
    rng = random.Random(11)
    true_ratio, covered, trials = 1.1, 0, 2000
    for _ in range(trials):
        a = [math.exp(rng.gauss(0, 0.05)) * 100 for _ in range(3)]
        b = [x * true_ratio * math.exp(rng.gauss(0, 0.05)) for x in a]
        estimate = paired_ratio_ci(a, b)
        covered += estimate.ci_low <= true_ratio <= estimate.ci_high
    assert 0.93 <= covered / trials <= 0.97


def test_difference_in_milliseconds():
    estimate = paired_difference_ci([200.0, 210.0, 205.0], [203.0, 214.0, 207.0])
    assert estimate.value == pytest.approx(3.0)
    assert estimate.ci_low < 3.0 < estimate.ci_high


def test_mismatched_or_nonpositive_repeats_are_refused():
    with pytest.raises(ValueError):
        paired_ratio_ci([1.0, 2.0], [1.0])
    with pytest.raises(ValueError):
        paired_ratio_ci([0.0], [1.0])


def test_p99_needs_200_samples_else_the_maximum_is_named():
    few = [float(i) for i in range(24)]
    assert tail_label(len(few)) == "max of 24" and tail_value(few) == 23.0
    many = [float(i) for i in range(1000)]
    assert tail_label(len(many)) == "p99" and tail_value(many) == pytest.approx(989.01)
    assert tail_value([]) is None
