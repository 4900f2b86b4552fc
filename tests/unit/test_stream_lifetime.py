"""An admission slot is given back however a stream ends, including a stream whose body never started."""

from __future__ import annotations

import asyncio

import pytest
from starlette.requests import ClientDisconnect

from serve_app.ingress.stream_lifetime import Once, StreamWithCleanup


def _stream(events: list[str]) -> tuple[StreamWithCleanup, list[str]]:
    release = Once(lambda: events.append("released"))

    async def body():
        events.append("body started")
        try:
            yield "data: 1\n\n"
            yield "data: 2\n\n"
        finally:
            release()  # what the ingress's relay does at its end
            events.append("body finally")

    async def cleanup():
        release()
        events.append("cleanup")

    release.hand_over()
    return StreamWithCleanup(body(), cleanup, media_type="text/event-stream"), events


def _scope(spec_version: str) -> dict:
    return {"type": "http", "asgi": {"spec_version": spec_version}, "method": "POST", "path": "/"}


def test_a_stream_that_runs_to_its_end_releases_once():
    response, events = _stream([])
    sent = []

    async def send(message):
        sent.append(message)

    async def receive():
        await asyncio.sleep(60)

    asyncio.run(response(_scope("2.4"), receive, send))
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert events == ["body started", "released", "body finally", "cleanup"]


def test_a_client_gone_before_the_first_chunk_still_releases_the_slot():
    """ASGI < 2.4: Starlette listens for the disconnect beside the body; here it comes while the headers are being
    sent, so the body generator never starts and its own `finally` never runs."""
    response, events = _stream([])

    async def send(message):
        await asyncio.sleep(60)  # the headers never get out

    async def receive():
        return {"type": "http.disconnect"}

    asyncio.run(asyncio.wait_for(response(_scope("2.0"), receive, send), timeout=5))
    assert events == ["released", "cleanup"]  # the body never started, and the slot came back


def test_a_send_that_fails_still_releases_the_slot():
    response, events = _stream([])

    async def send(message):
        raise OSError("connection reset")

    async def receive():
        await asyncio.sleep(60)

    with pytest.raises(ClientDisconnect):
        asyncio.run(response(_scope("2.4"), receive, send))
    assert events == ["released", "cleanup"]


def test_a_cancelled_response_task_mid_stream_releases_once():
    response, events = _stream([])
    first_chunk = asyncio.Event()

    async def send(message):
        if message.get("body"):
            first_chunk.set()
            await asyncio.sleep(60)  # a client that stopped reading

    async def receive():
        await asyncio.sleep(60)

    async def main():
        task = asyncio.create_task(response(_scope("2.4"), receive, send))
        await first_chunk.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert events.count("released") == 1 and events[-1] == "cleanup" and "body finally" in events
