"""Token buckets, the cluster ledger, and ClusterLimiter's leases and failure modes (in-process ledger)."""

import asyncio
import logging
import math

import pytest

from serve_app.tenancy.config import TenancyConfig, TenantConfig
from serve_app.tenancy.ledger import (
    LimiterLedger,
    TenantBudget,
    TenantLimits,
    TokenBucket,
)
from serve_app.tenancy.limits import ClusterLimiter, LocalLedgerBackend


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


class CountingBackend(LocalLedgerBackend):
    """The in-process ledger, counting round trips; `broken` makes every call fail, `hang` every call stall."""

    def __init__(self, ledger: LimiterLedger, clock) -> None:
        super().__init__(ledger, clock)
        self.num_calls = 0
        self.broken = False
        self.hang = False

    async def lease(self, *args):
        self.num_calls += 1
        if self.hang:
            await asyncio.sleep(10)
        if self.broken:
            raise ConnectionError("actor is gone")
        return await super().lease(*args)

    async def give_back(self, *args):
        if self.broken:
            raise ConnectionError("actor is gone")
        return await super().give_back(*args)


def make_limiters(num: int, **kwargs):
    clock = FakeClock()
    backend = CountingBackend(LimiterLedger(), clock)
    return clock, backend, [ClusterLimiter(backend, clock=clock, **kwargs) for _ in range(num)]


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


def test_token_bucket_refills_continuously_up_to_capacity():
    bucket = TokenBucket.per_minute(60, now_s=0.0)
    assert bucket.level == 60 and bucket.refill_per_s == 1.0
    assert bucket.seconds_until(60, 0.0) == 0.0
    bucket.level = 0.0
    assert bucket.seconds_until(5, 0.0) == pytest.approx(5.0)
    assert bucket.seconds_until(5, 5.0) == 0.0
    assert math.isinf(bucket.seconds_until(61, 5.0))
    bucket.give_back(1000, 6.0)
    assert bucket.level == 60


def test_budget_takes_both_limits_or_neither():
    budget = TenantBudget.full(TenantLimits(requests_per_minute=10, tokens_per_minute=100), now_s=0.0)
    wait_s, reason = budget.wait_s(1, 150, 0.0)
    assert math.isinf(wait_s) and reason == "tokens_per_minute"
    assert budget.take_up_to(3, 80, 0.0) == (3, 80)
    wait_s, reason = budget.wait_s(1, 50, 0.0)
    assert reason == "tokens_per_minute" and wait_s == pytest.approx(30 / (100 / 60))
    unlimited_tokens = TenantBudget.full(TenantLimits(requests_per_minute=10), now_s=0.0)
    assert unlimited_tokens.take_up_to(1, 10**9, 0.0) == (1, math.inf)


def test_ledger_grants_need_to_want_and_refuses_with_wait():
    ledger = LimiterLedger()
    limits = TenantLimits(requests_per_minute=10)
    grant = ledger.lease("c1", "A", limits, 1, 0, 4, 0, now_s=0.0)
    assert grant.granted and grant.requests == 4 and math.isinf(grant.tokens)
    grant = ledger.lease("c2", "A", limits, 1, 0, 100, 0, now_s=0.0)
    assert grant.granted and grant.requests == 6 and grant.num_clients == 2
    grant = ledger.lease("c1", "A", limits, 1, 0, 4, 0, now_s=0.0)
    assert not grant.granted and grant.reason == "requests_per_minute" and grant.retry_after_s == pytest.approx(6.0)
    assert ledger.give_back("c1", [("A", limits, 3, 0)], now_s=0.0) == 2
    assert ledger.lease("c1", "A", limits, 1, 0, 1, 0, now_s=0.0).granted
    # A client not seen for client_ttl_s no longer counts.
    assert ledger.lease("c1", "A", limits, 0, 0, 0, 0, now_s=100.0).num_clients == 1


def test_ledger_resets_a_tenant_whose_limits_changed():
    ledger = LimiterLedger()
    ledger.lease("c", "A", TenantLimits(requests_per_minute=1), 1, 0, 1, 0, now_s=0.0)
    assert not ledger.lease("c", "A", TenantLimits(requests_per_minute=1), 1, 0, 1, 0, now_s=0.0).granted
    assert ledger.lease("c", "A", TenantLimits(requests_per_minute=2), 1, 0, 1, 0, now_s=0.0).granted


