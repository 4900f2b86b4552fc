"""The same greedy answer over every wire format the ingress offers: SSE, msgpack (with serve_app's
client), whole JSON, and whole JSON gzip-compressed."""

import httpx
import pytest

from serve_app.client import stream_text

pytestmark = pytest.mark.integration


def test_sse_msgpack_and_json_carry_the_same_text(serve_app_url, served_model_name, openai_client):
    body = {"model": served_model_name, "prompt": "The capital of France is", "max_tokens": 24, "temperature": 0,
            "ignore_eos": True}
    whole = httpx.post(f"{serve_app_url}/v1/completions", json=body, timeout=120,
                       headers={"Accept-Encoding": "gzip"})
    assert whole.status_code == 200
    assert whole.headers["content-encoding"] == "gzip" and whole.headers["content-type"] == "application/json"
    text = whole.json()["choices"][0]["text"]
    assert whole.json()["usage"]["completion_tokens"] == 24 and text

    sse = openai_client.completions.create(model=served_model_name, prompt=body["prompt"], max_tokens=24,
                                           temperature=0, stream=True, extra_body={"ignore_eos": True})
    assert "".join(chunk.choices[0].text for chunk in sse if chunk.choices) == text
    assert "".join(stream_text(serve_app_url, body)) == text


def test_uncompressed_json_when_gzip_is_not_accepted(serve_app_url, served_model_name):
    response = httpx.post(f"{serve_app_url}/v1/completions", timeout=120, headers={"Accept-Encoding": "identity"},
                          json={"model": served_model_name, "prompt": "Hi", "max_tokens": 4})
    assert response.status_code == 200 and "content-encoding" not in response.headers
