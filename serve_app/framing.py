"""Response framing: OpenAI chunk/response objects and their wire encodings (SSE, msgpack).

Compact on purpose: no null fields, no whitespace in JSON. `data: {json}\\n\\n` events end with
`data: [DONE]\\n\\n`. The msgpack stream carries the same objects as a sequence of msgpack maps and
ends with the map `{"done": true}`.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from typing import Any, Literal

import msgpack

SSE_DONE = "data: [DONE]\n\n"
SSE_CONTENT_TYPE = "text/event-stream"
MSGPACK_CONTENT_TYPE = "application/x-msgpack"
MSGPACK_DONE = msgpack.packb({"done": True})

WireFormat = Literal["sse", "msgpack"]


def compact_json(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def sse_event(obj: Any) -> str:
    return f"data: {compact_json(obj)}\n\n"


def usage_dict(num_prompt_tokens: int, num_completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": num_prompt_tokens,
        "completion_tokens": num_completion_tokens,
        "total_tokens": num_prompt_tokens + num_completion_tokens,
    }


@dataclass(slots=True)
class ChunkBuilder:
    """Builds the OpenAI chunk objects of one streamed response."""

    request_id: str
    model: str
    created_s: int
    endpoint: Literal["chat", "completion"]

    def _base(self) -> dict[str, Any]:
        if self.endpoint == "chat":
            return {"id": self.request_id, "object": "chat.completion.chunk", "created": self.created_s, "model": self.model}
        return {"id": self.request_id, "object": "text_completion", "created": self.created_s, "model": self.model}

    def text(self, text: str, *, first: bool = False, finish_reason: str | None = None) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0}
        if self.endpoint == "chat":
            delta: dict[str, Any] = {"content": text} if text or not finish_reason else {}
            if first:
                delta["role"] = "assistant"
            choice["delta"] = delta
        else:
            choice["text"] = text
        if finish_reason:
            choice["finish_reason"] = finish_reason
        return {**self._base(), "choices": [choice]}

    def usage(self, num_prompt_tokens: int, num_completion_tokens: int, timings_ms: dict[str, float] | None) -> dict[str, Any]:
        chunk = {**self._base(), "choices": [], "usage": usage_dict(num_prompt_tokens, num_completion_tokens)}
        if timings_ms:
            chunk["timings"] = {k: round(v, 2) for k, v in timings_ms.items()}  # serve_app extension
        return chunk

    def error(self, message: str, type: str = "server_error", code: str | None = None) -> dict[str, Any]:
        error: dict[str, Any] = {"message": message, "type": type}
        if code:
            error["code"] = code
        return {"error": error}

    def full_response(
        self,
        text: str,
        finish_reason: str,
        num_prompt_tokens: int,
        num_completion_tokens: int,
        timings_ms: dict[str, float] | None = None,
    ) -> dict[str, Any]:
        """The non-streaming response body."""
        if self.endpoint == "chat":
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}
            obj = "chat.completion"
        else:
            choice = {"index": 0, "text": text, "finish_reason": finish_reason}
            obj = "text_completion"
        body = {
            "id": self.request_id,
            "object": obj,
            "created": self.created_s,
            "model": self.model,
            "choices": [choice],
            "usage": usage_dict(num_prompt_tokens, num_completion_tokens),
        }
        if timings_ms:
            body["timings"] = {k: round(v, 2) for k, v in timings_ms.items()}
        return body


def encode(obj: dict[str, Any], wire: WireFormat) -> str | bytes:
    return sse_event(obj) if wire == "sse" else msgpack.packb(obj)


def done_marker(wire: WireFormat) -> str | bytes:
    return SSE_DONE if wire == "sse" else MSGPACK_DONE


def choose_wire_format(accept_header: str | None) -> WireFormat:
    """Content negotiation for streams: msgpack only when the client asks for it."""
    return "msgpack" if accept_header and MSGPACK_CONTENT_TYPE in accept_header else "sse"


GZIP_MIN_BYTES = 256


def maybe_gzip(body: bytes, accept_encoding: str | None) -> tuple[bytes, dict[str, str]]:
    """Gzip a whole (non-streamed) body when the client accepts it and it is worth it.

    Streams are never compressed: a compressor holds bytes back until its block fills, which would
    delay tokens. Level 1: on a busy CPU the fastest level keeps most of the gain.
    """
    if len(body) < GZIP_MIN_BYTES or not accept_encoding or "gzip" not in accept_encoding.lower():
        return body, {}
    return gzip.compress(body, compresslevel=1), {"Content-Encoding": "gzip", "Vary": "Accept-Encoding"}
