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


def test_model_replicas_report_the_ingress_replicas_latest_fresh_shares():
    from serve_app.autoscaling.ingress_demand import IngressDemand

    demand = IngressDemand(fresh_s=10.0)
    demand.heard("ingress-a", 3.0, now_s=100.0)
    demand.heard("ingress-b", 1.5, now_s=104.0)
    demand.heard("ingress-a", 2.0, now_s=105.0)  # the latest share replaces the earlier one
    assert demand.total(now_s=106.0) == pytest.approx(3.5)
    assert demand.total(now_s=114.5) == pytest.approx(2.0)  # b silent for 10.5 s: no longer counted
    demand.heard("ingress-a", -1.0, now_s=115.0)
    assert demand.total(now_s=115.0) == 0.0


def test_an_ingress_shares_its_waiting_and_shed_load_over_the_running_model_replicas():
    from serve_app.config import AppConfig
    from serve_app.ingress.tenant_admission import TenantAdmission

    config = AppConfig.model_validate({"tenancy": {"enabled": True, "limits_backend": "local"},
                                       "ingress_placement": "separate",
                                       "model_deployment": {"num_replicas": 4}})
    tenants = TenantAdmission(config, "test")
    model = config.model.resolved_name()
    assert tenants.demand_share(model) == 0.0
    for _ in range(20):  # 20 cold-start refusals in the last 10 s, each would have held a slot ~1 s (the prior)
        tenants.note_shed(model)
    assert tenants.demand_share(model) == pytest.approx(2.0 / 4, rel=0.05)
