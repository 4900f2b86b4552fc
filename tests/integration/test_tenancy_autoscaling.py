"""Tenancy while the autoscaler changes the replica count (issue 27 item 3), on the fake GPU cluster with simulated
engines: the step trace of tests/integration/step_replay.py with `tenancy.enabled`.

With tenancy the engines run only what the fair gate admits (4 rows + 1 reserved per engine), and the rest of the
step waits at the gate, where the model deployment's policy cannot see it unless the ingress reports it: its
replicas' `record_autoscaling_stats` (placement `with_model`) or each handed-over request's `ingress_demand`
(placement `separate`). The deployment must still grow during the step and come back to one replica after it, no
request may fail (a 429 counts: the queue wait allowed is as long as the request timeout), and in placement
`separate` the ingress's gate (`serve_app_tenancy_gate_slots`) must follow: 5 slots per running model replica,
more while the step runs, 5 again at the end.

Starts and stops its own Ray cluster (marked own_ray_cluster): `pytest tests/integration/test_tenancy_autoscaling.py`.
"""

from __future__ import annotations

import pytest

from tests.integration.step_replay import replay_config, run_step_replay

pytestmark = [pytest.mark.integration, pytest.mark.own_ray_cluster]

SLOTS_PER_REPLICA = 5  # engine.max_num_seqs 4 + tenancy.reserved_slots 1


@pytest.mark.parametrize("placement", ["separate", "with_model"])
def test_the_step_scales_up_through_the_gate_queue_and_the_gate_follows_the_replicas(placement):
    config = replay_config(
        ingress_placement=placement,
        tenancy={"enabled": True, "limits_backend": "local", "reserved_slots": 1, "max_queue_wait_s": 300})
    run = run_step_replay(config, metric="serve_app_tenancy_gate_slots", metric_settles_to=SLOTS_PER_REPLICA)

    failures = [(r.status_code, r.error_kind, r.error) for r in run.records if not r.ok]
    assert not failures, failures[:5]
    assert all(r.output_tokens_server == r.max_tokens for r in run.records)
    assert max(run.replicas_seen) >= 2, f"never scaled up: {run.replicas_seen}"
    assert run.replicas_seen[-1] == 1, f"did not come back to one replica: {run.replicas_seen[-20:]}"
    slots = [value for value in run.metric_seen if value is not None]
    assert slots, "serve_app_tenancy_gate_slots never on /metrics"
    if placement == "separate":
        # One ingress replica gates every model replica's rows: its slots follow the running count up and down
        # (back down within a scrape or two: a scrape resizes for the replica view, re-read when 2 s old).
        assert max(slots) >= 2 * SLOTS_PER_REPLICA, list(zip(run.replicas_seen, run.metric_seen))
        assert max(slots) <= SLOTS_PER_REPLICA * max(run.replicas_seen)
        assert slots[-1] == SLOTS_PER_REPLICA, list(zip(run.replicas_seen, run.metric_seen))[-10:]
    else:
        # Each replica's ingress gates only its own engine, whatever the count.
        assert set(slots) == {SLOTS_PER_REPLICA}, slots
