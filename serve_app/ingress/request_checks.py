"""Request bytes -> a checked JSON object, with OpenAI-style errors for every way the ingress can tell it fails.

Pure (standard library only, no vLLM): the ingress decodes and checks the body before admission, so most bad
requests never reach a model server; the model server then validates the object into vLLM's request type
(serve_app/server/request_validation.py). serve_app is stricter than vLLM in ways a client relies on: an
unknown top-level field is a 400 naming it (vLLM would ignore it silently), output lengths and `n` have
configured upper bounds, and unknown roles and lone surrogates are refused by name.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from dataclasses import dataclass
from typing import Any

from serve_app.api.endpoints import Endpoint
from serve_app.api.errors import ServeAppError

# Fields that bound how many tokens a request may generate, per endpoint.
MAX_TOKENS_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
# Arrays and objects nested deeper than this are refused: real requests (tool schemas included) stay far below,
# and deeper ones reach Python's recursion limit in the parser, in validators or later in the model server.
MAX_JSON_DEPTH = 64
# The seeds vLLM's request types accept (int64); with `n` > 1 vLLM seeds choice i with seed + i, which must fit too.
SEED_MIN, SEED_MAX = -(2**63), 2**63 - 1
# Message roles OpenAI accepts (chat `messages`, Responses `input` items); any other is a 400 naming it.
CHAT_ROLES = ("system", "developer", "user", "assistant", "tool", "function")
RESPONSES_ROLES = ("system", "developer", "user", "assistant")
# A JSON escape of a UTF-16 surrogate (\ud800-\udfff): only a body holding one can decode to a lone surrogate.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


@dataclass(frozen=True)
class RequestLimits:
    max_tokens: int
    max_n: int


async def read_body(request, max_body_bytes: int, timeout_s: float | None = None) -> bytes:
    """Read the body, refusing (413) anything over `max_body_bytes` without buffering it all, and (408) a body
    that has not arrived in full within `timeout_s` (shorter than declared, or trickled)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
        raise body_too_large(max_body_bytes)
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > max_body_bytes:
                    raise body_too_large(max_body_bytes)
                chunks.append(chunk)
    except TimeoutError:
        raise ServeAppError(f"The request body did not arrive within {timeout_s:g} s ({size} bytes received).",
                            status_code=408, code="request_timeout") from None
    return b"".join(chunks)


def check_header_size(raw_headers: list[tuple[bytes, bytes]], max_header_bytes: int) -> None:
    """431 when the request's headers (names and values) add up to more than `max_header_bytes`."""
    size = sum(len(name) + len(value) for name, value in raw_headers)
    if size > max_header_bytes:
        raise ServeAppError(f"Request headers are larger than the limit of {max_header_bytes} bytes ({size}).",
                            status_code=431, code="headers_too_large")


def body_too_large(max_body_bytes: int) -> ServeAppError:
    return ServeAppError(f"Request body is larger than the limit of {max_body_bytes} bytes.", status_code=413,
                         code="request_too_large")


def decode_json_object(raw: bytes) -> dict[str, Any]:
    if not raw:
        raise ServeAppError("Request body is empty; expected a JSON object.", code="invalid_json")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ServeAppError(f"Request body is not valid UTF-8 (byte {exc.start}).", code="invalid_encoding")
    try:
        data: Any = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise ServeAppError(f"Request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}.",
                            code="invalid_json")
    except RecursionError:
        raise nested_too_deeply() from None
    except ValueError:  # an integer past Python's integer-string conversion limit
        raise ServeAppError(f"Request body has an integer with more than {sys.get_int_max_str_digits()} digits.",
                            code="invalid_json") from None
    if not isinstance(data, dict):
        raise ServeAppError("Request body must be a JSON object.", code="invalid_json")
    # Only a body with more brackets than the limit can be nested past it: most bodies skip the walk.
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH and _deeper_than(data, MAX_JSON_DEPTH):
        raise nested_too_deeply()
    return data


def nested_too_deeply() -> ServeAppError:
    return ServeAppError(f"Request body is nested too deeply: at most {MAX_JSON_DEPTH} levels of arrays and "
                         "objects (nesting depth).", code="invalid_json")


def _refuse_constant(name: str) -> Any:
    raise ServeAppError(f"Request body is not valid JSON: {name} is not a JSON number.", code="invalid_json")


