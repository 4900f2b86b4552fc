"""A model backend for unit tests of the real ingress: it answers from a script of `Frame`s / `WholeResponse`s,
and validates bodies the way the model server does (a bad body: the model server's 400 before the first byte)."""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator

from serve_app.api.errors import ServeAppError
from serve_app.api.protocol import EngineStats, Frame, RequestOutcome, ServerRequest, WholeResponse


class FakeBackend:
    def __init__(self, items: list[Any] | None = None, *, validate: bool = True, delay_s: float = 0.0):
        self.items = items if items is not None else [WholeResponse(200, {"object": "chat.completion", "choices": []})]
        self.validate = validate
        self.delay_s = delay_s  # before each item after the first
        self.requests: list[ServerRequest] = []
        self.num_closed = 0

    async def generate_items(self, request: ServerRequest) -> AsyncIterator[Any]:
        self.requests.append(request)
        if self.validate:
            from serve_app.server.openai_frontend import ENDPOINTS

            try:
                ENDPOINTS[request.endpoint].validate(request)
            except ServeAppError as error:
                yield WholeResponse(error.status_code, error.to_body())
                return
        for index, item in enumerate(self.items):
            if index and self.delay_s:
                await asyncio.sleep(self.delay_s)
            if isinstance(item, BaseException):
                raise item
            yield item

    def generate(self, request: ServerRequest, adapter: str | None = None) -> AsyncIterator[Any]:
        return self.generate_items(request)

    async def engine_stats(self) -> EngineStats:
        return EngineStats(num_running=1)

    async def close_stream(self, stream: Any) -> None:
        self.num_closed += 1
        await stream.aclose()


def served(body: dict[str, Any], **kwargs: Any) -> WholeResponse:
    """A model server's 200 answer: the body and its outcome (counts from its usage), as a real server attaches it."""
    return WholeResponse(200, body, outcome=RequestOutcome.of_usage(body.get("usage"), body.get("timings") or {}),
                         **kwargs)


def sse(payload: str, **kwargs: Any) -> Frame:
    return Frame(f"data: {payload}\n\n", **kwargs)


DONE = Frame("data: [DONE]\n\n", is_final=True, outcome=RequestOutcome(None, 0, {"ttft_ms": 5.0}))
