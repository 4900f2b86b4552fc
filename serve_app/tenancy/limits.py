"""Per-tenant request-per-minute and token-per-minute limits, held once for the whole cluster.

The budgets are token buckets in one `LimiterLedger` (ledger.py; inside a Ray actor for the cluster, see
limiter_actor.py, or in the replica for `limits_backend: local`). This module is each replica's client.

Leases keep the actor off the request path. Each ingress replica's `ClusterLimiter` takes a lease of up to
`lease_fraction` of a tenant's per-minute budget from the ledger and spends it locally, with no await; when a
lease runs below half it is topped up in the background. Only a request that finds its lease short waits: for
the top-up in flight if there is one, else for one round trip of its own. Guarantees:

- The cluster never admits more than a limit allows: every unit spent was taken from the one ledger.
- It may refuse early while other replicas hold unspent leases: at most num_replicas x lease_fraction x L for at
  most `lease_ttl_s`, after which unspent leases go back to the ledger (swept on the replica's next request).
  Leases shrink to what a request needs as the bucket nears empty.

When the ledger cannot be reached (error or `call_timeout_s`), the replica is marked down for `retry_s`, logs
that once, and then: `fail_open` spends what its leases still hold and then a local bucket of limit / N (N =
replicas the ledger last reported), so the cluster stays near its limits; `fail_closed` refuses requests of
tenants with limits (reason `limiter_unavailable`, for a 503). After `retry_s` the next request tries the
ledger again. Tenants without limits never touch the limiter.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

from serve_app.tenancy.ledger import (
    NEVER_FITS_RETRY_AFTER_S,
    LeaseGrant,
    LimiterLedger,
    TenantBudget,
    TenantLimits,
)

if TYPE_CHECKING:
    from serve_app.tenancy.config import TenancyConfig, TenantConfig

logger = logging.getLogger(__name__)


class LimiterBackend(Protocol):
    """Where a `ClusterLimiter` gets its leases: the Ray actor, or a ledger in the process."""

    async def lease(self, client_id: str, tenant: str, limits: TenantLimits, need_requests: float,
                    need_tokens: float, want_requests: float, want_tokens: float) -> LeaseGrant: ...

    async def give_back(self, client_id: str, returns: list[tuple[str, TenantLimits, float, float]]) -> int: ...


class LocalLedgerBackend:
    """A ledger in this process (`limits_backend: local`, and tests): each replica enforces the full limits."""

    def __init__(self, ledger: LimiterLedger | None = None, clock: Callable[[], float] = time.monotonic):
        self.ledger = ledger or LimiterLedger()
        self.clock = clock

    async def lease(self, client_id, tenant, limits, need_requests, need_tokens, want_requests, want_tokens):
        return self.ledger.lease(client_id, tenant, limits, need_requests, need_tokens, want_requests, want_tokens,
                                 self.clock())

    async def give_back(self, client_id, returns):
        return self.ledger.give_back(client_id, returns, self.clock())


@dataclass(frozen=True)
class Decision:
    """Admit or not; a refusal carries a Retry-After (whole seconds) and the reason
    (`requests_per_minute`, `tokens_per_minute`: 429; `limiter_unavailable`: 503)."""

    allowed: bool
    retry_after_s: int = 0
    reason: str | None = None


ALLOWED = Decision(True)
# How long a lease call waits for the limiter actor to start (created on first use, or again after it died)
# before that counts as an outage; a lease call itself then has limits_call_timeout_s.
BACKEND_START_TIMEOUT_S = 30.0


@dataclass
class _Lease:
    limits: TenantLimits
    requests: float
    tokens: float
    expires_s: float

    def covers(self, num_requests: float, num_tokens: float) -> bool:
        return self.requests >= num_requests and self.tokens >= num_tokens


@dataclass
class ClusterLimiter:
    """One ingress replica's view of the cluster-wide limits (see the module docstring)."""

    backend: LimiterBackend
    lease_fraction: float = 0.02
    lease_ttl_s: float = 2.0
    call_timeout_s: float = 0.5
    retry_s: float = 5.0
    failure_mode: Literal["fail_open", "fail_closed"] = "fail_open"
    clock: Callable[[], float] = time.monotonic
    client_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    # Replicas the ledger last reported (sizes the fail-open share).
    num_clients: int = field(default=1, init=False)
    _leases: dict[str, _Lease] = field(default_factory=dict, init=False)
    # A tenant's top-up call in flight, shared by its requests that find the lease short meanwhile.
    _refills: dict[str, asyncio.Task] = field(default_factory=dict, init=False)
    _background: set[asyncio.Task] = field(default_factory=set, init=False)
    _next_sweep_s: float = field(default=0.0, init=False)
    _down_until_s: float | None = field(default=None, init=False)
    _fallback: dict[str, TenantBudget] = field(default_factory=dict, init=False)
    # The backend's start (the limiter actor's first answer) in progress, shared by the calls that wait for it.
    _starting: asyncio.Future | None = field(default=None, init=False)

    @classmethod
    def from_config(cls, config: TenancyConfig, backend: LimiterBackend, **kwargs) -> ClusterLimiter:
        """From a `TenancyConfig` (serve_app/tenancy/config.py)."""
        return cls(backend, lease_fraction=config.limits_lease_fraction, lease_ttl_s=config.limits_lease_ttl_s,
                   call_timeout_s=config.limits_call_timeout_s, retry_s=config.limits_retry_s,
                   failure_mode=config.limits_failure_mode, **kwargs)

    @property
    def is_down(self) -> bool:
        return self._down_until_s is not None

    async def check_and_count(self, tenant: TenantConfig, num_tokens: int) -> Decision:
        """Count one request of `num_tokens` (prompt + max_tokens) for `tenant` if its limits allow it.
        No await unless its lease is short."""
        limits = TenantLimits(tenant.requests_per_minute, tenant.tokens_per_minute)
        if limits.is_unlimited:
            return ALLOWED
        name, now_s = tenant.name, self.clock()
        if now_s >= self._next_sweep_s:
            self._sweep_expired(now_s)
        if self._take_from_lease(name, limits, num_tokens, now_s):
            return ALLOWED
        if self._down_until_s is not None and now_s < self._down_until_s:
            return self._when_down(name, limits, num_tokens, now_s)
        refill = self._refills.get(name)
        if refill is not None:
            await asyncio.shield(refill)
            now_s = self.clock()
            if self._take_from_lease(name, limits, num_tokens, now_s):
                return ALLOWED
            if self.is_down:
                return self._when_down(name, limits, num_tokens, now_s)
        # Ask for the shortfall only: a lease holds what settled requests gave back (or owes what they overran).
        lease = self._leases.get(name)
        have_requests, have_tokens = (lease.requests, lease.tokens) if lease is not None and lease.limits == limits \
            else (0.0, 0.0)
        grant = await self._call_lease(name, limits, max(0.0, 1 - have_requests), max(0.0, num_tokens - have_tokens))
        now_s = self.clock()
        if grant is None:
            return self._when_down(name, limits, num_tokens, now_s)
        if not grant.granted:
            retry_s = NEVER_FITS_RETRY_AFTER_S if math.isinf(grant.retry_after_s) else grant.retry_after_s
            return Decision(False, max(1, math.ceil(retry_s)), grant.reason)
        self._add_to_lease(name, limits, grant, now_s)
        if not self._take_from_lease(name, limits, num_tokens, now_s, refill=False):
            raise AssertionError("a granted lease must cover the request it was asked for")
        return ALLOWED

    def refund(self, tenant: TenantConfig, num_tokens: int, num_requests: int = 1) -> None:
        """Un-count a request refused after it was counted (e.g. by the deadline check)."""
        limits = TenantLimits(tenant.requests_per_minute, tenant.tokens_per_minute)
        if limits.is_unlimited:
            return
        lease = self._leases.get(tenant.name)
        if lease is not None and lease.limits == limits:
            lease.requests += num_requests
            lease.tokens += num_tokens
        elif tenant.name in self._fallback:
            self._fallback[tenant.name].give_back(num_requests, num_tokens, self.clock())

    def adjust(self, tenant: TenantConfig, delta_tokens: int) -> None:
        """Correct a counted request by what it really used (`delta_tokens` = used - counted, of either sign):
        more is taken from the tenant's lease (which may go below zero: its next request then needs a fresh
        lease), less is given back. Usage that no lease or fallback counter holds any more is not counted."""
        if delta_tokens:
            self.refund(tenant, -delta_tokens, num_requests=0)

    async def close(self) -> None:
        """Return every lease (best effort) and stop background calls."""
        returns = [(name, lease.limits, lease.requests, lease.tokens) for name, lease in self._leases.items()]
        self._leases.clear()
        for task in list(self._background):
            task.cancel()
        if returns and not self.is_down:
            try:
                await asyncio.wait_for(self.backend.give_back(self.client_id, returns), self.call_timeout_s)
            except Exception as exc:  # noqa: BLE001 - best effort on shutdown; the buckets refill with time
                logger.debug("could not return tenant leases on close: %s", exc)

    def _lease_size(self, limits: TenantLimits) -> tuple[float, float]:
        rpm, tpm = limits.requests_per_minute, limits.tokens_per_minute
        return (0.0 if rpm is None else max(1.0, math.ceil(rpm * self.lease_fraction)),
                0.0 if tpm is None else max(1.0, math.ceil(tpm * self.lease_fraction)))

    def _take_from_lease(self, name: str, limits: TenantLimits, num_tokens: int, now_s: float,
                         refill: bool = True) -> bool:
        lease = self._leases.get(name)
        if lease is None or lease.limits != limits or now_s >= lease.expires_s or not lease.covers(1, num_tokens):
            return False
        lease.requests -= 1
        lease.tokens -= num_tokens
        want_requests, want_tokens = self._lease_size(limits)
        if refill and (lease.requests < want_requests / 2 or lease.tokens < want_tokens / 2) and not self.is_down:
            self._start_refill(name, limits)
        return True

    def _add_to_lease(self, name: str, limits: TenantLimits, grant: LeaseGrant, now_s: float) -> None:
        lease = self._leases.get(name)
        if lease is None or lease.limits != limits:
            lease = self._leases[name] = _Lease(limits, 0.0, 0.0, now_s)
        lease.requests += grant.requests
        lease.tokens += grant.tokens
        lease.expires_s = now_s + self.lease_ttl_s

    def _start_refill(self, name: str, limits: TenantLimits) -> None:
        if name in self._refills:
            return

        async def refill() -> None:
            try:
                grant = await self._call_lease(name, limits, 0, 0)
                if grant is not None and grant.granted:
                    self._add_to_lease(name, limits, grant, self.clock())
            finally:
                self._refills.pop(name, None)

        self._refills[name] = self._spawn(refill())

    async def _call_lease(self, name: str, limits: TenantLimits, need_requests: float,
                          need_tokens: float) -> LeaseGrant | None:
        """One round trip; None (and the limiter marked down) when the ledger cannot be reached."""
        want_requests, want_tokens = self._lease_size(limits)
        try:
            ready = getattr(self.backend, "ready", None)
            if ready is not None:  # a starting actor is not an outage: wait for it (bounded) before the timed call
                await asyncio.wait_for(asyncio.shield(self._ready(ready)), BACKEND_START_TIMEOUT_S)
            grant = await asyncio.wait_for(
                self.backend.lease(self.client_id, name, limits, need_requests, need_tokens, want_requests,
                                   want_tokens), self.call_timeout_s)
        except Exception as exc:  # noqa: BLE001 - any failure of the ledger call is an outage
            self._mark_down(exc)
            return None
        self._mark_up(grant.num_clients)
        return grant

    def _ready(self, ready: Callable[[], Awaitable[None]]) -> asyncio.Future:
        """One shared wait for the backend to answer, however many requests ask at once."""
        if self._starting is None or self._starting.done():
            self._starting = asyncio.ensure_future(ready())
        return self._starting

    def _sweep_expired(self, now_s: float) -> None:
        self._next_sweep_s = now_s + self.lease_ttl_s / 2
        expired = [name for name, lease in self._leases.items() if now_s >= lease.expires_s]
        returns = []
        for name in expired:
            lease = self._leases.pop(name)
            returns.append((name, lease.limits, lease.requests, lease.tokens))
        if returns and not self.is_down:
            self._spawn(self._give_back(returns))

    async def _give_back(self, returns: list[tuple[str, TenantLimits, float, float]]) -> None:
        try:
            self._mark_up(await asyncio.wait_for(self.backend.give_back(self.client_id, returns),
                                                 self.call_timeout_s))
        except Exception as exc:  # noqa: BLE001 - the units are lost; the buckets refill with time
            self._mark_down(exc)

    def _when_down(self, name: str, limits: TenantLimits, num_tokens: int, now_s: float) -> Decision:
        if self.failure_mode == "fail_closed":
            return Decision(False, max(1, math.ceil(self.retry_s)), "limiter_unavailable")
        budget = self._fallback.get(name)
        if budget is None or budget.limits != limits:
            budget = self._fallback[name] = TenantBudget.full(limits, now_s, share=1.0 / max(1, self.num_clients))
        wait_s, reason = budget.wait_s(1, num_tokens, now_s)
        if wait_s > 0:
            retry_s = NEVER_FITS_RETRY_AFTER_S if math.isinf(wait_s) else wait_s
            return Decision(False, max(1, math.ceil(retry_s)), reason)
        budget.take_up_to(1, num_tokens, now_s)
        return ALLOWED

    def _mark_down(self, exc: BaseException) -> None:
        if self._down_until_s is None:
            logger.warning("tenant limiter unreachable (%s: %s); %s for %.0f s, then retrying", type(exc).__name__,
                           str(exc)[:200], "admitting on local shares of the limits" if
                           self.failure_mode == "fail_open" else "refusing limited tenants with 503", self.retry_s)
        self._down_until_s = self.clock() + self.retry_s

    def _mark_up(self, num_clients: int) -> None:
        self.num_clients = max(1, num_clients)
        if self._down_until_s is not None:
            logger.warning("tenant limiter reachable again; cluster-wide limits restored")
            self._down_until_s = None
            self._fallback.clear()

    def _spawn(self, coroutine) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task
