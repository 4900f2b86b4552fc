"""Prompt token counts and prefix-block hashes for the simulated engine.

With the model's `tokenizer.json` (the `tokenizers` library, no transformers) prompts are counted as the real
engine counts them; chat messages are first rendered with the model's `chat_template.jinja` when it has one.
Without a tokenizer a token is taken as 4 characters. Block hashes are chained (block i hashes the whole
prefix up to its end), so equal hashes mean equal prefixes.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger("ray.serve")

CHARS_PER_TOKEN = 4


def block_hashes(token_ids: list[int], block_size_tokens: int) -> tuple[int, ...]:
    """Chained hash of every full block of `token_ids`."""
    hashes = []
    digest = hashlib.blake2b(digest_size=8)
    for start in range(0, len(token_ids) - block_size_tokens + 1, block_size_tokens):
        digest.update(",".join(map(str, token_ids[start:start + block_size_tokens])).encode())
        hashes.append(int.from_bytes(digest.copy().digest(), "little"))
    return tuple(hashes)


def _message_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: keep the text ones
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


class PromptCounter:
    """Token ids of a request's prompt: real ones with a tokenizer, character groups without."""

    def __init__(self, model_dir: Path | None):
        self._tokenizer = None
        self._template = None
        if model_dir is None:
            return
        tokenizer_file = model_dir / "tokenizer.json"
        if tokenizer_file.exists():
            from tokenizers import Tokenizer

            self._tokenizer = Tokenizer.from_file(str(tokenizer_file))
        template_file = model_dir / "chat_template.jinja"
        if template_file.exists():
            import jinja2

            env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
            self._template = env.from_string(template_file.read_text())

    @property
    def has_tokenizer(self) -> bool:
        return self._tokenizer is not None

    def chat_text(self, messages: list[dict[str, Any]]) -> str:
        plain = [{"role": m.get("role", "user"), "content": _message_text(m.get("content"))} for m in messages]
        if self._template is not None:
            try:
                return self._template.render(messages=plain, add_generation_prompt=True, tools=None)
            except Exception as exc:  # noqa: BLE001 - a template that needs more than role/content
                logger.debug("chat template failed (%s); counting the messages' text", exc)
        return "".join(f"{m['role']}\n{m['content']}\n" for m in plain)

    def token_ids(self, text: str) -> list[int]:
        if self._tokenizer is not None:
            return self._tokenizer.encode(text, add_special_tokens=False).ids
        # One pseudo-token per CHARS_PER_TOKEN characters; its id is the group's hash (stable for prefixes).
        return [int.from_bytes(hashlib.blake2b(text[i:i + CHARS_PER_TOKEN].encode(), digest_size=4).digest(), "little")
                for i in range(0, len(text), CHARS_PER_TOKEN)] or [0]

    def prompt_ids(self, endpoint: str, body: dict[str, Any]) -> list[int]:
        """The prompt's token ids of a chat or completion body (a list of ids passes through)."""
        if endpoint == "chat":
            return self.token_ids(self.chat_text(body.get("messages") or []))
        prompt = body.get("prompt", "")
        if isinstance(prompt, list):
            if prompt and isinstance(prompt[0], int):
                return list(prompt)
            prompt = prompt[0] if prompt else ""
            if isinstance(prompt, list):
                return list(prompt)
        return self.token_ids(str(prompt))
