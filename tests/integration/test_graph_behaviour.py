"""Behaviour of the whole graph that users rely on: exact greedy output, batching, aborts, sharding."""

import asyncio
import re
import statistics
import time

import httpx
import pytest

from loadtest.sse import sse_data
from tests.integration.conftest import make_test_config
from tests.integration.timings_check import assert_timings_add_up

pytestmark = pytest.mark.integration

PROMPT = "The three primary colors are"


def hf_greedy_ids(model_path: str, prompt: str, num_tokens: int) -> list[int]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    input_ids = tok(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(input_ids, max_new_tokens=num_tokens, do_sample=False, min_new_tokens=num_tokens)
    return out[0, input_ids.shape[1]:].tolist()


def test_greedy_output_equals_transformers_token_for_token(openai_client, served_model_name, model_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    expected_ids = hf_greedy_ids(model_path, PROMPT, 24)
    resp = openai_client.completions.create(
        model=served_model_name, prompt=PROMPT, max_tokens=24, temperature=0, extra_body={"ignore_eos": True}
    )
    assert resp.choices[0].text == tok.decode(expected_ids)
    assert resp.usage.completion_tokens == 24


def test_default_deployment_chat_answer_equals_transformers_float32(openai_client, served_model_name, model_path):
    """What a user of the default configuration gets (dtype auto) is the float32 reference, token for token."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    messages = [{"role": "user", "content": "What is the capital of France?"}]
    tok = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    prompt_ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt_ids]), max_new_tokens=20, do_sample=False)
    expected_ids = out[0, len(prompt_ids):].tolist()
    if expected_ids and expected_ids[-1] == tok.eos_token_id:
        expected_ids = expected_ids[:-1]
    expected = tok.decode(expected_ids, skip_special_tokens=True)
    assert "Paris" in expected
    resp = openai_client.chat.completions.create(model=served_model_name, messages=messages, temperature=0,
                                                 max_tokens=20)
    assert resp.choices[0].message.content == expected
    assert resp.usage.completion_tokens == len(out[0]) - len(prompt_ids)


async def test_sixteen_concurrent_streams_complete_and_interleave(async_openai_client, served_model_name):
    async def one(i):
        times = []
        stream = await async_openai_client.completions.create(
            model=served_model_name, prompt=f"Story number {i}:", max_tokens=12, temperature=0.7, seed=i,
            stream=True, extra_body={"ignore_eos": True},
        )
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].text:
                times.append(time.monotonic())
            if chunk.choices and chunk.choices[0].finish_reason:
                finish = chunk.choices[0].finish_reason
        return times, finish

    results = await asyncio.gather(*(one(i) for i in range(16)))
    assert all(finish == "length" for _, finish in results)
    spans = [(t[0], t[-1]) for t, _ in results]
    # Continuous batching: every stream's first token arrives before most other streams have finished.
    latest_first = max(s for s, _ in spans)
    earliest_last = min(e for _, e in spans)
    assert latest_first < earliest_last, "streams ran one after another, not batched"
    overlapping = sum(1 for s, e in spans for s2, e2 in spans if s < e2 and s2 < e) - 16
    assert overlapping >= 16 * 15 * 0.8


def test_client_disconnect_aborts_request_in_engine(serve_app_url, served_model_name, engine_running_requests):
    body = {"model": served_model_name, "prompt": "Write a very long story.", "max_tokens": 1500,
            "stream": True, "ignore_eos": True}
    with httpx.Client(timeout=60) as client:
        with client.stream("POST", f"{serve_app_url}/v1/completions", json=body) as resp:
            assert resp.status_code == 200
            events = sse_data(resp.iter_bytes())  # kept referenced: dropping the iterator closes the connection
            received = 0
            while received < 3:
                received += next(events).startswith("{")
            assert engine_running_requests() >= 1
    disconnected_at = time.monotonic()
    while engine_running_requests() != 0:
        assert time.monotonic() - disconnected_at < 2.0, "request still running in the engine 2 s after disconnect"
        time.sleep(0.05)


def test_streamed_timings_add_up_to_the_server_ttft_and_match_the_clients(serve_app_url, served_model_name):
    results = assert_timings_add_up(serve_app_url, served_model_name)
    # Placement with_model: the model server runs in the ingress's process, its hand-off is a call.
    assert statistics.median(timings["handoff_ms"] for timings, _ in results) < 5.0, results
    # Streams feed the per-stage histogram too (output_ms is a stream's alone), with stages only, not ttft_ms.
    text = httpx.get(f"{serve_app_url}/metrics", timeout=10).text
    assert re.search(r'^serve_app_stage_latency_seconds_count\{[^}]*stage="output"[^}]*\} [1-9]', text, re.MULTILINE)
    assert not re.search(r'stage="(predicted_)?ttft"', text)


TINY_PROMPT = "The quick brown fox"


@pytest.fixture(scope="module")
def tiny_urls(tiny_app_url, module_app):
    """The tiny model on one worker (the session's) and on two tensor-parallel workers (SmolLM2's 9 heads do
    not split in 2)."""
    sharded = make_test_config(
        model={"source": "tiny"},
        engine={"tensor_parallel_size": 2, "cpu_omp_threads_bind": "0|1", "max_num_seqs": 8},
    )
    return tiny_app_url, module_app(sharded, "serve_app_tiny_tp2", "/tiny-tp2")


def test_tensor_parallel_2_matches_single_worker(tiny_urls):
    single_url, sharded_url = tiny_urls
    body = {"model": "tiny-llama", "prompt": TINY_PROMPT, "max_tokens": 32, "temperature": 0, "ignore_eos": True}
    single = httpx.post(f"{single_url}/v1/completions", json=body, timeout=120).json()
    sharded = httpx.post(f"{sharded_url}/v1/completions", json=body, timeout=120).json()
    assert sharded["usage"]["completion_tokens"] == 32
    assert sharded["choices"][0]["text"] == single["choices"][0]["text"]
