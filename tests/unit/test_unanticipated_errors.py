"""Request ids, and an error no route anticipated still reaching the client as an OpenAI-style JSON error with one."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from fastapi.testclient import TestClient

from serve_app.ingress.app import REQUEST_ID_HEADER, RequestIds, request_id_of


def _app(**options) -> FastAPI:
    app = FastAPI()
    app.add_middleware(RequestIds, **options)

    @app.get("/boom")
    async def boom():
        raise RuntimeError("something nobody expected")

    @app.get("/id")
    async def own_id(request: Request):
        return {"id": request_id_of(request)}

    @app.get("/stream")
    async def stream(request: Request):
        async def frames():
            for index in range(3):
                yield f"data: {index} {request_id_of(request)}\n\n"
        return StreamingResponse(frames(), media_type="text/event-stream")

    return app


def test_unhandled_exception_becomes_openai_500():
    response = TestClient(_app(), raise_server_exceptions=False).get("/boom")
    assert response.status_code == 500
    assert response.headers["content-type"].startswith("application/json")
    request_id = response.headers[REQUEST_ID_HEADER]
    error = response.json()["error"]
    assert error["type"] == "server_error" and error["code"] == "internal_error"
    assert request_id in error["message"]
    assert "something nobody expected" not in error["message"]  # internals are logged, not sent


def test_one_request_id_per_response_the_clients_own_when_usable():
    client = TestClient(_app())
    fresh = client.get("/id")
    assert fresh.headers.get_list(REQUEST_ID_HEADER) == [fresh.json()["id"]] and fresh.json()["id"].startswith("req-")
    assert client.get("/id").json()["id"] != fresh.json()["id"]
    own = client.get("/id", headers={REQUEST_ID_HEADER: "trace-7f3a"})
    assert own.json()["id"] == "trace-7f3a" and own.headers.get_list(REQUEST_ID_HEADER) == ["trace-7f3a"]
    for unusable in ("has space", "x" * 129, "caf\u00e9".encode()):
        response = client.get("/id", headers={REQUEST_ID_HEADER: unusable})
        assert response.json()["id"].startswith("req-") and response.headers[REQUEST_ID_HEADER] == response.json()["id"]
    streamed = client.get("/stream", headers={REQUEST_ID_HEADER: "s-1"})
    assert streamed.headers.get_list(REQUEST_ID_HEADER) == ["s-1"] and streamed.text.count("s-1") == 3


def test_behind_ray_serve_the_app_sends_no_request_id_header_of_its_own():
    """Ray's RequestIdMiddleware gives each request an x-request-id and appends it to the response: the app adopts
    that id and adds no second header."""
    client = TestClient(_app(echo=False), raise_server_exceptions=False)
    response = client.get("/id", headers={REQUEST_ID_HEADER: "ray-given"})
    assert response.json()["id"] == "ray-given" and REQUEST_ID_HEADER not in response.headers
    # Whatever id Ray passes on (it echoes the client's as sent), the request is named by it: header and body agree.
    for as_sent in ("has space", "x" * 300):
        assert client.get("/id", headers={REQUEST_ID_HEADER: as_sent}).json()["id"] == as_sent
    boom = client.get("/boom", headers={REQUEST_ID_HEADER: "ray-given"})
    assert boom.status_code == 500 and "ray-given" in boom.json()["error"]["message"]
    assert REQUEST_ID_HEADER not in boom.headers
