"""`/health`'s decision per model: the controller's replica states together with an engine's answer."""

import pytest

from serve_app.api.protocol import EngineStats
from serve_app.ingress.health import DEGRADED, OK, UNAVAILABLE, model_health, no_replica_up, view_predates_replica

HEALTHY_ENGINE = EngineStats(is_healthy=True)


@pytest.mark.parametrize("states, status, engine, expected", [
    ({"RUNNING": 2}, "HEALTHY", HEALTHY_ENGINE, OK),
    ({"RUNNING": 1, "STARTING": 1}, "UPSCALING", HEALTHY_ENGINE, DEGRADED),  # a replica still starting
    ({"RUNNING": 2}, "UNHEALTHY", HEALTHY_ENGINE, DEGRADED),  # Serve replacing one that failed its check
    ({"RUNNING": 0, "STARTING": 2}, "UPDATING", HEALTHY_ENGINE, UNAVAILABLE),
    ({"RUNNING": 2}, "HEALTHY", EngineStats(is_healthy=False), UNAVAILABLE),  # the replica that answered has a dead engine
    ({"RUNNING": 2}, "HEALTHY", None, UNAVAILABLE),  # no replica answered in time
    (None, None, HEALTHY_ENGINE, OK),  # controller unreachable: the engine's answer decides
])
def test_model_health(states, status, engine, expected):
    assert model_health(states, status, engine) == expected


@pytest.mark.parametrize("states, status, scales_from_zero, refuse", [
    ({"RUNNING": 1, "STARTING": 1}, "UPSCALING", False, False),
    ({"STARTING": 1}, "UPDATING", False, True),  # all replicas being replaced: 503 now, not a wait
    ({"RECOVERING": 2}, "UNHEALTHY", False, True),
    ({}, "HEALTHY", False, True),
    ({}, "HEALTHY", True, False),  # scaled to zero: the request waits for the cold start
    ({"STARTING": 1}, "UPSCALING", True, False),
    ({}, "DEPLOY_FAILED", True, True),  # it will not come up by itself
    (None, None, False, False),  # controller unreachable: go on, the deadline bounds the wait
])
def test_no_replica_up(states, status, scales_from_zero, refuse):
    assert no_replica_up(states, status, scales_from_zero) is refuse


def test_an_engine_answering_while_the_view_says_none_runs_means_the_view_is_old():
    healthy = EngineStats(is_healthy=True)
    assert view_predates_replica({"RUNNING": 0, "STARTING": 1}, healthy)
    assert not view_predates_replica({"RUNNING": 1}, healthy)
    assert not view_predates_replica({"RUNNING": 0, "STARTING": 1}, None)  # nothing answered: really down
    assert not view_predates_replica({"RUNNING": 0}, EngineStats(is_healthy=False))
    assert not view_predates_replica(None, healthy)  # no view: the engine's answer decides already
