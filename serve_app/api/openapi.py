"""OpenAPI request-body schemas for routes that read their body themselves.

The ingress parses bodies by hand (size limit first, then one pydantic validation with OpenAI-style
errors), so FastAPI cannot infer the body schema. `json_body` puts the pydantic model's JSON schema into
the route's OpenAPI entry, so `/openapi.json` documents the API and schema-driven fuzzers (schemathesis,
in tests/integration/test_fuzz_http.py) generate real request bodies.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


def _inline_refs(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline_refs(defs[ref.split("/")[-1]], defs)
        return {key: _inline_refs(value, defs) for key, value in node.items() if key != "$defs"}
    if isinstance(node, list):
        return [_inline_refs(item, defs) for item in node]
    return node


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` for a route whose JSON body is `model` (nested definitions inlined)."""
    schema = model.model_json_schema()
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": _inline_refs(schema, schema.get("$defs", {}))}}}}
