"""Every answer of the ingress's FastAPI app, router and FastAPI layers included, is an OpenAI-style error.

The real app and routes, without Ray or an engine: the Ingress is built with a model handle that must never be
called (each request here is refused before it would reach a model), and its app driven by a test client.
"""

from __future__ import annotations

import asyncio
from urllib.parse import quote

import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from fastapi.testclient import TestClient

from serve_app.config import AppConfig
from serve_app.ingress.app import REQUEST_ID_HEADER, RequestIds, install_error_handlers
from serve_app.ingress.replica import Ingress
from serve_app.ingress.request_checks import MAX_JSON_DEPTH, SEED_MAX
from tests.unit.fake_backend import FakeBackend

CHAT = "/v1/chat/completions"
HI = '"messages": [{"role": "user", "content": "hi"}]'


class _UnreachableModel:
    deployment_name = "ModelServer"  # read at start-up, as a Ray handle's

    def options(self, **_kwargs):
        return self

    def __getattr__(self, name):
        raise AssertionError(f"the model server was reached ({name}) by a request that should have been refused")


def _client_of_ingress(config: AppConfig) -> TestClient:
    """A test client of the ingress app, its replica built from `config` with unreachable model servers (the
    client's `ingress` attribute is the replica)."""
    handles = {view.model.resolved_name(): _UnreachableModel() for view in config.model_views()}
    ingress = asyncio.run(Ingress.create(config, model_handles=handles))
    client = TestClient(ingress.asgi_app(), raise_server_exceptions=False)
    client.ingress = ingress
    return client


@pytest.fixture
def ingress_client():
    return lambda **config: _client_of_ingress(AppConfig.model_validate(config))


def _assert_openai_error(response, status: int, code: str | None = None, param: str | None = None) -> dict:
    assert response.status_code == status, response.text[:300]
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers[REQUEST_ID_HEADER]
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["type"] == ("server_error" if status >= 500 else "invalid_request_error")
    if code is not None:
        assert error["code"] == code
    if param is not None:
        assert error["param"] == param
    return error


def test_unknown_paths_are_an_openai_404(ingress_client):
    client = ingress_client()
    for method, path in (("GET", "/v2/models"), ("POST", "/v1/chat"), ("GET", "/%ED%A0%80"), ("GET", "/" + "x" * 5000)):
        error = _assert_openai_error(client.request(method, path), 404, code="not_found")
        assert len(error["message"]) < 300


def test_a_wrong_method_is_an_openai_405_with_allow(ingress_client):
    client = ingress_client()
    for method, path, allowed in (("GET", CHAT, "POST"), ("DELETE", "/health", "GET"), ("PUT", "/v1/models", "GET")):
        response = client.request(method, path)
        _assert_openai_error(response, 405, code="method_not_allowed")
        assert response.headers["allow"] == allowed


def test_api_docs_are_served_by_default_and_gone_when_disabled(ingress_client):
    client = ingress_client()
    schema = client.get("/openapi.json")
    assert schema.status_code == 200 and CHAT in schema.json()["paths"]
    assert not {"/docs", "/redoc", "/openapi.json"} & set(schema.json()["paths"])
    for path in ("/docs", "/redoc"):
        page = client.get(path)
        assert page.status_code == 200 and "/openapi.json" in page.text

    client = ingress_client(api_docs_enabled=False)
    for path in ("/docs", "/redoc", "/openapi.json"):
        _assert_openai_error(client.get(path), 404, code="not_found")
    assert client.get("/playground").status_code == 200  # a separate switch


def test_headers_over_the_limit_are_an_openai_431(ingress_client):
    client = ingress_client(admission={"max_header_bytes": 4096})
    response = client.post(CHAT, content="{" + HI + "}", headers={"x-padding": "a" * 5000})
    _assert_openai_error(response, 431, code="headers_too_large")


@pytest.mark.parametrize("states, status, min_replicas, expected", [
    ({"STARTING": 1}, "UPDATING", 1, 503),
    ({}, "HEALTHY", 0, None),  # scales from zero: the request goes on to the model (and waits for a replica)
])
def test_no_running_model_replica_is_a_fast_503_with_retry_after(ingress_client, states, status, min_replicas,
                                                                 expected):
    client = ingress_client(ingress_placement="separate", model_deployment={"min_replicas": min_replicas})
    ingress = client.ingress
    ingress._replicas.peek = lambda: {"ModelServer": (states, status)}
    ingress._replicas.since_landed_s = lambda: 0.0  # the view answered just now: no second read
    response = client.post(CHAT, content="{" + HI + "}")
    if expected is None:  # it reached the (unreachable, so failing) fake model: a 503 of another kind
        assert response.json()["error"]["code"] == "unavailable"
        return
    _assert_openai_error(response, 503, code="model_unavailable")
    assert int(response.headers["retry-after"]) >= 1


# Router-level fuzzing: any method on any path (known routes with odd suffixes, odd characters, long paths) is
# answered in the OpenAI error format or by a real route, never with FastAPI's `{"detail": ...}` or a 500.
KNOWN = ["/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/models", "/docs", "/playground", "/v1",
         "/v2/models", "/"]
