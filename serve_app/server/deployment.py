"""The model server as its own Serve deployment (placement `separate`: the ingress runs apart)."""

from __future__ import annotations

from typing import Any, AsyncIterator

from serve_app.api.protocol import EngineStats

from serve_app.config import AppConfig
from serve_app.server.factory import build_model_server


class ModelServerDeployment:
    async def __init__(self, config: AppConfig):
        self._server = build_model_server(config)
        await self._server.start()

    async def generate(self, request: Any) -> AsyncIterator[Any]:
        async for item in self._server.generate(request):
            yield item

    def engine_stats(self) -> EngineStats:
        return self._server.engine_stats()

    async def check_health(self) -> None:
        await self._server.check_health()

    def record_autoscaling_stats(self) -> dict[str, float]:
        return self._server.autoscaling_stats()

    def __del__(self):
        server = getattr(self, "_server", None)
        if server is not None:
            server.shutdown()
