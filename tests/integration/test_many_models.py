"""Several models and an adapter behind one endpoint, on a real Ray Serve app with real vLLM engines.

The app: SmolLM2 (the default model) and the tiny model with two replicas and a LoRA adapter built locally with
peft. The ingress routes by `model`; the tiny model's replicas sit behind the prefix-affinity router.
"""

from __future__ import annotations

import re
import time
from collections import defaultdict

import httpx
import pytest

from serve_app.config import AppConfig
from serve_app.ingress.relay import REPLICA_HEADER
from serve_app.platform.adapters import prepare_test_adapter
from serve_app.platform.models import resolve_model_path
from tests.browser.support import browser, open_page, requires_browser  # noqa: F401  (browser: shared fixture)
from tests.integration.conftest import read_gauge
from tests.support_lora import greedy_token_ids

DEFAULT_NAME, TINY_NAME, ADAPTER_NAME = "SmolLM2-135M-Instruct", "tiny-llama", "tiny-lora"


@pytest.fixture(scope="module")
def tiny_path() -> str:
    return resolve_model_path(AppConfig.model_validate({"model": {"source": "tiny"}}).model)


@pytest.fixture(scope="module")
def adapter_path(tiny_path, tmp_path_factory) -> str:
    return str(prepare_test_adapter(tiny_path, tmp_path_factory.mktemp("adapters") / ADAPTER_NAME))


@pytest.fixture(scope="module")
def multi_url(module_app, adapter_path) -> str:
    config = AppConfig.model_validate({
        "models": [
            {"model": {"source": "default"}, "engine": {"max_num_seqs": 8}},
            {"model": {"source": "tiny", "adapters": [{"name": ADAPTER_NAME, "path": adapter_path}]},
             "engine": {"max_num_seqs": 8}, "deployment": {"num_replicas": 2, "num_cpus": 0.5}},
        ],
        "admission": {"request_timeout_s": 120},
    })
    return module_app(config, "serve_app_many_models", "/many")


@pytest.fixture
def client(multi_url):
    from openai import OpenAI

    return OpenAI(base_url=f"{multi_url}/v1", api_key="unused", max_retries=0, timeout=120)


def test_models_lists_every_model_and_adapter(client):
    listed = {m.id: m for m in client.models.list().data}
    assert set(listed) == {DEFAULT_NAME, TINY_NAME, ADAPTER_NAME}
    assert listed[ADAPTER_NAME].model_extra["parent"] == TINY_NAME
    assert listed[DEFAULT_NAME].model_extra["parent"] is None


@pytest.mark.parametrize("model", [DEFAULT_NAME, TINY_NAME, ADAPTER_NAME])
def test_each_model_answers_by_name_streamed_and_whole(client, model):
    whole = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Name a colour."}],
                                           max_tokens=6, temperature=0)
    assert whole.model == model and whole.usage.completion_tokens > 0
    chunks = list(client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi"}],
                                                 max_tokens=6, temperature=0, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[-1].usage.completion_tokens > 0
    assert {chunk.model for chunk in chunks} == {model}


def test_a_request_without_model_goes_to_the_first_model(multi_url):
    response = httpx.post(f"{multi_url}/v1/chat/completions", timeout=120,
                          json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3})
    assert response.status_code == 200 and response.json()["model"] == DEFAULT_NAME


def test_an_unknown_model_is_a_404_in_the_openai_format_naming_the_served_ones(multi_url):
    response = httpx.post(f"{multi_url}/v1/completions", timeout=30,
                          json={"model": "gpt-4", "prompt": "Hi", "max_tokens": 3})
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "model_not_found" and error["param"] == "model"
    for name in (DEFAULT_NAME, TINY_NAME, ADAPTER_NAME):
        assert name in error["message"]


def test_adapter_output_equals_transformers_peft_and_differs_from_the_base(multi_url, tiny_path, adapter_path):
    prompt_ids = list(range(5, 37))
    expected_adapter = greedy_token_ids(tiny_path, prompt_ids, 16, adapter_path=adapter_path)
    expected_base = greedy_token_ids(tiny_path, prompt_ids, 16)
    assert expected_adapter != expected_base  # the adapter really changes the model

    def served(model: str) -> list[int]:
        response = httpx.post(f"{multi_url}/v1/completions", timeout=120, json={
            "model": model, "prompt": prompt_ids, "max_tokens": 16, "temperature": 0, "ignore_eos": True,
            "return_token_ids": True, "seed": 0})
        assert response.status_code == 200, response.text[:300]
        return response.json()["choices"][0]["token_ids"]

    # Several times, alternating: both replicas end up serving both, and a base request never gets the adapter.
    for _ in range(3):
        assert served(ADAPTER_NAME) == expected_adapter
        assert served(TINY_NAME) == expected_base


