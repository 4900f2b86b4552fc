"""The simulated engine behind the real graph: a Ray Serve app with `engine.backend: simulated`, the ingress in
its own deployment and two simulated model replicas, spoken to over HTTP like any serve_app endpoint.

The profile is slow on purpose (a 100 ms step base, 2 ms per prompt token), so the time to first token it
predicts stands well above the graph's own overhead and the test can check that TTFT follows the profile.
"""

from __future__ import annotations

import time

import httpx
import pytest

from serve_app.config import AppConfig
from tests.integration.conftest import read_gauge

NAME = "sim-model"
PROFILE = """
name: slow-test
model: test
device: none
load_time_s: 1.0
max_num_seqs: 8
max_num_batched_tokens: 2048
num_kv_cache_tokens: 16384
block_size_tokens: 16
max_model_len: 2048
default_max_tokens: 16
cost: {step_base_ms: 100, decode_ms_per_seq: 1, prefill_ms_per_token: 2}
sources: {all: test numbers}
"""
STEP_BASE_MS, PREFILL_MS_PER_TOKEN, DECODE_MS_PER_SEQ = 100.0, 2.0, 1.0

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sim_url(module_app, tmp_path_factory) -> str:
    profile = tmp_path_factory.mktemp("profiles") / "slow-test.yaml"
    profile.write_text(PROFILE)
    config = AppConfig.model_validate({
        "ingress_placement": "separate",
        "models": [{"model": {"source": "default", "served_model_name": NAME},
                    "engine": {"backend": "simulated", "simulated": {"profile": str(profile)}},
                    "deployment": {"num_replicas": 2, "num_cpus": 0.1}}],
        "admission": {"request_timeout_s": 60},
    })
    return module_app(config, "serve_app_simulated", "/sim")


@pytest.fixture
def client(sim_url):
    from openai import OpenAI

    return OpenAI(base_url=f"{sim_url}/v1", api_key="unused", max_retries=0, timeout=60)


def test_a_streamed_chat_follows_the_profile(client):
    start_s = time.monotonic()
    stream = client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "Tell me a story."}],
                                            max_tokens=5, stream=True, stream_options={"include_usage": True})
    first_output_s, text, usage, timings = None, "", None, None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            first_output_s = first_output_s or time.monotonic()
            text += chunk.choices[0].delta.content
        if chunk.usage is not None:
            usage, timings = chunk.usage, chunk.model_extra["timings"]
    end_s = time.monotonic()
    assert len(text.split()) == 5 and usage.completion_tokens == 5
    # SmolLM2's tokenizer and chat template count the prompt (its default system prompt included).
    assert usage.prompt_tokens > 20
    expected_prefill_ms = STEP_BASE_MS + PREFILL_MS_PER_TOKEN * usage.prompt_tokens
    assert expected_prefill_ms <= timings["prefill_ms"] < expected_prefill_ms + 50
    client_ttft_ms = (first_output_s - start_s) * 1000
    assert expected_prefill_ms <= client_ttft_ms < expected_prefill_ms + 1000
    # Four decode steps of 100 + 1 ms each after the first token.
    assert 4 * (STEP_BASE_MS + DECODE_MS_PER_SEQ) - 1 <= timings["decode_ms"] < 4 * 101 + 100
    # ... which the client sees spread out too (a few ms of slack: frames can reach the client closer together
    # than the server sent them).
    assert (end_s - first_output_s) * 1000 >= 4 * 100 - 20


def test_a_whole_completion_answers_with_usage_and_the_replica(sim_url):
    response = httpx.post(f"{sim_url}/v1/completions", timeout=60,
                          json={"model": NAME, "prompt": "Once upon a time", "max_tokens": 3})
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "text_completion" and body["usage"]["completion_tokens"] == 3
    assert len(body["choices"][0]["text"].split()) == 3
    assert response.headers.get("x-serve-app-replica")
    assert body["timings"]["ttft_ms"] >= STEP_BASE_MS


def test_concurrent_requests_batch_on_two_replicas_and_metrics_show_them(sim_url):
    import concurrent.futures

    def one(i: int) -> httpx.Response:
        return httpx.post(f"{sim_url}/v1/completions", timeout=60,
                          json={"model": NAME, "prompt": f"request {i} " * 10, "max_tokens": 20})

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        responses = list(pool.map(one, range(12)))
    assert all(r.status_code == 200 for r in responses)
    replicas = {r.headers.get("x-serve-app-replica") for r in responses}
    assert len(replicas) == 2, replicas
    text = httpx.get(f"{sim_url}/metrics", timeout=10).text
    assert "serve_app_requests_total" in text or "serve_app_ingress_requests_total" in text
    deadline_s = time.monotonic() + 30
    while time.monotonic() < deadline_s:  # the engine gauges drain to zero once the requests are done
        if read_gauge(sim_url, "serve_app_engine_running_requests") == 0:
            break
        time.sleep(1)
    assert read_gauge(sim_url, "serve_app_engine_running_requests") == 0
    assert read_gauge(sim_url, "serve_app_engine_waiting_requests") == 0


def test_a_request_beyond_max_model_len_is_a_fast_400(client):
    import openai

    with pytest.raises(openai.BadRequestError) as raised:
        client.completions.create(model=NAME, prompt="hello", max_tokens=5000)
    assert raised.value.status_code == 400
