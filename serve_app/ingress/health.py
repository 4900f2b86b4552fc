"""`/health` over every model and every replica: what Ray Serve knows of each model deployment's replicas (from
the controller) together with an engine answering through that deployment.

`model_health` is the pure decision; `deployment_replicas` reads the controller (cached briefly, it is an RPC).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

OK, DEGRADED, UNAVAILABLE = "ok", "degraded", "unavailable"


def model_health(replica_states: dict[str, int] | None, deployment_status: str | None,
                 engine_stats: dict[str, Any] | None) -> str:
    """ok: every replica running and an engine answered healthy; degraded: serving, but some replicas are not
    running (starting, being replaced) or the deployment is not HEALTHY; unavailable: no engine answered
    healthy or no replica is running. Without the controller's view (None), the engine's answer decides."""
    if engine_stats is None or not engine_stats.get("is_healthy"):
        return UNAVAILABLE
    if replica_states is None:
        return OK
    running = replica_states.get("RUNNING", 0)
    if running == 0:
        return UNAVAILABLE
    if running < sum(replica_states.values()) or deployment_status not in (None, "HEALTHY"):
        return DEGRADED
    return OK


class DeploymentReplicas:
    """Replica states of this application's deployments, from the Serve controller, at most every `ttl_s`."""

    def __init__(self, ttl_s: float = 2.0):
        self._ttl_s = ttl_s
        self._read_at = 0.0
        self._view: dict[str, tuple[dict[str, int], str]] | None = None

    async def get(self) -> dict[str, tuple[dict[str, int], str]] | None:
        if time.monotonic() - self._read_at > self._ttl_s:
            self._read_at = time.monotonic()
            try:
                self._view = await asyncio.wait_for(asyncio.to_thread(_read_status), timeout=5.0)
            except Exception:  # noqa: BLE001 - the controller's view is a refinement; the engines still answer
                self._view = None
        return self._view


def _read_status() -> dict[str, tuple[dict[str, int], str]]:
    from ray import serve

    app = serve.status().applications[serve.get_replica_context().app_name]
    return {name: ({str(getattr(k, "value", k)): n for k, n in d.replica_states.items()},
                   str(getattr(d.status, "value", d.status)))
            for name, d in app.deployments.items()}
