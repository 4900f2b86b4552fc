"""The limiter actor on a tiny local Ray: two replicas' limiters share one limit; a dead actor is recreated."""

import asyncio

import pytest

ray = pytest.importorskip("ray")

from serve_app.tenancy.config import TenantConfig
from serve_app.tenancy.limiter_actor import (
    SERVE_NAMESPACE,
    RayLimiterBackend,
    limiter_actor_name,
)
from serve_app.tenancy.limits import ClusterLimiter


@pytest.fixture(scope="module")
def local_ray():
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    yield
    if started:
        ray.shutdown()


def test_serve_namespace_matches_ray_serve():
    from ray.serve._private.constants import SERVE_NAMESPACE as RAY_SERVE_NAMESPACE

    assert SERVE_NAMESPACE == RAY_SERVE_NAMESPACE


def test_two_cluster_limiters_share_one_limit_and_survive_a_dead_actor(local_ray):
    async def scenario() -> None:
        app = "tenancy-unit-test"
        tenant = TenantConfig(name="A", requests_per_minute=6)
        one = ClusterLimiter(RayLimiterBackend(app), lease_fraction=0.1, call_timeout_s=30.0, retry_s=0.2)
        two = ClusterLimiter(RayLimiterBackend(app), lease_fraction=0.1, call_timeout_s=30.0, retry_s=0.2)
        allowed = 0
        for i in range(12):
            allowed += (await (one if i % 2 else two).check_and_count(tenant, 10)).allowed
        assert allowed == 6
        assert not (await one.check_and_count(tenant, 10)).allowed

        actor = ray.get_actor(limiter_actor_name(app), namespace=SERVE_NAMESPACE)
        ray.kill(actor)
        await asyncio.sleep(0.5)
        # The call fails: fail_open admits on the local share (6 / 2 replicas) and marks the limiter down.
        assert (await one.check_and_count(tenant, 10)).allowed and one.is_down
        await asyncio.sleep(0.3)
        # After retry_s the next request creates a new actor, with a full budget again.
        assert (await one.check_and_count(tenant, 10)).allowed and not one.is_down
        assert ray.get_actor(limiter_actor_name(app), namespace=SERVE_NAMESPACE) is not None

    asyncio.run(scenario())
