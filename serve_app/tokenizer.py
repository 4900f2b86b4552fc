"""Tokenizer stage: text clean-up, chat template, tokenization and the prompt-length check.

Needs no GPU and scales on its own. `PromptPreparer` is the logic (testable with any Hugging Face
tokenizer); `TokenizerDeployment` wraps it for Ray Serve.
"""

from __future__ import annotations

import time
import unicodedata
from typing import Any

from ray import serve

from serve_app.config import AppConfig
from serve_app.errors import ServeAppError, prompt_too_long
from serve_app.models import resolve_model_path
from serve_app.protocol import PreparedPrompt

# Control characters are dropped except the whitespace ones prompts legitimately contain.
_KEPT_CONTROLS = {"\n", "\t", "\r"}


def clean_text(text: str) -> str:
    """NFC-normalise and drop stray control / format characters (keeps newlines and tabs)."""
    text = unicodedata.normalize("NFC", text)
    return "".join(
        ch for ch in text if ch in _KEPT_CONTROLS or unicodedata.category(ch) not in ("Cc", "Cs")
    )


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def context_length(model_path: str, configured: int | None) -> int:
    if configured:
        return configured
    from transformers import AutoConfig

    return int(getattr(AutoConfig.from_pretrained(model_path), "max_position_embeddings", 2048))


class PromptPreparer:
    def __init__(self, tokenizer, max_model_len: int):
        self.tokenizer = tokenizer
        self.max_model_len = max_model_len
        self.vocab_size = len(tokenizer)

    def prepare_chat(self, messages: list[dict[str, str]], max_tokens: int | None) -> PreparedPrompt:
        start = time.perf_counter()
        cleaned = [{"role": m["role"], "content": clean_text(m["content"])} for m in messages]
        try:
            prompt_ids = self.tokenizer.apply_chat_template(
                cleaned, add_generation_prompt=True, tokenize=True, return_dict=False
            )
        except Exception as exc:  # a template that rejects the conversation (e.g. role order)
            raise ServeAppError(f"messages could not be formatted for this model: {exc}", param="messages")
        if isinstance(prompt_ids, dict) or hasattr(prompt_ids, "input_ids"):
            prompt_ids = prompt_ids["input_ids"]
        return self._finish(list(prompt_ids), max_tokens, start, param="messages")

    def prepare_completion(self, prompt: str | list[int], max_tokens: int | None) -> PreparedPrompt:
        start = time.perf_counter()
        if isinstance(prompt, list):
            bad = [t for t in prompt if t >= self.vocab_size]
            if bad:
                raise ServeAppError(f"token id {bad[0]} is out of range [0, {self.vocab_size})", param="prompt")
            prompt_ids = list(prompt)
        else:
            prompt_ids = self.tokenizer.encode(clean_text(prompt), add_special_tokens=True)
        if not prompt_ids:
            raise ServeAppError("prompt must not be empty", param="prompt")
        return self._finish(prompt_ids, max_tokens, start, param="prompt")

    def _finish(self, prompt_ids: list[int], max_tokens: int | None, start: float, param: str) -> PreparedPrompt:
        num_prompt = len(prompt_ids)
        if num_prompt >= self.max_model_len or (max_tokens is not None and num_prompt + max_tokens > self.max_model_len):
            error = prompt_too_long(num_prompt, max_tokens or 0, self.max_model_len)
            error.param = param
            raise error
        return PreparedPrompt(
            prompt_ids=prompt_ids, num_prompt_tokens=num_prompt, tokenize_ms=(time.perf_counter() - start) * 1000.0
        )


class TokenizerStage:
    def __init__(self, config: AppConfig):
        model_path = resolve_model_path(config.model)
        tokenizer = load_tokenizer(config.model.tokenizer or model_path)
        self._preparer = PromptPreparer(tokenizer, context_length(model_path, config.engine.max_model_len))

    def prepare_chat(self, messages: list[dict[str, Any]], max_tokens: int | None) -> PreparedPrompt:
        return self._preparer.prepare_chat(messages, max_tokens)

    def prepare_completion(self, prompt: str | list[int], max_tokens: int | None) -> PreparedPrompt:
        return self._preparer.prepare_completion(prompt, max_tokens)

    def max_model_len(self) -> int:
        return self._preparer.max_model_len


TokenizerDeployment = serve.deployment(TokenizerStage, name="Tokenizer")
