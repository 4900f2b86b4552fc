"""A checked JSON body -> vLLM's request object, with OpenAI-style errors (the model server's first step).

The ingress has already refused what it can judge without vLLM (size, depth, unknown fields, limits, roles,
text, model: serve_app/ingress/request_checks.py). Here vLLM's pydantic request type validates the rest; every
way that fails is a 400 naming the field, answered before the first byte. The request type is passed in, so this
module itself imports pydantic only.
"""

from __future__ import annotations

import functools
from typing import Any

from pydantic import ValidationError

from serve_app.api.errors import ServeAppError, validation_error


@functools.cache
def known_fields(request_type: type) -> frozenset[str]:
    """The top-level fields (names and aliases) `request_type` accepts."""
    names = set()
    for name, info in request_type.model_fields.items():
        names.add(name)
        if info.alias:
            names.add(info.alias)
    return frozenset(names)


def validate_body(data: dict[str, Any], request_type: type) -> Any:
    """`data` as a `request_type` object: an unknown top-level field is a 400 naming it (vLLM would ignore it),
    and so is every value vLLM's validators refuse."""
    unknown = sorted(set(data) - known_fields(request_type))
    if unknown:
        raise ServeAppError(f"Unsupported parameter: '{unknown[0]}'.", param=unknown[0], code="unsupported_parameter")
    try:
        return request_type.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc)
    except Exception as exc:  # noqa: BLE001 - vLLM's validators also raise their own errors; all are the body's fault
        param = getattr(exc, "parameter", None)
        raise ServeAppError(f"Invalid request: {str(exc)[:300]}", param=param, code="invalid_value")
