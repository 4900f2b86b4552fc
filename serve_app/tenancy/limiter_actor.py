"""The Ray actor that holds the cluster-wide tenant budgets, and the `LimiterBackend` that reaches it.

One actor per Serve application, named `serve_app_tenant_limiter::<app>` in Serve's namespace; every ingress
replica gets it with `get_if_exists`, so the first creates it. It is not detached: it shares the fate of the
replica that created it, and when that replica goes the next lease call fails, the replicas apply
`limits_failure_mode` for `limits_retry_s`, and the first to retry creates a new actor with full budgets (at
most one extra minute's budget is granted across such a restart). The actor is a thin shell around the pure
`LimiterLedger`; its methods are synchronous, so Ray runs them one at a time.
"""

from __future__ import annotations

import asyncio
import time

import ray

from serve_app.tenancy.ledger import LeaseGrant, LimiterLedger, TenantLimits

SERVE_NAMESPACE = "serve"


def limiter_actor_name(app_name: str) -> str:
    return f"serve_app_tenant_limiter::{app_name}"


class TenantLimiterActor:
    """Ledger of every tenant's per-minute budgets (monotonic clock of the actor's process)."""

    def __init__(self, client_ttl_s: float = 60.0):
        self._ledger = LimiterLedger(client_ttl_s)

    def lease(self, client_id: str, tenant: str, limits: TenantLimits, need_requests: float, need_tokens: float,
              want_requests: float, want_tokens: float) -> LeaseGrant:
        return self._ledger.lease(client_id, tenant, limits, need_requests, need_tokens, want_requests, want_tokens,
                                  time.monotonic())

    def give_back(self, client_id: str, returns: list[tuple[str, TenantLimits, float, float]]) -> int:
        return self._ledger.give_back(client_id, returns, time.monotonic())

    def ping(self) -> bool:
        return True


def get_or_create_limiter_actor(app_name: str, namespace: str = SERVE_NAMESPACE):
    """The app's limiter actor, created if none is alive (blocking: a GCS round trip)."""
    return ray.remote(TenantLimiterActor).options(
        name=limiter_actor_name(app_name), namespace=namespace, get_if_exists=True, lifetime=None,
        num_cpus=0, max_restarts=0,
    ).remote()


class RayLimiterBackend:
    """`LimiterBackend` over the app's actor; after a failed call the actor is looked up (or created) again."""

    def __init__(self, app_name: str, namespace: str = SERVE_NAMESPACE):
        self.app_name = app_name
        self.namespace = namespace
        self._actor = None

    async def lease(self, client_id, tenant, limits, need_requests, need_tokens, want_requests, want_tokens):
        actor = await self._get_actor()
        return await self._checked(actor.lease.remote(client_id, tenant, limits, need_requests, need_tokens,
                                                      want_requests, want_tokens))

    async def give_back(self, client_id, returns):
        actor = await self._get_actor()
        return await self._checked(actor.give_back.remote(client_id, returns))

    async def ready(self) -> None:
        """Wait until the actor answers (created if none is alive). Its first start takes seconds on a busy node,
        longer than one lease call may: the limiter awaits this apart, with a start timeout of its own."""
        await self._get_actor()

    async def _get_actor(self):
        if self._actor is None:
            actor = await asyncio.to_thread(get_or_create_limiter_actor, self.app_name, self.namespace)
            await self._checked(actor.ping.remote())
            self._actor = actor
        return self._actor

    async def _checked(self, object_ref):
        try:
            return await object_ref
        except BaseException:
            # Dead actor, timeout (cancellation) or anything else: look it up again on the next call.
            self._actor = None
            raise
