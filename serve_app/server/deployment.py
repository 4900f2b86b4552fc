"""The model server as its own Serve deployment (placement `separate`: the ingress runs apart)."""

from __future__ import annotations

import time
from typing import AsyncIterator

from serve_app.api.protocol import EngineStats, ServerRequest
from serve_app.autoscaling.ingress_demand import IngressDemand
from serve_app.config import AppConfig
from serve_app.server.factory import build_model_server


class ModelServerDeployment:
    async def __init__(self, config: AppConfig):
        self._server = build_model_server(config)
        self._ingress_demand = IngressDemand()
        await self._server.start()

    async def generate(self, request: ServerRequest) -> AsyncIterator:
        if request.ingress_id is not None:
            self._ingress_demand.heard(request.ingress_id, request.ingress_demand, time.monotonic())
        async for item in self._server.generate(request):
            yield item

    def engine_stats(self) -> EngineStats:
        return self._server.engine_stats()

    async def check_health(self) -> None:
        await self._server.check_health()

    def record_autoscaling_stats(self) -> dict[str, float]:
        stats = self._server.autoscaling_stats()
        # The ingress replicas' gate queues and refusals for want of capacity: load this deployment must see.
        stats["num_waiting"] = stats.get("num_waiting", 0) + self._ingress_demand.total(time.monotonic())
        return stats

    def __del__(self):
        server = getattr(self, "_server", None)
        if server is not None:
            server.shutdown()
