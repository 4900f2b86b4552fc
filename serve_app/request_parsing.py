"""Turning raw request bytes into a validated request, with OpenAI-style errors for every way it can fail."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from serve_app.errors import ServeAppError

T = TypeVar("T", bound=BaseModel)


async def read_body(request, max_body_bytes: int) -> bytes:
    """Read the body, refusing (413) anything over `max_body_bytes` without buffering it all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
        raise body_too_large(max_body_bytes)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_body_bytes:
            raise body_too_large(max_body_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


def body_too_large(max_body_bytes: int) -> ServeAppError:
    return ServeAppError(
        f"Request body is larger than the limit of {max_body_bytes} bytes.", status_code=413, code="request_too_large"
    )


def parse_body(raw: bytes, model_cls: type[T]) -> T:
    """Decode UTF-8 JSON and validate it against `model_cls` (400 with the offending field named)."""
    if not raw:
        raise ServeAppError("Request body is empty; expected a JSON object.", code="invalid_json")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ServeAppError(f"Request body is not valid UTF-8 (byte {exc.start}).", code="invalid_encoding")
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ServeAppError(f"Request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}.", code="invalid_json")
    if not isinstance(data, dict):
        raise ServeAppError("Request body must be a JSON object.", code="invalid_json")
    try:
        return model_cls.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc)


def validation_error(exc: ValidationError) -> ServeAppError:
    first = exc.errors()[0]
    param = ".".join(str(p) for p in first["loc"]) or None
    if first["type"] == "extra_forbidden":
        message = f"Unsupported parameter: '{param}'."
        code = "unsupported_parameter"
    elif first["type"] == "missing":
        message = f"Missing required parameter: '{param}'."
        code = "missing_required_parameter"
    else:
        message = f"Invalid value for '{param}': {first['msg']}."
        code = "invalid_value"
    return ServeAppError(message, param=param, code=code)
