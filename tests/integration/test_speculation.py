"""Speculative decoding as the default (`engine.speculation.mode: auto`) serves it, through the whole graph.

The session apps run the default configuration, so at one user n-gram speculation is on (the auto schedule's
small-batch range). Every test checks, from the server's own /metrics, that drafts were really accepted while it
ran, so none of them can pass with speculation silently off. The reference is transformers' float32 greedy
decoding of the same checkpoint, one token at a time, no speculation.
"""

from __future__ import annotations

import json

import httpx
import pytest

from loadtest.prompt_sets import prompt_set
from loadtest.server_metrics import parse_speculation
from loadtest.sse import sse_data
from serve_app.config import ModelConfig
from serve_app.platform.models import resolve_model_path

pytestmark = pytest.mark.integration

COPY = prompt_set("copy", 3)


class Reference:
    """transformers float32 greedy decoding (and per-position log-probabilities) of one checkpoint."""

    def __init__(self, model_path: str):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)

    def chat_prompt_ids(self, messages: list[dict]) -> list[int]:
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                  return_dict=False)

    def greedy(self, prompt_ids: list[int], max_new_tokens: int, ignore_eos: bool = False) -> list[int]:
        with self.torch.no_grad():
            out = self.model.generate(self.torch.tensor([prompt_ids]), max_new_tokens=max_new_tokens, do_sample=False,
                                      min_new_tokens=max_new_tokens if ignore_eos else 0)
        ids = out[0, len(prompt_ids):].tolist()
        return ids[:-1] if not ignore_eos and ids and ids[-1] == self.tokenizer.eos_token_id else ids

    def logprobs(self, prompt_ids: list[int], output_ids: list[int]) -> list[float]:
        with self.torch.no_grad():
            logits = self.model(self.torch.tensor([prompt_ids + output_ids])).logits[0]
        logp = self.torch.log_softmax(logits.float(), dim=-1)
        start = len(prompt_ids) - 1
        return [logp[start + i, token].item() for i, token in enumerate(output_ids)]

    def text(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)


@pytest.fixture(scope="module")
def reference(model_path) -> Reference:
    return Reference(model_path)


def accepted_tokens(base_url: str) -> float:
    totals = parse_speculation(httpx.get(f"{base_url}/metrics", timeout=10).text)
    assert totals is not None, "no speculation counters in /metrics"
    return totals["accepted_tokens"]


@pytest.fixture
def speculation_used(serve_app_url):
    """Fails the test unless the engine accepted draft tokens while it ran."""
    before = accepted_tokens(serve_app_url)
    yield
    assert accepted_tokens(serve_app_url) > before, "no draft token was accepted: speculation was not exercised"


