"""Refused demand as the autoscaler sees it (serve_app/autoscaling/shed_demand.py)."""

import pytest

from serve_app.autoscaling.shed_demand import ShedDemand


def test_refusals_become_the_concurrency_they_would_have_been():
    shed = ShedDemand(window_s=10.0, prior_hold_s=4.0)
    for i in range(30):  # 3 refusals a second for 10 s
        shed.refused(100.0 + i / 3)
    # Little's law: 3/s x 4 s held per admitted request = 12 requests running or waiting.
    assert shed.concurrency(109.9) == pytest.approx(12.0)


def test_old_refusals_leave_the_window_and_the_hold_time_follows_admitted_requests():
    shed = ShedDemand(window_s=10.0, prior_hold_s=4.0, smoothing=0.5)
    shed.refused(0.0)
    shed.held(8.0)  # the first observation replaces the prior
    assert shed.mean_hold_s == pytest.approx(8.0)
    shed.held(4.0)
    assert shed.mean_hold_s == pytest.approx(6.0)
    assert shed.concurrency(5.0) == pytest.approx(0.1 * 6.0)
    assert shed.concurrency(10.0) == 0.0  # after the window: no demand left
