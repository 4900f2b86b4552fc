"""Response framing: OpenAI chunk/response objects and their wire encodings (SSE, msgpack).

Compact on purpose: no null fields, no whitespace in JSON. `data: {json}\\n\\n` events end with
`data: [DONE]\\n\\n`. The msgpack stream carries the same objects as a sequence of msgpack maps and
ends with the map `{"done": true}`.
"""

from __future__ import annotations

import gzip
import json
from typing import Any

import msgpack

from serve_app.api.protocol import WireFormat

SSE_DONE = "data: [DONE]\n\n"
SSE_CONTENT_TYPE = "text/event-stream"
MSGPACK_CONTENT_TYPE = "application/x-msgpack"
MSGPACK_DONE = msgpack.packb({"done": True})


def compact_json(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def sse_event(obj: Any) -> str:
    return f"data: {compact_json(obj)}\n\n"


def encode(obj: dict[str, Any], wire: WireFormat) -> str | bytes:
    return sse_event(obj) if wire == "sse" else msgpack.packb(obj)


def done_marker(wire: WireFormat) -> str | bytes:
    return SSE_DONE if wire == "sse" else MSGPACK_DONE


def final_error_events(error: dict[str, Any], wire: WireFormat) -> str | bytes:
    """The end of a stream that fails after it started: an `{"error": ...}` event, then the done marker."""
    return encode({"error": error}, wire) + done_marker(wire)


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
