import statistics

import pytest

from loadtest.schedule import closed_loop_start_offsets_s, open_loop_arrivals_s


def gaps(times):
    return [b - a for a, b in zip(times, times[1:])]


def test_constant_rate_is_evenly_spaced():
    times = open_loop_arrivals_s(4.0, burstiness=None, num_requests=5)
    assert times == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])


def test_poisson_rate_and_duration():
    times = open_loop_arrivals_s(50.0, burstiness=1.0, duration_s=200.0, seed=3)
    assert all(t < 200.0 for t in times)
    assert len(times) / 200.0 == pytest.approx(50.0, rel=0.03)
    assert statistics.pstdev(gaps(times)) / statistics.mean(gaps(times)) == pytest.approx(1.0, rel=0.05)


@pytest.mark.parametrize("burstiness", [0.25, 4.0])
def test_gamma_burstiness_sets_gap_variation(burstiness):
    g = gaps(open_loop_arrivals_s(10.0, burstiness=burstiness, num_requests=20000, seed=1))
    cv = statistics.pstdev(g) / statistics.mean(g)
    assert cv == pytest.approx(burstiness**-0.5, rel=0.06)
    assert statistics.mean(g) == pytest.approx(0.1, rel=0.05)


def test_seeded_and_reproducible():
    a = open_loop_arrivals_s(5.0, num_requests=100, seed=9)
    assert a == open_loop_arrivals_s(5.0, num_requests=100, seed=9)
    assert a != open_loop_arrivals_s(5.0, num_requests=100, seed=10)


def test_linear_ramp_starts_slow_then_reaches_rate():
    times = open_loop_arrivals_s(10.0, burstiness=None, duration_s=20.0, ramp_up_s=10.0)
    in_first_half_of_ramp = sum(1 for t in times if t < 5.0)
    after_ramp = sum(1 for t in times if 10.0 <= t < 20.0)
    assert in_first_half_of_ramp == pytest.approx(12.5, abs=1)  # integral of the ramp over 0..5 s
    assert after_ramp == pytest.approx(100, abs=1)


def test_closed_loop_offsets():
    assert closed_loop_start_offsets_s(4, 2.0) == [0.0, 0.5, 1.0, 1.5]
    assert closed_loop_start_offsets_s(3) == [0.0, 0.0, 0.0]
