"""Where the ingress sends a request: a model server in its own process, or one behind a Ray handle.

Both give the same async iterator of `WholeResponse | Frame` (serve_app/api/protocol.py), so the
routes do not know which placement the config chose.
"""

from __future__ import annotations

import contextlib
from typing import Any, AsyncIterator, Protocol

from serve_app.api.protocol import EngineStats, ServerRequest


class ModelBackend(Protocol):
    def generate(self, request: ServerRequest, adapter: str | None = None) -> AsyncIterator[Any]: ...

    async def engine_stats(self) -> EngineStats: ...

    async def close_stream(self, stream: AsyncIterator[Any]) -> None: ...


class InProcessBackend:
    """Placement `with_model`: the model server lives in the ingress replica (no Ray hop per token)."""

    def __init__(self, server: Any):
        self.server = server

    def generate(self, request: ServerRequest, adapter: str | None = None) -> AsyncIterator[Any]:
        return self.server.generate(request)  # the server loads `adapter` (named in the body) on first use

    async def engine_stats(self) -> EngineStats:
        return self.server.engine_stats()

    async def close_stream(self, stream: AsyncIterator[Any]) -> None:
        with contextlib.suppress(Exception):
            await stream.aclose()  # runs the server's cleanup now: the engine aborts the request


class HandleBackend:
    """Placement `separate`: model server replicas behind a Ray Serve handle (one Ray hop per frame)."""

    def __init__(self, handle: Any):
        self._handle = handle
        self._stream_handle = handle.options(stream=True)

    def generate(self, request: ServerRequest, adapter: str | None = None) -> AsyncIterator[Any]:
        if adapter is None:
            return self._stream_handle.generate.remote(request)
        # Ray's router prefers replicas that report this adapter loaded (serve.multiplexed in the model server).
        return self._stream_handle.options(multiplexed_model_id=adapter).generate.remote(request)

    async def engine_stats(self) -> EngineStats:
        return await self._handle.engine_stats.remote()

    async def close_stream(self, stream: Any) -> None:
        stream.cancel()  # cancels the replica's generator: the engine aborts the request