async def test_two_limiters_share_one_limit():
    clock, _backend, (one, two) = make_limiters(2, lease_fraction=0.1)
    tenant = TenantConfig(name="A", requests_per_minute=10)
    decisions = []
    for i in range(20):
        decisions.append(await (one if i % 2 else two).check_and_count(tenant, 100))
        await settle()
    assert sum(d.allowed for d in decisions) == 10
    refused = [d for d in decisions if not d.allowed]
    assert all(d.reason == "requests_per_minute" and d.retry_after_s >= 1 for d in refused)
    clock.now_s += 6.0  # one request's worth refills
    assert (await one.check_and_count(tenant, 100)).allowed
    assert not (await two.check_and_count(tenant, 100)).allowed


async def test_hot_path_spends_the_lease_without_round_trips():
    _clock, backend, (limiter,) = make_limiters(1, lease_fraction=0.1)
    tenant = TenantConfig(name="A", requests_per_minute=1000, tokens_per_minute=1_000_000)
    for _ in range(300):
        assert (await limiter.check_and_count(tenant, 100)).allowed
        await settle()
    # Leases of 100 requests, topped up in the background at half: about one call per 50 requests.
    assert backend.num_calls <= 8


async def test_unlimited_tenants_never_call_the_ledger():
    _clock, backend, (limiter,) = make_limiters(1)
    for _ in range(10):
        assert (await limiter.check_and_count(TenantConfig(name="free"), 10**6)).allowed
    assert backend.num_calls == 0


async def test_request_larger_than_a_minute_of_budget_is_refused():
    _clock, _backend, (limiter,) = make_limiters(1)
    decision = await limiter.check_and_count(TenantConfig(name="A", tokens_per_minute=1000), 5000)
    assert not decision.allowed and decision.reason == "tokens_per_minute" and decision.retry_after_s == 60


async def test_unspent_leases_return_after_their_ttl():
    clock, _backend, (one, two) = make_limiters(2, lease_fraction=0.5, lease_ttl_s=2.0)
    tenant = TenantConfig(name="A", requests_per_minute=10)
    assert (await one.check_and_count(tenant, 1)).allowed  # `one` now holds 4 unspent
    await settle()
    allowed = [(await two.check_and_count(tenant, 1)).allowed for _ in range(10)]
    await settle()
    assert sum(allowed) == 5  # the ledger's other half; `one` still holds its lease
    clock.now_s += 2.5  # `one`'s lease expires; its next request returns the rest
    await one.check_and_count(tenant, 1)
    await settle()
    allowed = [(await two.check_and_count(tenant, 1)).allowed for _ in range(10)]
    assert sum(allowed) >= 3


async def test_refund_restores_the_lease():
    _clock, _backend, (limiter,) = make_limiters(1, lease_fraction=0.1)
    tenant = TenantConfig(name="A", requests_per_minute=1)
    assert (await limiter.check_and_count(tenant, 10)).allowed
    assert not (await limiter.check_and_count(tenant, 10)).allowed
    limiter.refund(tenant, 10)
    assert (await limiter.check_and_count(tenant, 10)).allowed


async def test_fail_open_admits_on_a_local_share_and_logs_once(caplog):
    clock, backend, (limiter,) = make_limiters(1, lease_fraction=0.01, retry_s=5.0)
    tenant = TenantConfig(name="A", requests_per_minute=100)
    # Another replica is known to the ledger: the local share is half of the limit.
    backend.ledger.lease("other-replica", "B", TenantLimits(requests_per_minute=1), 0, 0, 0, 0, clock())
    assert (await limiter.check_and_count(tenant, 1)).allowed
    assert limiter.num_clients == 2
    backend.broken = True
    with caplog.at_level(logging.WARNING, logger="serve_app.tenancy.limits"):
        results = [(await limiter.check_and_count(tenant, 1)).allowed for _ in range(80)]
    assert limiter.is_down
    assert sum(results) == 50  # the share of 100 / 2 replicas
    assert len([r for r in caplog.records if "unreachable" in r.message]) == 1
    calls_while_down = backend.num_calls
    await limiter.check_and_count(tenant, 1)
    assert backend.num_calls == calls_while_down  # no call until retry_s has passed
    backend.broken = False
    clock.now_s += 5.0
    with caplog.at_level(logging.WARNING, logger="serve_app.tenancy.limits"):
        assert (await limiter.check_and_count(tenant, 1)).allowed
    assert not limiter.is_down and any("reachable again" in r.message for r in caplog.records)