def _deeper_than(data: Any, limit: int) -> bool:
    """Whether arrays and objects nest more than `limit` levels (iterative: no recursion on hostile input)."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return True
        children = value.values() if isinstance(value, dict) else value
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def check_limits(data: dict[str, Any], limits: RequestLimits) -> None:
    for name in MAX_TOKENS_FIELDS:
        value = data.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > limits.max_tokens:
            raise ServeAppError(f"{name} must be at most {limits.max_tokens}, got {value}.", param=name,
                                code="invalid_value")
    n = data.get("n")
    if isinstance(n, int) and not isinstance(n, bool) and n > limits.max_n:
        raise ServeAppError(f"n must be at most {limits.max_n}, got {n}.", param="n", code="invalid_value")
    seed = data.get("seed")
    if isinstance(seed, int) and not isinstance(seed, bool):
        num_choices = n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1
        highest = SEED_MAX - (num_choices - 1)
        if not SEED_MIN <= seed <= highest:
            with_n = f" (with n={n}, choice i is seeded with seed + i)" if num_choices > 1 else ""
            raise ServeAppError(f"seed must be between {SEED_MIN} and {highest}{with_n}.", param="seed",
                                code="invalid_value")


def check_prompt_embeds(data: dict[str, Any]) -> None:
    """An empty `prompt_embeds` (with no prompt) crashes vLLM 0.32's completion path with `echo` (a 500): refuse it."""
    if "prompt_embeds" in data and data["prompt_embeds"] is not None and not data["prompt_embeds"]:
        raise ServeAppError("prompt_embeds must not be empty.", param="prompt_embeds", code="invalid_value")


def check_model(data: dict[str, Any]) -> None:
    """`model` is a name: a string of printable characters (no control characters or lone surrogates)."""
    model = data.get("model")
    if model is None:
        return
    if not isinstance(model, str):
        raise ServeAppError(f"Invalid value for 'model': expected a string, got {_json_type(model)}.", param="model",
                            code="invalid_value")
    if not model.isprintable():
        raise ServeAppError("Invalid value for 'model': it contains control or unprintable characters.",
                            param="model", code="invalid_value")


def check_roles(data: dict[str, Any]) -> None:
    """An unknown message role is a 400 naming it and the roles OpenAI accepts (vLLM would render it into the
    prompt). Chat `messages` and Responses `input` items; a message that is not an object is left to vLLM."""
    for field, roles in (("messages", CHAT_ROLES), ("input", RESPONSES_ROLES)):
        items = data.get(field)
        if not isinstance(items, list):
            continue
        for index, item in enumerate(items):
            if not isinstance(item, dict) or "role" not in item:
                continue
            role = item["role"]
            if not isinstance(role, str) or role not in roles:
                shown = repr(role)[:60] if isinstance(role, str) else _json_type(role)
                supported = ", ".join(f"'{r}'" for r in roles)
                raise ServeAppError(f"Invalid value for '{field}[{index}].role': {shown}. Supported values are: "
                                    f"{supported}.", param=f"{field}[{index}].role", code="invalid_value")


def check_text_encodable(raw: bytes, data: dict[str, Any]) -> None:
    """A string holding a lone UTF-16 surrogate (JSON `"\\ud800"`) is not text: a 400 naming where it is, instead
    of an encoding error deep in tokenization or stop-string matching."""
    if not _SURROGATE_ESCAPE.search(raw):
        return
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if not _encodable(value):
                raise ServeAppError(f"Invalid value for '{path}': it contains a lone UTF-16 surrogate, which is not "
                                    "valid Unicode text.", param=path or None, code="invalid_value")
        elif isinstance(value, dict):
            for key, child in value.items():
                if not _encodable(key):
                    raise ServeAppError(f"Invalid key in '{path or 'body'}': it contains a lone UTF-16 surrogate.",
                                        param=path or None, code="invalid_value")
                stack.append((f"{path}.{key}" if path else key, child))
        elif isinstance(value, list):
            stack.extend((f"{path}[{index}]", child) for index, child in enumerate(value))


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _json_type(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", list: "an array", dict: "an object"}
    return names.get(type(value), type(value).__name__)


def check_request(raw: bytes, endpoint: Endpoint, limits: RequestLimits) -> dict[str, Any]:
    """Decode, reject unknown fields, check serve_app's limits, roles and text: the JSON object a model server
    validates (into vLLM's request type) next."""
    data = decode_json_object(raw)
    unknown = sorted(set(data) - endpoint.fields)
    if unknown:
        raise ServeAppError(f"Unsupported parameter: '{unknown[0]}'.", param=unknown[0], code="unsupported_parameter")
    check_model(data)
    check_text_encodable(raw, data)
    check_roles(data)
    check_prompt_embeds(data)
    check_limits(data, limits)
    return data


def requested_max_tokens(data: dict[str, Any]) -> int:
    """The output-token bound a checked body asks for (0 when it leaves it to the server, or is not a number
    vLLM would take)."""
    return max((_as_int(data.get(name)) for name in MAX_TOKENS_FIELDS), default=0)


def wants_stream(data: dict[str, Any]) -> bool:
    """Whether the body asks for a stream, read as vLLM's pydantic type reads `stream` (lax booleans)."""
    value = data.get("stream")
    if isinstance(value, str):
        return value.strip().lower() in _TRUE_STRINGS
    return value is True or (type(value) in (int, float) and value == 1)


_TRUE_STRINGS = ("1", "on", "t", "true", "y", "yes")


def _as_int(value: Any) -> int:
    if isinstance(value, bool) or value is None:
        return 0
    if isinstance(value, int):
        return max(value, 0)
    if isinstance(value, float) and value.is_integer():
        return max(int(value), 0)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return 0
