"""An error no route anticipated still reaches the client as an OpenAI-style JSON error with a request id."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from serve_app.ingress.app import add_request_id
from serve_app.ingress.relay import REQUEST_ID_HEADER


def test_unhandled_exception_becomes_openai_500():
    app = FastAPI()
    app.middleware("http")(add_request_id)

    @app.get("/boom")
    async def boom():
        raise RuntimeError("something nobody expected")

    response = TestClient(app, raise_server_exceptions=False).get("/boom")
    assert response.status_code == 500
    assert response.headers["content-type"].startswith("application/json")
    request_id = response.headers[REQUEST_ID_HEADER]
    error = response.json()["error"]
    assert error["type"] == "server_error" and error["code"] == "internal_error"
    assert request_id in error["message"]
    assert "something nobody expected" not in error["message"]  # internals are logged, not sent