async def test_fail_closed_refuses_limited_tenants_only():
    _clock, backend, (limiter,) = make_limiters(1, failure_mode="fail_closed", retry_s=3.0)
    backend.broken = True
    decision = await limiter.check_and_count(TenantConfig(name="A", requests_per_minute=100), 1)
    assert not decision.allowed and decision.reason == "limiter_unavailable" and decision.retry_after_s == 3
    assert (await limiter.check_and_count(TenantConfig(name="free"), 1)).allowed


async def test_a_slow_ledger_counts_as_down():
    _clock, backend, (limiter,) = make_limiters(1, failure_mode="fail_closed", call_timeout_s=0.01)
    backend.hang = True
    decision = await limiter.check_and_count(TenantConfig(name="A", requests_per_minute=100), 1)
    assert decision.reason == "limiter_unavailable"


async def test_a_starting_backend_is_waited_for_not_counted_as_down():
    """The limiter actor's first start takes seconds, longer than one call may: with fail_closed the app's first
    limited requests were refused with 503 before any outage. The start is awaited apart (shared), then the call."""
    _clock, backend, (limiter,) = make_limiters(1, failure_mode="fail_closed", call_timeout_s=0.01)
    starts = []
    started = asyncio.Event()
    lease = backend.lease

    async def ready() -> None:  # like the Ray backend: create the actor, wait for its first answer
        if not started.is_set():
            starts.append(1)
            await asyncio.sleep(0.05)  # five call timeouts
            started.set()

    async def lease_after_start(*args):  # a lease call on a starting actor waits for the start too
        await ready()
        return await lease(*args)

    backend.ready, backend.lease = ready, lease_after_start
    tenant = TenantConfig(name="A", requests_per_minute=1000)
    decisions = await asyncio.gather(*(limiter.check_and_count(tenant, 1) for _ in range(3)))
    assert all(d.allowed for d in decisions) and not limiter.is_down
    assert len(starts) <= 2  # concurrent callers share one wait (a top-up may ask again once it is done)


async def test_from_config_and_close_returns_leases():
    config = TenancyConfig(limits_lease_fraction=0.5, limits_failure_mode="fail_closed", limits_retry_s=7)
    clock = FakeClock()
    ledger = LimiterLedger()
    limiter = ClusterLimiter.from_config(config, LocalLedgerBackend(ledger, clock), clock=clock)
    assert limiter.failure_mode == "fail_closed" and limiter.retry_s == 7 and limiter.lease_fraction == 0.5
    tenant = TenantConfig(name="A", requests_per_minute=10)
    assert (await limiter.check_and_count(tenant, 1)).allowed
    await limiter.close()
    grant = ledger.lease("someone", "A", TenantLimits(requests_per_minute=10), 9, 0, 9, 0, clock())
    assert grant.granted


async def test_a_settled_request_is_charged_what_it_used_and_a_lease_asks_only_for_its_shortfall():
    _clock, _backend, (limiter,) = make_limiters(1, lease_fraction=0.01)
    tenant = TenantConfig(name="A", tokens_per_minute=100)
    assert (await limiter.check_and_count(tenant, 95)).allowed  # estimated 95; the bucket keeps 5
    limiter.adjust(tenant, -60)  # it used 35: 60 back in the lease
    assert (await limiter.check_and_count(tenant, 64)).allowed  # 60 in the lease + 4 of the bucket's 5
    limiter.adjust(tenant, +30)  # it overran its estimate by 30: a debt
    assert not (await limiter.check_and_count(tenant, 2)).allowed  # 35 + 64 + 30 > 100
