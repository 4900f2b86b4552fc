"""A tiny fake of serve_app's OpenAI API for browser tests of the playground page.

It serves the real page (`playground_html()`) at `/` and `/playground`, lists models, and streams
scripted chat answers as SSE exactly as serve_app frames them, including the final usage chunk with the
`timings` extension. Every event is written in two pieces with a pause between them, splitting JSON and
multi-byte UTF-8 characters across network reads, so the page's SSE parsing is exercised for real.

What the reply does is chosen by the last user message:
  contains "reject" -> 400 with an OpenAI error body, before any byte of stream;
  contains "fail"   -> a few tokens, then an error event `data: {"error": {...}}`, then [DONE];
  contains "long"   -> a long answer (about 2000 tokens, `long_token_delay_s` apart) to press Stop in;
  otherwise         -> the first entry of `replies` whose key is in the message, else `default_reply`.
The server runs its own event loop in a thread, so synchronous Playwright tests can drive it.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from serve_app.playground import playground_html

DEFAULT_REPLY = "The capital of France is Paris."
LONG_STORY = (
    "Once upon a time, in the mountains above a quiet village, there lived a dragon named Ember. "
    "Her scales shone like copper in the evening light, and every winter she warmed the valley with "
    "her slow, smoky breath. The villagers left bread and honey at the mouth of her cave, and in "
    "return she kept the wolves away and the snow from the roofs. One spring a young shepherd climbed "
    "the path alone, carrying a question nobody in the village dared to ask."
)


@dataclass
class RecordedRequest:
    path: str
    authorization: str | None
    body: dict[str, Any] | None


@dataclass
class FakeOpenAIServer:
    models: tuple[str, ...] = ("fake-model-a", "fake-model-b")
    replies: dict[str, str] = field(default_factory=dict)
    default_reply: str = DEFAULT_REPLY
    token_delay_s: float = 0.01
    long_token_delay_s: float = 0.05
    # Time before the first token, as a model's prefill would take.
    first_token_delay_s: float = 0.05
    # When set, every API call needs `Authorization: Bearer <api_key>`.
    api_key: str | None = None
    # When False the usage chunk carries no `timings` object (a server without the extension).
    send_timings: bool = True

    def __post_init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.num_active_streams = 0
        self.num_disconnects = 0
        self.disconnected = threading.Event()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.url = ""

    # ---- lifecycle --------------------------------------------------------------------------------
    def start(self) -> "FakeOpenAIServer":
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._serve(sock))
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="fake-openai", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake OpenAI server did not start")
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._loop = None

    def __enter__(self) -> "FakeOpenAIServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.num_disconnects = 0
        self.disconnected.clear()

    def chat_requests(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path == "/v1/chat/completions"]

    async def _serve(self, sock: socket.socket) -> None:
        app = web.Application()
        app.router.add_get("/", self._page)
        app.router.add_get("/playground", self._page)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, handler_cancellation=True)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()

    # ---- handlers ---------------------------------------------------------------------------------
    def _record(self, request: web.Request, body: dict[str, Any] | None) -> None:
        with self._lock:
            self.requests.append(RecordedRequest(request.path, request.headers.get("Authorization"), body))

    def _auth_error(self, request: web.Request) -> web.Response | None:
        if self.api_key is None or request.headers.get("Authorization") == f"Bearer {self.api_key}":
            return None
        return _error_response(401, "Invalid or missing API key.", "authentication_error", "invalid_api_key")

    async def _page(self, request: web.Request) -> web.Response:
        return web.Response(text=playground_html(), content_type="text/html")

    async def _models(self, request: web.Request) -> web.Response:
        self._record(request, None)
        if (error := self._auth_error(request)) is not None:
            return error
        data = [{"id": m, "object": "model", "created": 1700000000, "owned_by": "serve_app"} for m in self.models]
        return web.json_response({"object": "list", "data": data})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self._record(request, body)
        if (error := self._auth_error(request)) is not None:
            return error
        prompt = next((m["content"] for m in reversed(body["messages"]) if m["role"] == "user"), "")
        if "reject" in prompt:
            return _error_response(400, "max_tokens is too large for this model.", "invalid_request_error")
        if body.get("model") not in self.models:
            return _error_response(404, f"The model `{body.get('model')}` does not exist.", "not_found_error")

        pieces, delay_s = self._script(prompt, body.get("max_tokens"))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        with self._lock:
            self.num_active_streams += 1
        start = time.perf_counter()
        try:
            await self._stream(response, body["model"], prompt, pieces, delay_s, start)
        except (ConnectionError, asyncio.CancelledError):
            with self._lock:
                self.num_disconnects += 1
            self.disconnected.set()
            raise
        finally:
            with self._lock:
                self.num_active_streams -= 1
        return response

    def _script(self, prompt: str, max_tokens: int | None) -> tuple[list[str], float]:
        if "long" in prompt:
            return _split_tokens(" ".join([LONG_STORY] * 20)), self.long_token_delay_s
        text = next((reply for key, reply in self.replies.items() if key in prompt), self.default_reply)
        if "fail" in prompt:
            text = "Let me think about"
        pieces = _split_tokens(text)
        if max_tokens:
            pieces = pieces[:max_tokens]
        return pieces, self.token_delay_s

    async def _stream(
        self, response: web.StreamResponse, model: str, prompt: str, pieces: list[str], delay_s: float, start: float
    ) -> None:
        base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()), "model": model}

        async def send(payload: dict[str, Any] | str) -> None:
            data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
            raw = f"data: {data}\n\n".encode()
            # Two writes with a pause: the page must join events (and UTF-8 characters) across reads.
            await response.write(raw[: len(raw) // 2])
            await asyncio.sleep(0.002)
            await response.write(raw[len(raw) // 2 :])

        await send({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})
        await asyncio.sleep(self.first_token_delay_s)
        first_token_s = time.perf_counter()
        for i, piece in enumerate(pieces):
            if i:
                await asyncio.sleep(delay_s)
            await send({**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
        if "fail" in prompt:
            await send({"error": {"message": "The engine stopped this request: out of KV cache.",
                                  "type": "internal_error", "param": None, "code": 500}})
            await send("[DONE]")
            return
        await send({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        end_s = time.perf_counter()
        usage_chunk: dict[str, Any] = {
            **base,
            "choices": [],
            "usage": {"prompt_tokens": 9 + len(prompt) // 4, "completion_tokens": len(pieces),
                      "total_tokens": 9 + len(prompt) // 4 + len(pieces)},
        }
        if self.send_timings:
            usage_chunk["timings"] = {
                "ingress_ms": 0.42, "tokenize_ms": 1.31, "queue_ms": 0.18,
                "prefill_ms": round((first_token_s - start) * 1000, 2),
                "decode_ms": round((end_s - first_token_s) * 1000, 2),
                "stream_ms": round((end_s - start) * 1000 + 0.6, 2),
            }
        await send(usage_chunk)
        await send("[DONE]")


def _split_tokens(text: str) -> list[str]:
    """Word-ish pieces (a word with its leading space), like a tokenizer's detokenized deltas."""
    return re.findall(r"\s*\S+", text) or [text]


def _error_response(status: int, message: str, error_type: str, code: str | int | None = None) -> web.Response:
    body = {"error": {"message": message, "type": error_type, "param": None, "code": code if code is not None else status}}
    return web.json_response(body, status=status)


if __name__ == "__main__":  # a manual look at the page: python -m tests.browser.fake_openai
    with FakeOpenAIServer(token_delay_s=0.08) as server:
        print(f"playground on {server.url}/playground (Ctrl+C to stop)")
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
