"""`/health` over every model and every replica: what Ray Serve knows of each model deployment's replicas (from
the controller) together with an engine answering through that deployment.

`model_health` and `no_replica_up` are the pure decisions; `DeploymentReplicas` reads the controller (cached
briefly, it is an RPC; `peek` never waits for it, for the request path).
"""

from __future__ import annotations

import asyncio
import time
from serve_app.api.protocol import EngineStats

OK, DEGRADED, UNAVAILABLE = "ok", "degraded", "unavailable"


def model_health(replica_states: dict[str, int] | None, deployment_status: str | None,
                 engine_stats: EngineStats | None) -> str:
    """ok: every replica running and an engine answered healthy; degraded: serving, but some replicas are not
    running (starting, being replaced) or the deployment is not HEALTHY; unavailable: no engine answered
    healthy or no replica is running. Without the controller's view (None), the engine's answer decides."""
    if engine_stats is None or not engine_stats.is_healthy:
        return UNAVAILABLE
    if replica_states is None:
        return OK
    running = replica_states.get("RUNNING", 0)
    if running == 0:
        return UNAVAILABLE
    if running < sum(replica_states.values()) or deployment_status not in (None, "HEALTHY"):
        return DEGRADED
    return OK


def view_predates_replica(replica_states: dict[str, int] | None, engine_stats: EngineStats | None) -> bool:
    """An engine answered healthy through the model's deployment, yet the controller's view says no replica runs:
    the view was read before the replica started (it is cached for a TTL). Read it again before answering 503."""
    return (engine_stats is not None and engine_stats.is_healthy and replica_states is not None
            and replica_states.get("RUNNING", 0) == 0)


# A view of the replicas that says none runs is read again before a 503 when it is older than this.
NO_REPLICA_RECHECK_S = 0.25

# Deployment states in which a model with no running replica will not get one without an operator.
FAILED_STATES = ("UNHEALTHY", "DEPLOY_FAILED")


def no_replica_up(replica_states: dict[str, int] | None, deployment_status: str | None,
                  scales_from_zero: bool) -> bool:
    """True when a request for the model should get 503 now rather than wait: the controller reports no RUNNING
    replica (all starting, being replaced, or failed). A deployment that scales from zero (`min_replicas: 0`)
    makes its requests wait for the cold start instead, unless it has failed. Without the controller's view
    (None), requests go on (the handle's own wait and the request deadline still bound them)."""
    if replica_states is None or replica_states.get("RUNNING", 0) > 0:
        return False
    if scales_from_zero:
        return deployment_status in FAILED_STATES
    return True


class DeploymentReplicas:
    """Replica states of this application's deployments, from the Serve controller, at most every `ttl_s`.

    A view's age counts from when its read began (what the controller said then). Callers that need a fresher view
    than the last one share the read in flight if it began recently enough, else start one: a read that has begun
    but not answered never passes its predecessor off as fresh (twelve requests arriving together each used to see
    the old view, one that said no replica ran, while the first of them read the new one)."""

    def __init__(self, ttl_s: float = 2.0):
        self._ttl_s = ttl_s
        self._read_at = float("-inf")  # when the read behind `_view` began
        self._view: dict[str, tuple[dict[str, int], str]] | None = None
        self._reading: asyncio.Task | None = None
        self._reading_since = float("-inf")
        self._landed_at = float("-inf")  # when the read behind `_view` answered

    async def get(self, max_age_s: float | None = None) -> dict[str, tuple[dict[str, int], str]] | None:
        """The view, read again first if it is older than `max_age_s` (default: the TTL)."""
        limit = self._ttl_s if max_age_s is None else max_age_s
        if self.age_s() <= limit:
            return self._view
        if self._reading is None or self._reading.done() or time.monotonic() - self._reading_since > limit:
            self._start_read()
        await asyncio.shield(self._reading)
        return self._view

    def is_stale(self) -> bool:
        return self.age_s() > self._ttl_s

    def age_s(self) -> float:
        """Seconds since the read behind the view began (infinite before the first)."""
        return time.monotonic() - self._read_at

    def since_landed_s(self) -> float:
        """Seconds since the read behind the view answered (infinite before the first)."""
        return time.monotonic() - self._landed_at

    def peek(self) -> dict[str, tuple[dict[str, int], str]] | None:
        """The last view at once; a stale one is refreshed in the background for the next caller."""
        if self.is_stale() and (self._reading is None or self._reading.done()):
            self._start_read()
        return self._view

    def _start_read(self) -> None:
        self._reading_since = time.monotonic()
        self._reading = asyncio.get_running_loop().create_task(self._read(self._reading_since))

    async def _read(self, began: float) -> None:
        try:
            view = await asyncio.wait_for(asyncio.to_thread(_read_status), timeout=5.0)
        except Exception:  # noqa: BLE001 - the controller's view is a refinement; the engines still answer
            view = None
        if began >= self._read_at:  # a slower, older read never replaces a newer one
            self._view, self._read_at, self._landed_at = view, began, time.monotonic()


def _read_status() -> dict[str, tuple[dict[str, int], str]]:
    from ray import serve

    app = serve.status().applications[serve.get_replica_context().app_name]
    return {name: ({str(getattr(k, "value", k)): n for k, n in d.replica_states.items()},
                   str(getattr(d.status, "value", d.status)))
            for name, d in app.deployments.items()}
