"""API types and wire formats shared by the ingress and the model server: errors, SSE/msgpack framing, OpenAPI."""
