"""Meaning of one OpenAI streaming chunk (pure, no I/O).

Works for /v1/completions (`choices[].text`) and /v1/chat/completions
(`choices[].delta.content`, plus `delta.reasoning_content`, which is generated
text too). A chunk "bears text" when it carries at least one generated
character; role-only and usage-only chunks do not. The usage chunk
(`stream_options.include_usage`) may carry the serve_app extension
`"timings"`: a dict of per-stage milliseconds, at top level or in `usage`.
"""

import json
from dataclasses import dataclass

DONE_SENTINEL = "[DONE]"


@dataclass(frozen=True)
class ChunkInfo:
    text: str = ""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    timings_ms: dict[str, float] | None = None
    finish_reason: str | None = None
    error: str | None = None
    is_done: bool = False


def _choice_text(choice: dict) -> str:
    text = choice.get("text")
    if isinstance(text, str):
        return text
    delta = choice.get("delta") or {}
    parts = [delta.get("content"), delta.get("reasoning_content"), delta.get("reasoning")]
    return "".join(part for part in parts if isinstance(part, str))


def _timings(payload: dict, usage: dict) -> dict[str, float] | None:
    raw = payload.get("timings")
    if raw is None:
        raw = usage.get("timings")
    if not isinstance(raw, dict):
        return None
    return {str(k): float(v) for k, v in raw.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def parse_chunk(data: str) -> ChunkInfo:
    """Interpret the data of one SSE event."""
    stripped = data.strip()
    if stripped == DONE_SENTINEL:
        return ChunkInfo(is_done=True)
    try:
        payload = json.loads(stripped)
    except json.JSONDecodeError:
        return ChunkInfo(error=f"unparseable chunk: {stripped[:200]!r}")
    if not isinstance(payload, dict):
        return ChunkInfo(error=f"unexpected chunk: {stripped[:200]!r}")
    if "error" in payload:
        error = payload["error"]
        message = error.get("message", error) if isinstance(error, dict) else error
        return ChunkInfo(error=str(message)[:500])
    choices = payload.get("choices") or []
    text = "".join(_choice_text(c) for c in choices if isinstance(c, dict))
    finish_reason = next(
        (c.get("finish_reason") for c in choices if isinstance(c, dict) and c.get("finish_reason")), None
    )
    usage = payload.get("usage") or {}
    return ChunkInfo(
        text=text,
        prompt_tokens=usage.get("prompt_tokens"),
        completion_tokens=usage.get("completion_tokens"),
        timings_ms=_timings(payload, usage),
        finish_reason=finish_reason,
    )
