"""The cluster's per-tenant budgets: token buckets and the ledger that leases them out (pure, no I/O).

A limit of L per minute is a bucket of L that refills at L / 60 per second, so a tenant may burst up to L and
then sustains L per minute. One `LimiterLedger` holds every tenant's buckets: inside the Ray actor for the
cluster (limiter_actor.py), or in the replica for `limits_backend: local`. The caller passes the time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SECONDS_PER_MINUTE = 60.0
# Retry-After of a request that can never fit (it needs more than a whole minute's budget).
NEVER_FITS_RETRY_AFTER_S = 60


@dataclass
class TokenBucket:
    """`capacity` units, refilled continuously at `refill_per_s`; starts full."""

    capacity: float
    refill_per_s: float
    level: float
    updated_s: float

    @classmethod
    def per_minute(cls, limit: float, now_s: float, share: float = 1.0) -> TokenBucket:
        return cls(limit * share, limit * share / SECONDS_PER_MINUTE, limit * share, now_s)

    def refill(self, now_s: float) -> None:
        if now_s > self.updated_s:
            self.level = min(self.capacity, self.level + (now_s - self.updated_s) * self.refill_per_s)
            self.updated_s = now_s

    def seconds_until(self, amount: float, now_s: float) -> float:
        """0 when `amount` is available now; inf when it exceeds the capacity."""
        self.refill(now_s)
        if amount <= self.level:
            return 0.0
        if amount > self.capacity:
            return math.inf
        return (amount - self.level) / self.refill_per_s

    def give_back(self, amount: float, now_s: float) -> None:
        """Return `amount` unspent; a negative amount (a request used more than it was counted for) leaves the
        bucket in debt, paid off by the refill."""
        self.refill(now_s)
        self.level = min(self.capacity, self.level + amount)


@dataclass(frozen=True)
class TenantLimits:
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None

    @property
    def is_unlimited(self) -> bool:
        return self.requests_per_minute is None and self.tokens_per_minute is None


@dataclass
class TenantBudget:
    """A tenant's request and token buckets (None where unlimited), taken from together or not at all."""

    limits: TenantLimits
    requests: TokenBucket | None
    tokens: TokenBucket | None

    @classmethod
    def full(cls, limits: TenantLimits, now_s: float, share: float = 1.0) -> TenantBudget:
        rpm, tpm = limits.requests_per_minute, limits.tokens_per_minute
        return cls(limits, None if rpm is None else TokenBucket.per_minute(rpm, now_s, share),
                   None if tpm is None else TokenBucket.per_minute(tpm, now_s, share))

    def wait_s(self, num_requests: float, num_tokens: float, now_s: float) -> tuple[float, str | None]:
        """(seconds until both amounts are available, the limit that binds); (0, None) when they are now."""
        wait_requests = 0.0 if self.requests is None else self.requests.seconds_until(num_requests, now_s)
        wait_tokens = 0.0 if self.tokens is None else self.tokens.seconds_until(num_tokens, now_s)
        if wait_requests == 0.0 and wait_tokens == 0.0:
            return 0.0, None
        return (wait_requests, "requests_per_minute") if wait_requests >= wait_tokens else (
            wait_tokens, "tokens_per_minute")

    def take_up_to(self, num_requests: float, num_tokens: float, now_s: float) -> tuple[float, float]:
        """Take as much as is there, up to the amounts; inf for an unlimited dimension."""
        taken = []
        for bucket, amount in ((self.requests, num_requests), (self.tokens, num_tokens)):
            if bucket is None:
                taken.append(math.inf)
                continue
            bucket.refill(now_s)
            amount = max(0.0, min(amount, bucket.level))
            bucket.level -= amount
            taken.append(amount)
        return taken[0], taken[1]

    def give_back(self, num_requests: float, num_tokens: float, now_s: float) -> None:
        if self.requests is not None and math.isfinite(num_requests):
            self.requests.give_back(num_requests, now_s)
        if self.tokens is not None and math.isfinite(num_tokens):
            self.tokens.give_back(num_tokens, now_s)


@dataclass(frozen=True)
class LeaseGrant:
    """The ledger's answer: units granted (inf where unlimited), or a refusal with the wait and its reason."""

    granted: bool
    requests: float = 0.0
    tokens: float = 0.0
    retry_after_s: float = 0.0
    reason: str | None = None
    # Replicas that used the ledger in the last `client_ttl_s` (sizes the fail-open share).
    num_clients: int = 1


class LimiterLedger:
    """Every tenant's buckets, for the whole cluster. Pure: the caller passes the time (monotonic seconds)."""

    def __init__(self, client_ttl_s: float = 60.0):
        self.client_ttl_s = client_ttl_s
        self._budgets: dict[str, TenantBudget] = {}
        self._clients_seen_s: dict[str, float] = {}

    def lease(self, client_id: str, tenant: str, limits: TenantLimits, need_requests: float, need_tokens: float,
              want_requests: float, want_tokens: float, now_s: float) -> LeaseGrant:
        """Grant at least the need (or refuse, with how long until it fits), and up to the want if available."""
        num_clients = self._seen(client_id, now_s)
        budget = self._budget(tenant, limits, now_s)
        wait_s, reason = budget.wait_s(need_requests, need_tokens, now_s)
        if wait_s > 0:
            return LeaseGrant(False, retry_after_s=wait_s, reason=reason, num_clients=num_clients)
        requests, tokens = budget.take_up_to(max(need_requests, want_requests), max(need_tokens, want_tokens), now_s)
        return LeaseGrant(True, requests, tokens, num_clients=num_clients)

    def give_back(self, client_id: str, returns: list[tuple[str, TenantLimits, float, float]], now_s: float) -> int:
        """Return unspent leases: (tenant, limits, requests, tokens) each. Returns the number of clients."""
        for tenant, limits, requests, tokens in returns:
            self._budget(tenant, limits, now_s).give_back(requests, tokens, now_s)
        return self._seen(client_id, now_s)

    def _budget(self, tenant: str, limits: TenantLimits, now_s: float) -> TenantBudget:
        budget = self._budgets.get(tenant)
        if budget is None or budget.limits != limits:
            # New tenant, or its limits changed with a redeploy: start full.
            budget = self._budgets[tenant] = TenantBudget.full(limits, now_s)
        return budget

    def _seen(self, client_id: str, now_s: float) -> int:
        self._clients_seen_s[client_id] = now_s
        horizon = now_s - self.client_ttl_s
        for stale in [c for c, seen_s in self._clients_seen_s.items() if seen_s < horizon]:
            del self._clients_seen_s[stale]
        return len(self._clients_seen_s)
