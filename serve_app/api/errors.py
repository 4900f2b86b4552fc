"""OpenAI-style errors: one exception type that carries its HTTP status, and the JSON body."""

from __future__ import annotations

from typing import Any


class ServeAppError(Exception):
    """An error that is the client's to see: it becomes `{"error": {...}}` with `status_code`.

    Raised anywhere in the graph; Ray wraps it across deployment hops, so the ingress unwraps it with
    `find_serve_app_error`.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int = 400,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def to_body(self) -> dict[str, Any]:
        return error_body(self.message, type=self.type, param=self.param, code=self.code)

    def __reduce__(self):
        # Keep keyword arguments when Ray pickles the exception across processes.
        return (_rebuild, (self.message, self.status_code, self.type, self.param, self.code, self.headers))


def _rebuild(message, status_code, type, param, code, headers) -> ServeAppError:
    return ServeAppError(message, status_code=status_code, type=type, param=param, code=code, headers=headers)


def error_body(message: str, *, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": _encodable(message), "type": type, "param": _encodable(param), "code": code}}


def _encodable(text: str | None) -> str | None:
    """`text` with lone surrogates (JSON `\\ud800` escapes echoed from a body) escaped, so the error encodes as UTF-8."""
    return text if text is None else str(text).encode("utf-8", "backslashreplace").decode("utf-8")


def find_serve_app_error(exc: BaseException) -> ServeAppError | None:
    """Return the ServeAppError inside `exc` (Ray's RayTaskError wraps it as cause), if any."""
    seen = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ServeAppError):
            return current
        cause = getattr(current, "cause", None)
        if isinstance(cause, BaseException):
            current = cause
            continue
        current = current.__cause__ or current.__context__
    return None


def prompt_too_long(num_prompt_tokens: int, max_tokens: int, max_model_len: int) -> ServeAppError:
    return ServeAppError(
        f"This model's maximum context length is {max_model_len} tokens. However, you requested "
        f"{num_prompt_tokens + max_tokens} tokens ({num_prompt_tokens} in the messages, {max_tokens} in the "
        "completion). Please reduce the length of the messages or completion.",
        param="messages",
        code="context_length_exceeded",
    )


def validation_error(exc: Any) -> ServeAppError:
    """A pydantic `ValidationError` (vLLM's request types, FastAPI's parameters) as an OpenAI-style 400 naming the
    first field at fault."""
    first = exc.errors()[0]
    param = ".".join(str(p) for p in first["loc"]) or None
    if first["type"] == "extra_forbidden":
        message, code = f"Unsupported parameter: '{param}'.", "unsupported_parameter"
    elif first["type"] == "missing":
        message, code = f"Missing required parameter: '{param}'.", "missing_required_parameter"
    else:
        message, code = f"Invalid value for '{param}': {first['msg']}.", "invalid_value"
    return ServeAppError(message[:500], param=param, code=code)