def test_prefix_affinity_sends_a_shared_system_prompt_to_one_replica(multi_url):
    system_prompts = [f"You are assistant number {i}. " + "Follow the house style guide closely. " * 60
                      for i in range(4)]
    replicas: dict[int, set[str]] = defaultdict(set)
    for turn in range(4):
        for i, system in enumerate(system_prompts):
            response = httpx.post(f"{multi_url}/v1/chat/completions", timeout=120, json={
                "model": TINY_NAME, "max_tokens": 2, "temperature": 0,
                "messages": [{"role": "system", "content": system}, {"role": "user", "content": f"Question {turn}?"}]})
            assert response.status_code == 200, response.text[:300]
            replicas[i].add(response.headers[REPLICA_HEADER])
    # Requests go one at a time (no load gap), so every later turn follows its system prompt's first replica.
    assert all(len(seen) == 1 for seen in replicas.values()), dict(replicas)


def test_health_and_metrics_cover_every_model(multi_url):
    health = httpx.get(f"{multi_url}/health", timeout=30)
    assert health.status_code == 200
    assert health.json()["models"] == {DEFAULT_NAME: "ok", TINY_NAME: "ok"}
    # From the Serve controller: every replica of each model, not just the one that answered.
    assert health.json()["replicas"] == {DEFAULT_NAME: {"running": 1, "total": 1}, TINY_NAME: {"running": 2, "total": 2}}
    text = httpx.get(f"{multi_url}/metrics", timeout=30).text
    for name in (DEFAULT_NAME, TINY_NAME):
        assert re.search(rf'^serve_app_requests_total{{model="{name}",route="[^"]*/v1/chat/completions",status="200"}} '
                         r'[1-9]', text, re.MULTILINE), f"no 200s counted for {name}"
        assert read_gauge(multi_url, "serve_app_engine_healthy", model=name) == 1


def test_every_replica_reports_its_engine_through_ray_metrics(multi_url, serve_instance):
    """Ray's metrics port has one series per model server replica (two for the tiny model), tagged by replica."""
    url = f"http://127.0.0.1:{serve_instance['metrics_port']}/metrics"
    pattern = re.compile(r'^ray_serve_app_replica_engine_healthy\{([^}]*)\} ([0-9.]+)$', re.MULTILINE)
    deadline = time.monotonic() + 60
    while True:
        series = [labels for labels, value in pattern.findall(httpx.get(url, timeout=10).text)
                  if "serve_app_many_models" in labels and float(value) == 1]
        replicas = {name: {re.search(r'replica="([^"]+)"', s).group(1) for s in series if f'model="{name}"' in s}
                    for name in (DEFAULT_NAME, TINY_NAME)}
        if (len(replicas[DEFAULT_NAME]), len(replicas[TINY_NAME])) == (1, 2) or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert (len(replicas[DEFAULT_NAME]), len(replicas[TINY_NAME])) == (1, 2), replicas


def test_ingress_counts_reach_ray_metrics_tagged_by_replica(multi_url, serve_instance):
    """The separate ingress's request counter, mirrored into Ray's metrics (serve_app/ingress/ray_metrics_mirror.py),
    appears on Ray's metrics port per ingress replica, with the model and status labels."""
    assert httpx.post(f"{multi_url}/v1/completions", json={"model": TINY_NAME, "prompt": "Hi", "max_tokens": 2},
                      timeout=60).status_code == 200
    url = f"http://127.0.0.1:{serve_instance['metrics_port']}/metrics"
    pattern = re.compile(r'^ray_serve_app_ingress_requests_total\{([^}]*)\} ([0-9.e+]+)$', re.MULTILINE)
    deadline = time.monotonic() + 60
    while True:
        series = [labels for labels, value in pattern.findall(httpx.get(url, timeout=10).text)
                  if 'application="serve_app_many_models"' in labels and f'model="{TINY_NAME}"' in labels
                  and 'status="200"' in labels and float(value) >= 1]
        if series or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert series, "no mirrored ingress request counter on Ray's metrics port"
    assert all('replica="' in labels and 'deployment="Ingress"' in labels for labels in series), series


@requires_browser
def test_the_playground_model_picker_lists_every_model_and_answers_with_the_chosen_one(browser, multi_url):
    from playwright.sync_api import expect

    def served_by_tiny() -> float:
        text = httpx.get(f"{multi_url}/metrics", timeout=30).text
        return sum(float(v) for v in re.findall(rf'^serve_app_requests_total{{model="{TINY_NAME}",[^}}]*status="200"}} (\S+)$',
                                                 text, re.MULTILINE))

    with open_page(browser) as page:
        page.goto(f"{multi_url}/playground")
        picker = page.locator("#model")
        expect(picker).to_have_attribute("data-loaded", "3", timeout=30_000)
        options = picker.locator("option").all_inner_texts()
        assert {DEFAULT_NAME, TINY_NAME, ADAPTER_NAME} <= {o.strip() for o in options}, options
        before = served_by_tiny()
        picker.select_option(ADAPTER_NAME)
        page.fill("#max-tokens", "8")
        page.fill("#prompt", "Hello")
        page.click("#send")
        answer = page.locator('[data-testid="assistant-message"]').last
        expect(answer).to_have_attribute("data-state", "done", timeout=120_000)
    assert served_by_tiny() == before + 1  # the adapter's request went to the tiny model's replicas
