"""A scripted OpenAI-compatible SSE server on 127.0.0.1 for client tests.

Runs in its own process (spawned), so the client under test shares neither
its event loop nor its GIL and the scripted delays are what the client sees.
GET /_test/state returns the request count, the request bodies and the tenant headers received.
"""

import asyncio
import contextlib
import json
import multiprocessing
from dataclasses import asdict, dataclass, field

from aiohttp import web


@dataclass
class FakeScript:
    ttft_s: float = 0.2
    gap_s: float = 0.02
    num_tokens: int = 8
    # "normal": one write per event; "split": each event in 3-byte writes;
    # "merged": all text events after the first in one write.
    framing: str = "normal"
    keepalive_comments: bool = False
    tokens_per_event: int = 1
    # The first request sleeps this long before answering (a stall).
    first_request_stall_s: float = 0.0
    # Every n-th request (1-based) answers with HTTP 503; 0 = never.
    fail_every_n: int = 0
    timings_ms: dict | None = None
    include_usage: bool = True
    # Per tenant, by "header=value" (e.g. "x-tenant-id=B", "authorization=Bearer sk-b"): overrides of
    # "ttft_s", or "status" (answered with that HTTP status, e.g. 429, and a Retry-After).
    per_tenant: dict = field(default_factory=dict)
    num_requests_seen: int = 0
    bodies: list = field(default_factory=list)
    # (authorization, x-tenant-id, x-priority) of each request.
    tenant_headers: list = field(default_factory=list)


def _event(payload) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return f"data: {data}\n\n".encode()


async def _write(response: web.StreamResponse, data: bytes, framing: str) -> None:
    if framing == "split":
        for start in range(0, len(data), 3):
            await response.write(data[start : start + 3])
            await asyncio.sleep(0)
    else:
        await response.write(data)


def make_app(script: FakeScript) -> web.Application:
    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fake-model", "object": "model"}]})

    async def completions(request: web.Request) -> web.StreamResponse:
        script.num_requests_seen += 1
        number = script.num_requests_seen
        body = await request.json()
        script.bodies.append(body)
        seen = [request.headers.get(name) for name in ("authorization", "x-tenant-id", "x-priority")]
        script.tenant_headers.append(seen)
        overrides = next((o for key, o in script.per_tenant.items()
                          if request.headers.get(key.partition("=")[0]) == key.partition("=")[2]), {})
        if "status" in overrides:
            return web.json_response({"error": {"message": "rate limited", "code": overrides["status"]}},
                                     status=overrides["status"], headers={"Retry-After": "1"})
        if script.fail_every_n and number % script.fail_every_n == 0:
            return web.json_response({"error": {"message": "overloaded", "code": 503}}, status=503)
        if number == 1 and script.first_request_stall_s:
            await asyncio.sleep(script.first_request_stall_s)
        is_chat = request.path.endswith("/chat/completions")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        if is_chat:
            await response.write(_event({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}))
        if script.keepalive_comments:
            await response.write(b": keep-alive\n\n")
        await asyncio.sleep(overrides.get("ttft_s", script.ttft_s))
        num_events = script.num_tokens // script.tokens_per_event
        pending = b""
        for i in range(num_events):
            text = "".join(f" tok{i * script.tokens_per_event + j}" for j in range(script.tokens_per_event))
            choice = {"index": 0, "delta": {"content": text}} if is_chat else {"index": 0, "text": text}
            if i == num_events - 1:
                choice["finish_reason"] = "length"
            event = _event({"choices": [choice]})
            if script.framing == "merged" and i > 0:
                pending += event
                if script.keepalive_comments:
                    pending += b":\n\n"
                continue
            await _write(response, event, script.framing)
            if i < num_events - 1:
                await asyncio.sleep(script.gap_s)
        tail = pending
        if script.include_usage:
            usage = {"prompt_tokens": 5, "completion_tokens": script.num_tokens, "total_tokens": 5 + script.num_tokens}
            final = {"choices": [], "usage": usage}
            if script.timings_ms is not None:
                final["timings"] = script.timings_ms
            tail += _event(final)
        tail += _event("[DONE]")
        await _write(response, tail, script.framing)
        await response.write_eof()
        return response

    async def state(request: web.Request) -> web.Response:
        return web.json_response({"num_requests_seen": script.num_requests_seen, "bodies": script.bodies,
                                  "tenant_headers": script.tenant_headers})

    app = web.Application()
    app.router.add_get("/_test/state", state)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/chat/completions", completions)
    return app


def _serve(script_fields: dict, port_queue) -> None:
    async def main() -> None:
        runner = web.AppRunner(make_app(FakeScript(**script_fields)))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port_queue.put(site._server.sockets[0].getsockname()[1])
        # Bounded: the test stops the process long before this.
        await asyncio.sleep(600)
        await runner.cleanup()

    asyncio.run(main())


@contextlib.contextmanager
def running_fake_server(script: FakeScript):
    """Yield the base URL ("http://127.0.0.1:PORT") of a server process; stop it on exit."""
    context = multiprocessing.get_context("spawn")
    port_queue = context.Queue()
    process = context.Process(target=_serve, args=(asdict(script), port_queue), daemon=True)
    process.start()
    try:
        port = port_queue.get(timeout=20)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.join(timeout=10)
        if process.is_alive():
            process.kill()
            process.join(timeout=5)


def server_state(base_url: str) -> dict:
    """Requests seen and bodies received by the fake server."""
    import urllib.request

    with urllib.request.urlopen(f"{base_url}/_test/state", timeout=10) as response:
        return json.loads(response.read())
