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


def test_health_reads_again_a_view_older_than_the_replica_an_engine_answered_from(monkeypatch):
    """CI, 2026-12-05 (tests/integration/step_replay.py): /health answered 503 just after the model's replica came
    up, from a view read while it started (cached for its TTL), though the engine answered through it."""
    import asyncio

    from serve_app.config import AppConfig
    from serve_app.ingress import health
    from serve_app.ingress.replica import Ingress
    from tests.unit.test_error_format import _UnreachableModel

    controller = {"RUNNING": 0, "STARTING": 1}
    monkeypatch.setattr(health, "_read_status", lambda: {"ModelServer": (dict(controller), "UPDATING")})
    config = AppConfig.model_validate({"model": {"source": "tiny"}, "ingress_placement": "separate"})

    async def main():
        ingress = await Ingress.create(config, model_handles={"tiny-llama": _UnreachableModel()})

        async def engines(timeout_s: float) -> dict:
            return {"tiny-llama": HEALTHY_ENGINE}

        ingress._all_engine_stats = engines
        await ingress._replicas.get()  # read while the replica was starting
        controller.update(RUNNING=1, STARTING=0)
        return await ingress.health()

    response = asyncio.run(main())
    assert response.status_code == 200, response.body
    assert b'"running":1' in response.body


def test_a_slow_older_read_never_replaces_a_newer_view(monkeypatch):
    import asyncio
    import time

    from serve_app.ingress import health

    answers = iter([(0.3, "old"), (0.0, "new")])

    def read():
        delay, view = next(answers)
        time.sleep(delay)
        return {"ModelServer": ({"RUNNING": 1}, view)}

    monkeypatch.setattr(health, "_read_status", read)
    replicas = health.DeploymentReplicas(ttl_s=2.0)

    async def main():
        assert replicas.peek() is None  # the first read begins, in the background
        await asyncio.sleep(0.05)
        newer = await replicas.get(max_age_s=0.0)  # a second read, begun later, answers first
        await asyncio.sleep(0.4)  # the first answers now
        return newer, replicas.peek()

    newer, later = asyncio.run(main())
    assert newer["ModelServer"][1] == "new" and later["ModelServer"][1] == "new"
