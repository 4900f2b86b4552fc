"""aiohttp streaming client for OpenAI-compatible /v1/completions and /v1/chat/completions.

Each network read is timestamped when it arrives; all events parsed from that
read share the timestamp, which is when the client could first have shown
their text.
"""

import asyncio
from collections.abc import Callable

import aiohttp

from loadtest.openai_stream import parse_chunk
from loadtest.records import RequestRecord
from loadtest.sse import SSEParser

_MAX_ERROR_BODY_CHARS = 2000


def build_body(
    *,
    endpoint: str,
    model: str,
    messages: list[dict] | None,
    prompt: str | None,
    max_tokens: int,
    ignore_eos: bool,
    temperature: float | None,
    extra_body: dict,
) -> dict:
    """The JSON body of one streaming request (extra_body keys win)."""
    body: dict = {"model": model}
    if endpoint == "chat":
        body["messages"] = messages
    else:
        body["prompt"] = prompt
    body["max_tokens"] = max_tokens
    body["stream"] = True
    body["stream_options"] = {"include_usage": True}
    if temperature is not None:
        body["temperature"] = temperature
    if ignore_eos:
        # Not in the OpenAI spec; vLLM and serve_app accept it as an extra field.
        body["ignore_eos"] = True
    body.update(extra_body)
    return body


async def stream_request(
    session: aiohttp.ClientSession,
    url: str,
    body: dict,
    record: RequestRecord,
    clock: Callable[[], float],
    headers: dict[str, str],
    timeout_s: float,
) -> str:
    """Send one streaming request, filling `record`; return the generated text.

    Never raises for request failures: they end up in record.error_kind
    ("http_<code>", "stream_error", "incomplete_stream", "timeout",
    "connection_error") and record.error.
    """
    parser = SSEParser()
    pieces: list[str] = []
    saw_done = False
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    record.send_s = clock()
    try:
        async with session.post(url, json=body, headers=headers, timeout=timeout) as response:
            record.status_code = response.status
            if response.status != 200:
                text = await response.text(errors="replace")
                record.error_kind = f"http_{response.status}"
                record.retry_after_s = _retry_after_s(response.headers.get("Retry-After"))
                record.error = text[:_MAX_ERROR_BODY_CHARS]
                record.done_s = clock()
                return ""
            async for data in response.content.iter_any():
                now = clock()
                for event in parser.feed(data):
                    saw_done |= _apply_event(event.data, now, record, pieces)
            now = clock()
            for event in parser.finish():
                saw_done |= _apply_event(event.data, now, record, pieces)
            record.num_keepalive_comments = parser.num_comments
            record.done_s = clock()
    except asyncio.TimeoutError:
        record.error_kind, record.error = "timeout", f"no complete response within {timeout_s} s"
        record.done_s = clock()
    except aiohttp.ClientError as exc:
        record.error_kind, record.error = "connection_error", f"{type(exc).__name__}: {exc}"[:500]
        record.done_s = clock()
    else:
        if record.error_kind is None and not saw_done and record.finish_reason is None:
            record.error_kind, record.error = "incomplete_stream", "stream ended without [DONE] or finish_reason"
    return "".join(pieces)


def _retry_after_s(value: str | None) -> float | None:
    """Retry-After in seconds (delta-seconds form; an HTTP date is not parsed)."""
    try:
        return None if value is None else float(value)
    except ValueError:
        return None


def _apply_event(data: str, now: float, record: RequestRecord, pieces: list[str]) -> bool:
    """Fold one event into the record; True when it was the [DONE] sentinel."""
    chunk = parse_chunk(data)
    if chunk.is_done:
        return True
    if chunk.error is not None:
        if record.error_kind is None:
            record.error_kind, record.error = "stream_error", chunk.error
        return False
    if chunk.text:
        if record.first_text_s is None:
            record.first_text_s = now
        record.event_times_s.append(now)
        record.event_num_chars.append(len(chunk.text))
        pieces.append(chunk.text)
    if chunk.completion_tokens is not None:
        record.output_tokens_server = chunk.completion_tokens
    if chunk.prompt_tokens is not None:
        record.prompt_tokens = chunk.prompt_tokens
    if chunk.timings_ms is not None:
        record.timings_ms = chunk.timings_ms
    if chunk.finish_reason is not None:
        record.finish_reason = chunk.finish_reason
    return False


async def fetch_first_model(session: aiohttp.ClientSession, api_base: str, headers: dict[str, str]) -> str:
    """The first model id served at GET {api_base}/models."""
    async with session.get(f"{api_base}/models", headers=headers, timeout=aiohttp.ClientTimeout(total=30)) as response:
        response.raise_for_status()
        payload = await response.json()
    models = payload.get("data") or []
    if not models:
        raise RuntimeError(f"{api_base}/models lists no model; pass --model")
    return models[0]["id"]
