"""OpenAI objects shaped like vLLM's (chat.completion.chunk, text_completion, whole responses), with synthetic
text: token i of a request is a word from a fixed list, so text and token counts agree. Pure."""

from __future__ import annotations

from typing import Any

WORDS = ("the", "model", "serves", "tokens", "from", "a", "simulated", "engine", "at", "profile", "speed", "and",
         "every", "step", "adds", "one")


def token_text(index: int) -> str:
    """The text of output token `index` (0-based): a word and a space."""
    return WORDS[index % len(WORDS)] + " "


def token_id(index: int) -> int:
    return 1000 + index % len(WORDS)


def tokens_text(start: int, stop: int) -> str:
    return "".join(token_text(i) for i in range(start, stop))


def usage(num_prompt_tokens: int, num_output_tokens: int, num_cached_tokens: int = 0) -> dict[str, Any]:
    body: dict[str, Any] = {"prompt_tokens": num_prompt_tokens, "total_tokens": num_prompt_tokens + num_output_tokens,
                            "completion_tokens": num_output_tokens}
    if num_cached_tokens:
        body["prompt_tokens_details"] = {"cached_tokens": num_cached_tokens}
    return body


class ChunkMaker:
    """The objects of one request's answer (`endpoint`: "chat" or "completion")."""

    def __init__(self, endpoint: str, request_id: str, model: str, created_s: int):
        self.is_chat = endpoint == "chat"
        prefix = "chatcmpl" if self.is_chat else "cmpl"
        self.head = {"id": f"{prefix}-{request_id}",
                     "object": "chat.completion.chunk" if self.is_chat else "text_completion",
                     "created": created_s, "model": model}

    def role_chunk(self) -> dict[str, Any]:
        """vLLM's first chat chunk: the assistant role, empty content."""
        return {**self.head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}

    def token_chunk(self, text: str, finish_reason: str | None) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0}
        if self.is_chat:
            choice["delta"] = {"content": text}
        else:
            choice["text"] = text
        if finish_reason is not None:
            choice["finish_reason"] = finish_reason
            if not self.is_chat:
                choice["stop_reason"] = None
        return {**self.head, "choices": [choice]}

    def usage_chunk(self, usage_body: dict[str, Any]) -> dict[str, Any]:
        return {**self.head, "choices": [], "usage": usage_body}

    def whole(self, text: str, finish_reason: str, usage_body: dict[str, Any]) -> dict[str, Any]:
        if self.is_chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}
            kind = "chat.completion"
        else:
            choice = {"index": 0, "text": text, "finish_reason": finish_reason}
            kind = "text_completion"
        return {**self.head, "object": kind, "choices": [choice], "usage": usage_body}
