"""What holds an admission slot, and the guarantee that it is given back however a request ends.

A request's slot is released once: by the request itself when it ends before a stream starts, else by the stream.
A stream's body is an async generator whose `finally` releases, but an async generator that never started never
runs its `finally`: a client that goes away between the response's headers and its first body chunk (or a
transport error on the first send) would leak the slot and leave the engine generating. `StreamWithCleanup`
closes the body and runs the cleanup after the response, however it ended.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from fastapi.responses import StreamingResponse


class Once:
    """Calls `fn` once: at hand-over to a stream, the stream's end releases; otherwise the request's end does."""

    def __init__(self, fn: Callable[[], Any]):
        self._fn = fn
        self._done = False
        self._handed_over = False

    def hand_over(self) -> None:
        self._handed_over = True

    def unless_handed_over(self) -> None:
        if not self._handed_over:
            self()

    def __call__(self) -> None:
        if not self._done:
            self._done = True
            self._fn()


class StreamWithCleanup(StreamingResponse):
    """A streaming response that closes its body iterator and then awaits `cleanup` once it is over: after the
    last chunk, a client disconnect, a cancelled task or a failed send. `cleanup` must be idempotent (the body's
    own `finally` usually ran it already)."""

    def __init__(self, content, cleanup: Callable[[], Awaitable[None]], **kwargs):
        super().__init__(content, **kwargs)
        self._cleanup = cleanup

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            try:
                await self.body_iterator.aclose()  # runs the body's `finally` if it started and is suspended
            finally:
                await self._cleanup()
