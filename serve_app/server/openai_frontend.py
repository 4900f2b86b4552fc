"""vLLM's own OpenAI serving layer (chat, completions, Responses, models) around one engine.

Built exactly as `vllm serve` builds it (`init_app_state` from engine and frontend arguments), so every option
vLLM serves (tools and tool_choice, response_format with JSON schema, logprobs, n, seed, stop strings, the
Responses API) works here the same way. One small class per endpoint names its request type and serving call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Endpoint:
    """One OpenAI endpoint: its route, vLLM request type (imported lazily) and serving call."""

    name: str
    route: str
    request_type_path: str  # "module:Class"
    serving_attr: str  # attribute of vLLM's app state
    method: str  # coroutine method of that serving object

    def request_type(self) -> type:
        import importlib

        module, cls = self.request_type_path.split(":")
        return getattr(importlib.import_module(module), cls)

    async def call(self, state: Any, request: Any) -> Any:
        serving = getattr(state, self.serving_attr, None)
        if serving is None:
            raise NotImplementedError(f"{self.route} is not served for this model")
        return await getattr(serving, self.method)(request, raw_request=None)


CHAT = Endpoint("chat", "/v1/chat/completions", "vllm.entrypoints.openai.chat_completion.protocol:ChatCompletionRequest",
                "openai_serving_chat", "create_chat_completion")
COMPLETION = Endpoint("completion", "/v1/completions", "vllm.entrypoints.openai.completion.protocol:CompletionRequest",
                      "openai_serving_completion", "create_completion")
RESPONSES = Endpoint("responses", "/v1/responses", "vllm.entrypoints.openai.responses.protocol:ResponsesRequest",
                     "openai_serving_responses", "create_responses")
ENDPOINTS = {e.name: e for e in (CHAT, COMPLETION, RESPONSES)}


async def build_serving_state(engine: Any, engine_args: Any, frontend_args: Any) -> Any:
    """vLLM's app state (serving objects for every supported endpoint), as `vllm serve` initialises it."""
    from starlette.datastructures import State
    from vllm.entrypoints.openai.api_server import init_app_state

    from serve_app.server.engine_args import serving_namespace

    state = State()
    tasks = await engine.get_supported_tasks()
    await init_app_state(engine, state, serving_namespace(engine_args, frontend_args), supported_tasks=tasks)
    return state


def error_from_exception(exc: Exception) -> dict[str, Any]:
    """vLLM's own mapping of an exception raised while preparing a request to an error (code = HTTP status)."""
    from vllm.entrypoints.serve.exception_handling.error_response import create_error_response

    return create_error_response(exc).error.model_dump()


def is_error_response(result: Any) -> bool:
    return type(result).__name__ == "ErrorResponse"


def error_from_response(result: Any) -> dict[str, Any]:
    """The error inside vLLM's `ErrorResponse` (`{"error": {message, type, param, code}}`, code = HTTP status)."""
    return result.error.model_dump()


def dump(result: Any, exclude_none: bool = True) -> dict[str, Any]:
    return result.model_dump(mode="json", by_alias=True, exclude_none=exclude_none)


def responses_event_to_sse(event: Any) -> str:
    """A Responses API stream event as vLLM's router frames it (`event: <type>` + `data: <json>`)."""
    return f"event: {getattr(event, 'type', 'unknown')}\ndata: {event.model_dump_json(indent=None, by_alias=True)}\n\n"
