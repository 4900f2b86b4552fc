"""The streaming-response component: vLLM's OpenAI output, re-framed for the wire serve_app promises.

Pure functions on strings and dicts (no vLLM, no Ray): compact JSON without null fields, SSE or msgpack
framing, OpenAI-style error bodies with string codes, and serve_app's per-stage `timings` in the final
usage chunk.
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable

import msgpack

from serve_app.api.framing import WireFormat, compact_json, done_marker, encode
from serve_app.api.protocol import Frame  # noqa: F401 - the model server's frames

DATA_PREFIX = "data: "


def drop_nulls(value: Any) -> Any:
    """JSON value without null object fields (lists keep their items)."""
    if isinstance(value, dict):
        return {k: drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_nulls(v) for v in value]
    return value


def parse_sse_event(event: str) -> tuple[str | None, Any]:
    """(event name or None, decoded data; None for [DONE]) of one `event: ...\\ndata: ...\\n\\n` string."""
    name = None
    data_lines = []
    for line in event.split("\n"):
        if line.startswith("event: "):
            name = line[len("event: "):]
        elif line.startswith(DATA_PREFIX):
            data_lines.append(line[len(DATA_PREFIX):])
    data = "\n".join(data_lines)
    if data == "[DONE]" or not data:
        return name, None
    return name, json.loads(data)


def has_output(payload: dict[str, Any]) -> bool:
    """True when a chunk carries generated text, a tool-call delta or an output delta (Responses API)."""
    for choice in payload.get("choices") or ():
        delta = choice.get("delta")
        if delta is not None:
            if delta.get("content") or delta.get("tool_calls") or delta.get("reasoning"):
                return True
        elif choice.get("text"):
            return True
    return bool(payload.get("delta"))


STATUS_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "invalid_request_error", 413: "invalid_request_error", 422: "invalid_request_error",
                429: "rate_limit_error"}
CONTEXT_LENGTH_HINTS = ("maximum context length", "max_model_len", "context length", "is too long")


def openai_error(error: dict[str, Any], default_status: int = 500) -> tuple[int, dict[str, Any]]:
    """(HTTP status, `{"error": {message, type, param, code}}`) from vLLM's error (whose `code` is the status)."""
    status = error.get("code") if isinstance(error.get("code"), int) else default_status
    message = str(error.get("message") or "The request failed.")
    if status == 404 and error.get("param") == "model":
        code = "model_not_found"
    elif status == 400 and any(hint in message for hint in CONTEXT_LENGTH_HINTS):
        code = "context_length_exceeded"
    elif isinstance(error.get("code"), str):
        code = error["code"]
    else:
        code = "invalid_value" if status < 500 else "internal_error"
    kind = STATUS_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    return status, {"error": {"message": message, "type": kind, "param": error.get("param"), "code": code}}


# A null object field in compact JSON text. Inside a JSON string every `"` is escaped (`\\"`), so `,"` or `{"`
# followed by a key of neither quotes nor backslashes and `":null` only ever matches a real field.
_NULL_FIELD = re.compile(r',"[^"\\]*":null(?=[,}])|(?<=\{)"[^"\\]*":null(?:,(?=")|(?=\}))')


def without_null_fields(event: str) -> str | None:
    """A one-line SSE event of vLLM's compact JSON (pydantic's, `{"id":"...` first) with its null object fields cut
    as text: the bytes `drop_nulls` + re-serializing would give, without re-serializing. None where that cannot be
    sure (not such an event, or a `":null` left: a string that holds one, a key with escapes)."""
    if not event.startswith('data: {"id":"') or not event.endswith("}\n\n") or "\n" in event[:-2]:
        return None
    data = event
    while '":null' in data:  # adjacent null fields: a pass can leave one whose neighbour it took
        cut = _NULL_FIELD.sub("", data)
        if cut == data:
            return None
        data = cut
    return data


class StreamReframer:
    """Re-frames one vLLM SSE stream: compact, null-free events in SSE or msgpack; timings in the usage chunk.
    Over SSE a plain chunk is forwarded as vLLM framed it, less its null fields (`without_null_fields`)."""

    def __init__(self, wire: WireFormat):
        self.wire = wire

    def reframe(self, event: str, timings: Callable[[], dict[str, float]] | None = None
                ) -> tuple[str | bytes, dict[str, Any] | None, bool]:
        """(wire bytes, error or None, carries output) of one vLLM event; `timings()` fills the usage chunk."""
        name, payload = parse_sse_event(event)
        if payload is None:
            return done_marker(self.wire), None, False
        error = None
        if isinstance(payload, dict) and "error" in payload and isinstance(payload["error"], dict):
            _, body = openai_error(payload["error"])
            payload, error = body, body["error"]
        elif (self.wire == "sse" and name is None and not payload.get("usage")
              and (forwarded := without_null_fields(event)) is not None):
            # A plain chunk goes out as vLLM framed it, less its nulls (parsed only to see whether it has output).
            return forwarded, None, has_output(payload)
        else:
            payload = drop_nulls(payload)
            if timings is not None and payload.get("usage") and not payload.get("choices"):
                payload["timings"] = {k: round(v, 2) for k, v in timings().items()}
        output = isinstance(payload, dict) and has_output(payload)
        if name is not None:  # Responses API events keep their SSE event names
            data = f"event: {name}\n{DATA_PREFIX}{compact_json(payload)}\n\n" if self.wire == "sse" else msgpack.packb(payload)
        else:
            data = encode(payload, self.wire)
        return data, error, output
