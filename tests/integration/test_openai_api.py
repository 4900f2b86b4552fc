"""The official `openai` client, unmodified, against the real graph (SmolLM2 on a vLLM CPU engine)."""

import pytest

pytestmark = pytest.mark.integration

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def test_models_lists_the_served_model(openai_client, served_model_name):
    assert [m.id for m in openai_client.models.list().data] == [served_model_name]


def test_default_model_answers_paris_streaming(openai_client, served_model_name):
    stream = openai_client.chat.completions.create(
        model=served_model_name, messages=QUESTION, temperature=0, max_tokens=20, stream=True
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert "Paris" in text


def test_chat_non_streaming_usage_matches_real_token_counts(openai_client, served_model_name, model_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    resp = openai_client.chat.completions.create(model=served_model_name, messages=QUESTION, temperature=0, max_tokens=12)
    prompt_ids = tok.apply_chat_template(QUESTION, add_generation_prompt=True, tokenize=True, return_dict=False)
    assert resp.usage.prompt_tokens == len(prompt_ids)
    text = resp.choices[0].message.content
    assert "Paris" in text
    assert resp.usage.completion_tokens == len(tok.encode(text, add_special_tokens=False)) + (
        1 if resp.choices[0].finish_reason == "stop" else 0
    )
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens


def test_chat_streaming_include_usage(openai_client, served_model_name):
    stream = openai_client.chat.completions.create(
        model=served_model_name, messages=QUESTION, temperature=0, max_tokens=8, stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert len(usage_chunks) == 1 and usage_chunks[0] is chunks[-1] and chunks[-1].choices == []
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish in (["length"], ["stop"])
    if finish == ["length"]:
        assert usage_chunks[0].usage.completion_tokens == 8


def test_completions_streamed_and_not(openai_client, served_model_name):
    prompt = "The capital of France is"
    full = openai_client.completions.create(model=served_model_name, prompt=prompt, max_tokens=10, temperature=0)
    streamed = openai_client.completions.create(
        model=served_model_name, prompt=prompt, max_tokens=10, temperature=0, stream=True
    )
    streamed_text = "".join(c.choices[0].text for c in streamed if c.choices)
    assert full.choices[0].text == streamed_text
    assert full.usage.completion_tokens == 10 and full.choices[0].finish_reason == "length"


def test_stop_string_is_not_in_output(openai_client, served_model_name):
    free = openai_client.completions.create(model=served_model_name, prompt="Count: 1, 2, 3,", max_tokens=16, temperature=0)
    text = free.choices[0].text
    stop = text.strip()[2:5] if len(text.strip()) > 6 else text[1:3]
    assert stop and stop in text
    stopped = openai_client.completions.create(
        model=served_model_name, prompt="Count: 1, 2, 3,", max_tokens=16, temperature=0, stop=[stop], stream=True
    )
    chunks = list(stopped)
    out = "".join(c.choices[0].text for c in chunks if c.choices)
    assert out == text[: text.index(stop)]
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_seeded_sampling_is_reproducible(openai_client, served_model_name):
    kwargs = dict(model=served_model_name, prompt="Once upon a time", max_tokens=12, temperature=1.0, top_p=0.9, seed=7)
    a = openai_client.completions.create(**kwargs).choices[0].text
    b = openai_client.completions.create(**kwargs).choices[0].text
    assert a == b


def test_every_response_has_one_request_id_the_clients_own_when_given(serve_app_url, served_model_name):
    """One x-request-id per response through Ray's proxy (Ray's middleware and serve_app's used to send one each),
    the same id in the response body's `id`; a client's own id is kept, streamed or not."""
    import httpx

    body = {"model": served_model_name, "prompt": "Hi", "max_tokens": 2}
    ok = httpx.post(f"{serve_app_url}/v1/completions", json=body, timeout=60)
    bad = httpx.post(f"{serve_app_url}/v1/completions", json={"model": "nope", "prompt": "Hi"}, timeout=60)
    assert ok.status_code == 200 and len(ok.headers.get_list("x-request-id")) == 1
    assert ok.json()["id"].endswith(ok.headers["x-request-id"])
    assert bad.status_code == 404 and len(bad.headers.get_list("x-request-id")) == 1
    assert bad.json()["error"]["code"] == "model_not_found"
    own = httpx.post(f"{serve_app_url}/v1/completions", json=body, headers={"x-request-id": "client-trace-42"},
                     timeout=60)
    assert own.headers.get_list("x-request-id") == ["client-trace-42"] and own.json()["id"].endswith("client-trace-42")
    with httpx.stream("POST", f"{serve_app_url}/v1/completions", json=body | {"stream": True},
                      headers={"x-request-id": "client-trace-43"}, timeout=60) as streamed:
        text = "".join(streamed.iter_text())
    assert streamed.headers.get_list("x-request-id") == ["client-trace-43"] and "client-trace-43" in text
