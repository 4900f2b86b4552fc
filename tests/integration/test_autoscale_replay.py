"""A short autoscaling replay on the fake GPU cluster (issue 28 item 6): simulated engines, one per {"GPU": 1}
node, nodes that take 10 s to boot; the 90-second 4x step trace (loadtest/traces/step_short.jsonl) replayed
open loop (tests/integration/step_replay.py). The model deployment must grow past one replica during the step and
come back to one after it, and no request may fail (a 429 counts as a failure here: the admission limits are far
above this load).

Starts and stops its own Ray cluster (marked own_ray_cluster: it runs before the session's Ray starts):
`pytest tests/integration/test_autoscale_replay.py`.
"""

from __future__ import annotations

import pytest

from tests.integration.step_replay import replay_config, run_step_replay

pytestmark = [pytest.mark.integration, pytest.mark.own_ray_cluster]


def test_a_short_step_replay_scales_up_and_back_down_without_a_failed_request():
    run = run_step_replay(replay_config())
    failures = [(r.status_code, r.error_kind, r.error) for r in run.records if not r.ok]
    assert not failures, failures[:5]
    assert all(r.output_tokens_server == r.max_tokens for r in run.records)
    assert max(run.replicas_seen) >= 2, f"never scaled up: {run.replicas_seen}"
    assert run.replicas_seen[-1] == 1, f"did not come back to one replica: {run.replicas_seen[-20:]}"
    assert run.gpu_nodes_at_end >= 1
