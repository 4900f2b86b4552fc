"""Wire types: the OpenAI request bodies the ingress accepts, and the objects that travel the graph.

OpenAI request models follow the OpenAI spec's field order; serve_app extensions are marked.
Unknown request fields are rejected with a 400 naming the field, so a client never silently loses an
option it thought it set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_STOP_STRINGS = 4


class OpenAIRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StreamOptions(OpenAIRequest):
    include_usage: bool = False


class ChatMessage(OpenAIRequest):
    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[dict[str, Any]]
    name: str | None = None

    @field_validator("content")
    @classmethod
    def _text_parts_only(cls, value: str | list[dict[str, Any]]) -> str | list[dict[str, Any]]:
        if isinstance(value, list):
            for part in value:
                if part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise ValueError("only text content parts are supported")
        return value

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part["text"] for part in self.content)


class _SamplingFields(OpenAIRequest):
    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=1)
    seed: int | None = None
    stop: str | list[str] | None = Field(None, validate_default=True)
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    user: str | None = None
    # serve_app / vLLM extension: keep generating past the end-of-sequence token (fixed-length load tests).
    ignore_eos: bool = False

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, value: str | list[str] | None) -> list[str]:
        if value is None:
            return []
        stops = [value] if isinstance(value, str) else value
        if len(stops) > MAX_STOP_STRINGS:
            raise ValueError(f"at most {MAX_STOP_STRINGS} stop sequences are allowed")
        if any(not s for s in stops):
            raise ValueError("stop sequences must be non-empty strings")
        return stops

    @model_validator(mode="after")
    def _check_stream_options(self):
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed when stream is true")
        return self

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class CompletionRequest(_SamplingFields):
    prompt: str | list[int]
    max_tokens: int | None = Field(16, ge=1)
    echo: bool = False
    logprobs: None = None
    suffix: None = None

    @field_validator("prompt")
    @classmethod
    def _check_prompt(cls, value: str | list[int]) -> str | list[int]:
        if isinstance(value, list) and not value:
            raise ValueError("prompt must not be empty")
        if isinstance(value, list) and any(t < 0 for t in value):
            raise ValueError("token ids must be non-negative")
        return value

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, value: bool) -> bool:
        if value:
            raise ValueError("echo is not supported")
        return value


class ChatCompletionRequest(_SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: Literal[False] | None = None
    tools: None = None
    response_format: dict[str, Any] | None = None

    @field_validator("response_format")
    @classmethod
    def _text_only(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and value.get("type", "text") != "text":
            raise ValueError("only response_format {'type': 'text'} is supported")
        return value

    @property
    def output_token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


# ---------------------------------------------------------------------------------------------
# Objects that travel between deployments. Plain dataclasses: cheap to pickle, no validation cost
# on the hot path (the ingress validated the request already).


@dataclass(slots=True)
class SamplingOptions:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    ignore_eos: bool = False


@dataclass(slots=True)
class GenerationRequest:
    """One request as it travels ingress -> streaming node -> model replica."""

    request_id: str
    prompt_ids: list[int]
    sampling: SamplingOptions
    stop: list[str] = field(default_factory=list)
    endpoint: Literal["chat", "completion"] = "chat"
    model_name: str = ""
    created_s: int = 0
    include_usage: bool = False
    # Wall-clock (time.time()) when the ingress received the request; stage timings are measured from it.
    arrival_time_s: float = 0.0
    # Per-stage timings already known when the request is handed on (ingress, tokenizer).
    timings_ms: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class TokenChunk:
    """What a model replica yields: the new token ids of one or more engine steps.

    `token_ids` is a plain list (one message per engine step per request, never per-token objects).
    Timings are only set on the first and last chunk of a request.
    """

    token_ids: list[int]
    finish_reason: str | None = None
    num_prompt_tokens: int = 0
    # Set on the first chunk: engine queue wait and prefill, in ms.
    queue_ms: float | None = None
    prefill_ms: float | None = None
    error: str | None = None


@dataclass(slots=True)
class PreparedPrompt:
    """What the tokenizer deployment returns."""

    prompt_ids: list[int]
    num_prompt_tokens: int
    tokenize_ms: float
