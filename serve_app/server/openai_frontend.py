"""vLLM's own OpenAI serving layer (chat, completions, Responses, models) around one engine.

Built exactly as `vllm serve` builds it (`init_app_state` from engine and frontend arguments), so every option
vLLM serves (tools and tool_choice, response_format with JSON schema, logprobs, n, seed, stop strings, the
Responses API) works here the same way. One small class per endpoint names its request type and serving call;
the endpoints' names and routes are serve_app/api/endpoints.py's (no vLLM there).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from serve_app.api.endpoints import CHAT, COMPLETION, RESPONSES
from serve_app.api.protocol import ServerRequest
from serve_app.server.request_validation import validate_body


@dataclass(frozen=True)
class ServingCall:
    """vLLM's side of one endpoint (serve_app/api/endpoints.py names it): its request type, imported lazily, and
    the serving call that answers it."""

    route: str
    request_type_path: str  # "module:Class"
    serving_attr: str  # attribute of vLLM's app state
    method: str  # coroutine method of that serving object

    def request_type(self) -> type:
        import importlib

        module, cls = self.request_type_path.split(":")
        return getattr(importlib.import_module(module), cls)

    def validate(self, request: ServerRequest) -> Any:
        """`request.body` (a checked JSON object) as vLLM's request object, carrying the ingress's request id
        (vLLM's and the engine's ids then name the client's request) and tenancy's priority."""
        body = validate_body(request.body, self.request_type())
        body.request_id = request.request_id
        if request.priority is not None:
            body.priority = request.priority  # tenancy turns on vLLM's priority scheduling (engine_args)
        return body

    async def call(self, state: Any, request: Any) -> Any:
        serving = getattr(state, self.serving_attr, None)
        if serving is None:
            raise NotImplementedError(f"{self.route} is not served for this model")
        return await getattr(serving, self.method)(request, raw_request=None)


# Keyed by serve_app.api.endpoints' names.
ENDPOINTS = {
    CHAT.name: ServingCall(CHAT.route, "vllm.entrypoints.openai.chat_completion.protocol:ChatCompletionRequest",
                           "openai_serving_chat", "create_chat_completion"),
    COMPLETION.name: ServingCall(COMPLETION.route, "vllm.entrypoints.openai.completion.protocol:CompletionRequest",
                                 "openai_serving_completion", "create_completion"),
    RESPONSES.name: ServingCall(RESPONSES.route, "vllm.entrypoints.openai.responses.protocol:ResponsesRequest",
                                "openai_serving_responses", "create_responses"),
}


def request_type(endpoint_name: str) -> type:
    """vLLM's request type of an endpoint (imports vLLM)."""
    return ENDPOINTS[endpoint_name].request_type()


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