PATHS = st.one_of(
    st.tuples(st.sampled_from(KNOWN), st.text(alphabet=st.characters(codec="utf-8", exclude_characters="?#"),
                                               max_size=30)).map(lambda p: p[0] + quote(p[1])),
    st.text(alphabet="/abcv1.%-_~", min_size=1, max_size=300).map(lambda p: "/" + p.lstrip("/")),
)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]), path=PATHS)
def test_fuzzed_methods_and_paths_get_openai_errors_from_every_layer(router_client, method, path):
    if path.rstrip("/") in ("/health", "/metrics"):  # these ask the (fake, unreachable) engine
        return
    response = router_client.request(method, path, content=b"{}")
    assert response.status_code < 500, (method, path, response.status_code, response.text[:200])
    if response.status_code >= 400:
        body = response.json()
        assert "detail" not in body and set(body["error"]) == {"message", "type", "param", "code"}, body


@pytest.fixture(scope="module")
def router_client():
    """One ingress for the whole router fuzz (hypothesis runs many examples per test); its model server is a fake
    that validates bodies as the real one does (the ingress no longer does: an empty body is the model's 400)."""
    config = AppConfig()
    ingress = asyncio.run(Ingress.create(config, backends={config.model.resolved_name(): FakeBackend()}))
    return TestClient(ingress.asgi_app(), raise_server_exceptions=False)


@pytest.mark.parametrize("body, code, param", [
    ("[" * 100_000, "invalid_json", None),
    ('{"model": "m", "messages": ' + "[" * 100_000 + "}", "invalid_json", None),
    ('{"model": "m", ' + HI + ', "tools": ' + "[" * (MAX_JSON_DEPTH + 5) + "]" * (MAX_JSON_DEPTH + 5) + "}",
     "invalid_json", None),
    ('{"model": "m", ' + HI + ', "max_tokens": ' + "9" * 5000 + "}", "invalid_json", None),
    ('{"model": ' + "1" * 5000 + ", " + HI + "}", "invalid_json", None),
    ('{"model": "\\ud800", ' + HI + "}", "invalid_value", "model"),
    ('{"model": "tiny\\u0000", ' + HI + "}", "invalid_value", "model"),
    ('{"model": 7, ' + HI + "}", "invalid_value", "model"),
    ('{"model": ["m"], ' + HI + "}", "invalid_value", "model"),
    ('{"model": "m", ' + HI + ', "\\udfff": 1}', "unsupported_parameter", None),
    ('{"model": "m", ' + HI + f', "seed": {SEED_MAX + 1}' + "}", "invalid_value", "seed"),
    ('{"model": "m", ' + HI + f', "seed": {SEED_MAX}, "n": 2' + "}", "invalid_value", "seed"),
    ('{"model": "m", ' + HI + ', "temperature": NaN}', "invalid_json", None),
])
def test_hostile_bodies_get_a_clean_400(ingress_client, body, code, param):
    response = ingress_client().post(CHAT, content=body.encode(), headers={"content-type": "application/json"})
    _assert_openai_error(response, 400, code=code, param=param)


def test_fastapi_validation_errors_are_an_openai_400():
    app = FastAPI()
    app.add_middleware(RequestIds)
    install_error_handlers(app)

    @app.get("/items/{item_id}")
    async def item(item_id: int):
        return {"id": item_id}

    client = TestClient(app, raise_server_exceptions=False)
    error = _assert_openai_error(client.get("/items/not-a-number"), 400, code="invalid_value")
    assert "item_id" in error["param"]
    assert client.get("/items/3").json() == {"id": 3}


def test_auth_without_keys_stops_the_ingress_before_an_engine_starts(monkeypatch):
    from serve_app.server import model_server

    def must_not_start(*_args, **_kwargs):
        raise AssertionError("the model server (its engine) started before the missing keys were noticed")

    monkeypatch.setattr(model_server, "ModelServer", must_not_start)
    monkeypatch.delenv("SERVE_APP_TEST_KEYS", raising=False)
    config = AppConfig.model_validate({"auth": {"enabled": True, "api_keys_env": "SERVE_APP_TEST_KEYS"}})
    with pytest.raises(ValueError, match="SERVE_APP_TEST_KEYS"):
        asyncio.run(Ingress.create(config))


def test_an_error_response_from_vllm_keeps_its_status_and_message():
    """vLLM's serving calls return (not raise) `ErrorResponse` for some refusals: its status and message reach the
    client, not a bare 500."""
    from vllm.entrypoints.serve.exception_handling.error_response import create_error_response

    from serve_app.server.openai_frontend import error_from_response
    from serve_app.server.response_stream import openai_error

    status, body = openai_error(error_from_response(create_error_response("Refused request with untrusted chat template.")))
    assert status == 400
    assert body["error"]["message"] == "Refused request with untrusted chat template."
    assert body["error"]["type"] == "invalid_request_error"
