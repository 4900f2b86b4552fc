"""A small Python client for serve_app's binary stream (`Accept: application/x-msgpack`).

The msgpack stream carries the same chunk objects as SSE, as a sequence of msgpack maps ending with
`{"done": true}`: no `data: ` prefixes, no JSON escaping, and token text as raw UTF-8. Any OpenAI
client keeps working over SSE; this one is for callers that want the fewest bytes and parse work.

    from serve_app.client import stream_text
    for piece in stream_text("http://127.0.0.1:8000", {"model": "SmolLM2-135M-Instruct",
                                                       "messages": [{"role": "user", "content": "Hi"}]}):
        print(piece, end="", flush=True)
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any, Iterator

import msgpack

from serve_app.api.framing import MSGPACK_CONTENT_TYPE


class StreamError(RuntimeError):
    """The server answered with an error, before the stream or as its last event."""

    def __init__(self, error: dict[str, Any], status: int | None = None):
        super().__init__(error.get("message", "stream failed"))
        self.error = error
        self.status = status


def _endpoint(body: dict[str, Any]) -> str:
    return "chat/completions" if "messages" in body else "completions"


def stream_chunks(base_url: str, body: dict[str, Any], *, api_key: str | None = None,
                  timeout_s: float = 600.0) -> Iterator[dict[str, Any]]:
    """Yield the response's chunk objects (OpenAI chunk shape) as they arrive."""
    url = f"{base_url.rstrip('/').removesuffix('/v1')}/v1/{_endpoint(body)}"
    headers = {"Content-Type": "application/json", "Accept": MSGPACK_CONTENT_TYPE}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(url, data=json.dumps({**body, "stream": True}).encode(), headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as exc:
        raise StreamError(json.loads(exc.read() or b"{}").get("error", {"message": str(exc)}), exc.code) from None
    unpacker = msgpack.Unpacker(raw=False)
    with response:
        while data := response.read1(65536):
            unpacker.feed(data)
            for obj in unpacker:
                if obj.get("done"):
                    return
                if "error" in obj:
                    raise StreamError(obj["error"], response.status)
                yield obj
    raise StreamError({"message": "stream ended without its done marker"}, response.status)


def stream_text(base_url: str, body: dict[str, Any], **kwargs: Any) -> Iterator[str]:
    """Yield only the generated text pieces."""
    for chunk in stream_chunks(base_url, body, **kwargs):
        for choice in chunk.get("choices", []):
            piece = choice.get("delta", {}).get("content") if "delta" in choice else choice.get("text")
            if piece:
                yield piece