def chat(base_url: str, body: dict) -> dict:
    response = httpx.post(f"{base_url}/v1/chat/completions", json=body, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def stream_chat(base_url: str, body: dict) -> tuple[str, list[dict], dict, str]:
    """(text, logprob entries, usage, finish_reason) of a streamed chat completion."""
    body = body | {"stream": True, "stream_options": {"include_usage": True}}
    text, logprobs, usage, finish = "", [], {}, None
    with httpx.Client(timeout=120) as client, client.stream("POST", f"{base_url}/v1/chat/completions",
                                                            json=body) as response:
        assert response.status_code == 200
        for data in sse_data(response.iter_bytes()):
            if not data.startswith("{"):
                continue
            chunk = json.loads(data)
            usage = chunk.get("usage") or usage
            for choice in chunk.get("choices") or []:
                text += choice["delta"].get("content") or ""
                logprobs += (choice.get("logprobs") or {}).get("content") or []
                finish = choice.get("finish_reason") or finish
    return text, logprobs, usage, finish


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_greedy_output_with_speculation_equals_the_reference_token_for_token(
        serve_app_url, served_model_name, reference, speculation_used, stream):
    for messages in COPY:
        expected_ids = reference.greedy(reference.chat_prompt_ids(messages), 80)
        body = {"model": served_model_name, "messages": messages, "temperature": 0, "max_tokens": 80}
        if stream:
            text, _, usage, _ = stream_chat(serve_app_url, body)
        else:
            result = chat(serve_app_url, body)
            text, usage = result["choices"][0]["message"]["content"], result["usage"]
        assert text == reference.text(expected_ids)
        assert usage["completion_tokens"] in (len(expected_ids), len(expected_ids) + 1)  # + EOS when it ended


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_max_tokens_and_usage_stay_exact_when_several_tokens_arrive_per_step(
        serve_app_url, served_model_name, reference, speculation_used, stream):
    messages = COPY[0]
    for max_tokens in (5, 13):
        expected_ids = reference.greedy(reference.chat_prompt_ids(messages), max_tokens, ignore_eos=True)
        body = {"model": served_model_name, "messages": messages, "temperature": 0, "max_tokens": max_tokens}
        if stream:
            text, _, usage, finish = stream_chat(serve_app_url, body)
        else:
            result = chat(serve_app_url, body)
            text, usage = result["choices"][0]["message"]["content"], result["usage"]
            finish = result["choices"][0]["finish_reason"]
        assert (text, usage["completion_tokens"], finish) == (reference.text(expected_ids), max_tokens, "length")
        assert usage["prompt_tokens"] == len(reference.chat_prompt_ids(messages))


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_stop_string_inside_an_accepted_draft_ends_the_text_right_before_it(
        serve_app_url, served_model_name, reference, speculation_used, stream):
    messages = COPY[0]
    full = reference.text(reference.greedy(reference.chat_prompt_ids(messages), 80))
    stop = "arrived damaged"  # the message's own words: copied, so reached inside an accepted draft
    assert stop in full
    body = {"model": served_model_name, "messages": messages, "temperature": 0, "max_tokens": 80, "stop": [stop]}
    if stream:
        text, _, _, finish = stream_chat(serve_app_url, body)
    else:
        result = chat(serve_app_url, body)
        text, finish = result["choices"][0]["message"]["content"], result["choices"][0]["finish_reason"]
    assert (text, finish) == (full[:full.index(stop)], "stop")


def test_logprobs_under_speculation_are_the_models_own_one_per_token(
        serve_app_url, served_model_name, reference, speculation_used):
    messages = COPY[1]
    prompt_ids = reference.chat_prompt_ids(messages)
    expected_ids = reference.greedy(prompt_ids, 40, ignore_eos=True)
    body = {"model": served_model_name, "messages": messages, "temperature": 0, "max_tokens": 40, "logprobs": True,
            "top_logprobs": 2}
    text, entries, usage, _ = stream_chat(serve_app_url, body)
    assert len(entries) == usage["completion_tokens"] == 40
    assert "".join(e["token"] for e in entries) == text == reference.text(expected_ids)
    for entry, expected in zip(entries, reference.logprobs(prompt_ids, expected_ids)):
        assert entry["logprob"] == pytest.approx(expected, abs=2e-3)
        assert entry["logprob"] >= max(t["logprob"] for t in entry["top_logprobs"]) - 1e-4  # greedy: the top one


def test_tiny_model_greedy_completion_with_speculation_equals_the_reference(tiny_app_url):
    tiny = Reference(resolve_model_path(ModelConfig(source="tiny")))
    prompt = "one two three four one two three four one two three four one two"
    prompt_ids = tiny.tokenizer(prompt).input_ids
    expected = tiny.text(tiny.greedy(prompt_ids, 48, ignore_eos=True))
    before = accepted_tokens(tiny_app_url)
    for stream in (False, True):
        body = {"model": "tiny-llama", "prompt": prompt, "max_tokens": 48, "temperature": 0, "ignore_eos": True,
                "stream": stream}
        if stream:
            with httpx.Client(timeout=120) as client, client.stream("POST", f"{tiny_app_url}/v1/completions",
                                                                    json=body) as response:
                chunks = [json.loads(data) for data in sse_data(response.iter_bytes()) if data.startswith("{")]
                text = "".join(chunk["choices"][0]["text"] for chunk in chunks if chunk["choices"])
        else:
            text = httpx.post(f"{tiny_app_url}/v1/completions", json=body, timeout=120).json()["choices"][0]["text"]
        assert text == expected
    assert accepted_tokens(tiny_app_url) > before, "the tiny model accepted no draft: speculation not exercised"
