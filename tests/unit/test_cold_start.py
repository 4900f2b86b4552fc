"""Scale from zero: the first requests wait for the cold start, later ones get a fast 429 that says how long."""

import asyncio

import pytest

from serve_app.api.errors import ServeAppError
from serve_app.ingress.cold_start import ColdStart
from serve_app.ingress.gate import Router


def test_the_first_requests_wait_and_the_rest_are_told_how_long_the_start_still_takes():
    cold = ColdStart(expected_s=60.0, max_waiting=2)
    assert cold.on_request(0, now_s=100.0) is None and cold.on_request(0, now_s=101.0) is None
    assert cold.on_request(0, now_s=110.0) == 50  # 60 s expected, 10 s gone
    assert cold.on_request(0, now_s=159.5) == 1
    assert cold.on_request(0, now_s=200.0) == 1  # overdue: retry soon, never 0


def test_a_running_replica_lets_everything_through_and_the_start_is_timed_for_the_next_one():
    cold = ColdStart(expected_s=60.0, max_waiting=1)
    for second in range(100, 181, 2):  # requests every 2 s while the replica starts
        cold.on_request(0, now_s=float(second))
    assert cold.on_request(1, now_s=182.0) is None
    assert cold.expected_s == pytest.approx(82.0)
    # The next cold start (scaled back to zero later): its Retry-After comes from the one just timed.
    assert cold.on_request(0, now_s=1000.0) is None
    assert cold.on_request(0, now_s=1002.0) == 80


def test_a_start_seen_only_after_a_long_silence_is_not_timed():
    cold = ColdStart(expected_s=60.0, max_waiting=1)
    cold.on_request(0, now_s=100.0)
    assert cold.on_request(3, now_s=900.0) is None  # nobody asked for 800 s: that is not how long the start took
    assert cold.expected_s == 60.0


class _Replicas:
    def __init__(self, running: int):
        self.running = running

    def peek(self):
        return {"ModelServer": ({"RUNNING": self.running, "STARTING": 1 - min(1, self.running)}, "UPSCALING")}

    def age_s(self) -> float:
        return 0.0


def test_the_router_refuses_past_the_waiting_requests_with_429_and_retry_after():
    replicas = _Replicas(running=0)
    router = Router({"m": "m"}, "m", {"m": "ModelServer"}, {"m": True}, replicas,
                    {"m": ColdStart(expected_s=90.0, max_waiting=1)})

    async def main():
        await router.check_replica_up("m")  # waits for the cold start (Ray scales up for it)
        with pytest.raises(ServeAppError) as refused:
            await router.check_replica_up("m")
        replicas.running = 1
        await router.check_replica_up("m")
        return refused.value

    error = asyncio.run(main())
    assert error.status_code == 429 and error.code == "model_cold_starting"
    assert 85 <= int(error.headers["Retry-After"]) <= 90


def test_a_view_read_just_before_the_model_came_up_is_read_again_before_a_503(monkeypatch):
    """prefix_routing benchmark, 2026-12-05: /health said ok through one ingress replica while the other, whose view
    of the replicas was read a second earlier (within its 2 s TTL), answered the first three requests with 503."""
    from serve_app.ingress import health

    controller = {"RUNNING": 0, "STARTING": 1}
    monkeypatch.setattr(health, "_read_status", lambda: {"ModelServer": (dict(controller), "UPDATING")})
    replicas = health.DeploymentReplicas(ttl_s=2.0)
    router = Router({"m": "m"}, "m", {"m": "ModelServer"}, {"m": False}, replicas, {})

    async def main():
        await replicas.get()  # read while the model was still starting
        controller.update(RUNNING=1, STARTING=0)
        await asyncio.sleep(0.3)  # past NO_REPLICA_RECHECK_S, well within the TTL
        await router.check_replica_up("m")  # no 503: the view is read again first
        controller.update(RUNNING=0, STARTING=1)  # really down (a fresh view says so): still a fast 503
        await replicas.get(max_age_s=0.0)
        with pytest.raises(ServeAppError) as down:
            await router.check_replica_up("m")
        return down.value

    assert asyncio.run(main()).status_code == 503


def test_requests_arriving_together_wait_for_the_read_in_flight_instead_of_taking_the_old_view(monkeypatch):
    """CI, 2026-12-05 (tests/integration/test_tenancy_replicas.py): a flood's twelve requests reached an ingress
    replica whose view said no model replica ran; the first began a new read and the other eleven, seeing a read
    just begun, took the old view and one answered 503 while both model replicas served."""
    import time

    from serve_app.ingress import health

    controller = {"RUNNING": 0, "STARTING": 2}

    def slow_read():
        time.sleep(0.2)  # a controller call under load
        return {"ModelServer": (dict(controller), "HEALTHY")}

    monkeypatch.setattr(health, "_read_status", slow_read)
    replicas = health.DeploymentReplicas(ttl_s=2.0)
    router = Router({"m": "m"}, "m", {"m": "ModelServer"}, {"m": False}, replicas, {})

    async def main():
        await replicas.get()  # read while the model replicas were starting
        controller.update(RUNNING=2, STARTING=0)
        await asyncio.sleep(0.3)
        results = await asyncio.gather(*(router.check_replica_up("m") for _ in range(12)), return_exceptions=True)
        return [result for result in results if result is not None]

    assert asyncio.run(main()) == []
