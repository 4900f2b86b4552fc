"""The end-to-end checks of tests/integration, on CUDA with the official vllm (run: bash scripts/gpu_test.sh)."""

import socket

import httpx
import pytest

from serve_app.config import AppConfig

pytestmark = pytest.mark.gpu


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def gpu_app():
    import ray
    from ray import serve

    from serve_app.app import build_graph

    config = AppConfig.model_validate({
        "model": {"source": "default"},
        "engine": {"dtype": "float32", "max_model_len": 2048, "gpu_memory_utilization": 0.5, "enforce_eager": True},
        "model_deployment": {"num_gpus": 1, "num_cpus": 1},
    })
    port = _free_port()
    ray.init(address="local", include_dashboard=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_graph(config), name="serve_app_gpu", route_prefix="/")
    yield f"http://127.0.0.1:{port}", config
    serve.shutdown()
    ray.shutdown()


def test_paris_streaming_with_openai_client(gpu_app):
    from openai import OpenAI

    url, config = gpu_app
    client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    stream = client.chat.completions.create(
        model=config.model.resolved_name(), messages=[{"role": "user", "content": "What is the capital of France?"}],
        temperature=0, max_tokens=20, stream=True,
    )
    assert "Paris" in "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def test_greedy_equals_transformers(gpu_app):
    from serve_app.platform.models import resolve_model_path
    from tests.integration.test_graph_behaviour import PROMPT, hf_greedy_ids

    url, config = gpu_app
    path = resolve_model_path(config.model)
    from transformers import AutoTokenizer

    expected = AutoTokenizer.from_pretrained(path).decode(hf_greedy_ids(path, PROMPT, 16))
    body = {"model": config.model.resolved_name(), "prompt": PROMPT, "max_tokens": 16, "temperature": 0, "ignore_eos": True}
    assert httpx.post(f"{url}/v1/completions", json=body, timeout=120).json()["choices"][0]["text"] == expected
