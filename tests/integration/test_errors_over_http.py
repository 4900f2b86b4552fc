"""Bad input over real HTTP: the right status, the OpenAI error body, a request id, and a replica that lives on."""

import httpx
import pytest

pytestmark = pytest.mark.integration


def post(url, path, **kwargs):
    return httpx.post(f"{url}{path}", timeout=60, **kwargs)


def assert_openai_error(resp, status, code=None):
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert resp.headers["x-request-id"]
    if code:
        assert error["code"] == code


def test_malformed_and_invalid_bodies(serve_app_url, served_model_name):
    assert_openai_error(post(serve_app_url, "/v1/chat/completions", content=b"{nope",
                             headers={"content-type": "application/json"}), 400, "invalid_json")
    assert_openai_error(post(serve_app_url, "/v1/chat/completions", content=b'{"model": "\xff"}',
                             headers={"content-type": "application/json"}), 400, "invalid_encoding")
    assert_openai_error(post(serve_app_url, "/v1/chat/completions", json={"model": served_model_name, "messages": []}), 400)
    assert_openai_error(post(serve_app_url, "/v1/completions",
                             json={"model": served_model_name, "prompt": "a", "temperature": -1}), 400)
    assert_openai_error(post(serve_app_url, "/v1/completions",
                             json={"model": served_model_name, "prompt": "a", "logit_bias_typo": {"1": 2}}), 400,
                        "unsupported_parameter")
    # vLLM returns (not raises) this refusal; its status and message must reach the client, not a bare 500.
    resp = post(serve_app_url, "/v1/chat/completions", json={"model": served_model_name, "chat_template": "{{ 1 }}",
                                                             "messages": [{"role": "user", "content": "hi"}]})
    assert_openai_error(resp, 400)
    assert "chat template" in resp.json()["error"]["message"]


def test_unknown_model_is_404(serve_app_url):
    assert_openai_error(post(serve_app_url, "/v1/completions", json={"model": "gpt-9", "prompt": "a"}), 404, "model_not_found")


def test_prompt_longer_than_context_is_400(serve_app_url, served_model_name):
    prompt = "hello " * 3000
    resp = post(serve_app_url, "/v1/completions", json={"model": served_model_name, "prompt": prompt, "max_tokens": 4})
    assert_openai_error(resp, 400, "context_length_exceeded")
    resp = post(serve_app_url, "/v1/completions", json={"model": served_model_name, "prompt": [999999], "max_tokens": 4})
    assert_openai_error(resp, 400)


def test_body_over_the_limit_is_413(serve_app_url, served_model_name, app_config):
    big = "x" * (app_config.admission.max_body_bytes + 10)
    assert_openai_error(post(serve_app_url, "/v1/completions", json={"model": served_model_name, "prompt": big}), 413)


def test_max_tokens_over_the_limit_is_400(serve_app_url, served_model_name, app_config):
    limit = app_config.admission.max_tokens_limit
    resp = post(serve_app_url, "/v1/completions", json={"model": served_model_name, "prompt": "a", "max_tokens": limit + 1})
    assert_openai_error(resp, 400)


def test_replica_still_serves_after_bad_input(serve_app_url, served_model_name):
    assert httpx.get(f"{serve_app_url}/health", timeout=30).status_code == 200
    resp = post(serve_app_url, "/v1/completions", json={"model": served_model_name, "prompt": "Hi", "max_tokens": 2})
    assert resp.status_code == 200 and resp.json()["usage"]["completion_tokens"] == 2
