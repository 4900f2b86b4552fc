"""Short versions of the overload and soak benchmarks (benchmarks/overload_soak.py) on the real graph.

Overload: far more concurrent streams than the admission limit. The excess gets a 429 with
`Retry-After` in the OpenAI error format, answered before any admitted stream finishes (rejections are
never queued behind generation), and every admitted stream completes.

Soak: sustained load on the shared app while the memory of its replica processes (and the engine
process) is sampled; every request ends complete, and no process keeps growing after warm-up.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from loadtest.config import LoadTestConfig
from loadtest.experiment import records_of, run_experiment
from loadtest.resilience import MemorySampler, outcome_counts, process_tree
from tests.integration.conftest import MAIN_APP, replica_processes

pytestmark = pytest.mark.integration

ADMISSION_LIMIT = 8  # tiny_app_url's admission.max_in_flight_requests


async def _stream(client: httpx.AsyncClient, url: str) -> dict:
    body = {"model": "tiny-llama", "prompt": "Tell me a story", "max_tokens": 400, "ignore_eos": True, "stream": True}
    start = asyncio.get_running_loop().time()
    async with client.stream("POST", f"{url}/v1/completions", json=body) as response:
        status_s = asyncio.get_running_loop().time() - start
        text = (await response.aread()).decode()
        return {"status": response.status_code, "status_s": status_s, "headers": response.headers, "body": text,
                "end_s": asyncio.get_running_loop().time() - start}


async def _burst(url: str, n: int) -> list[dict]:
    async with httpx.AsyncClient(timeout=120) as client:
        return await asyncio.gather(*(_stream(client, url) for _ in range(n)))


def test_overload_is_refused_fast_and_admitted_streams_complete(tiny_app_url):
    results = asyncio.run(_burst(tiny_app_url, 5 * ADMISSION_LIMIT))
    admitted = [r for r in results if r["status"] == 200]
    rejected = [r for r in results if r["status"] == 429]
    assert len(admitted) + len(rejected) == len(results), {r["status"] for r in results}
    assert 1 <= len(admitted) <= ADMISSION_LIMIT and len(rejected) >= len(results) - ADMISSION_LIMIT
    for r in rejected:
        assert int(r["headers"]["retry-after"]) >= 0
        error = httpx.Response(429, content=r["body"]).json()["error"]
        assert error["type"] == "rate_limit_error" and error["code"] == "server_overloaded" and error["message"]
    for r in admitted:
        assert r["body"].rstrip().endswith("data: [DONE]") and '"error"' not in r["body"]
    # Rejections are answered, not queued: the slowest 429 came before the first admitted stream ended.
    assert max(r["end_s"] for r in rejected) < min(r["end_s"] for r in admitted)


def _main_app_processes() -> dict[int, str]:
    processes: dict[int, str] = {}
    for replica in replica_processes(MAIN_APP):
        processes.update(process_tree(replica.pid))
    return processes


def test_soak_memory_is_flat_and_every_request_completes(serve_app_url, served_model_name):
    config = LoadTestConfig(base_url=serve_app_url, model=served_model_name, concurrency=4, duration_s=45,
                            input_tokens=32, max_tokens=24, ignore_eos=True, request_timeout_s=120)
    run_experiment(config.model_copy(update={"duration_s": None, "num_requests": 8}), progress=False)  # warm-up
    with MemorySampler(_main_app_processes, interval_s=1.0) as sampler:
        result = run_experiment(config, progress=False)
    counts = outcome_counts(records_of(result))
    assert counts["complete"] >= 8 and counts["complete"] == sum(counts.values()), counts
    growth = sampler.growth(warmup_fraction=0.3)  # pid -> {name (first seen), first_mb, last_mb, growth}
    names = {pid: g["name"] for pid, g in growth.items()}
    assert any(name.startswith("VLLM::EngineCor") for name in names.values()), f"engine process not sampled: {names}"
    sizable = {pid: g for pid, g in growth.items() if g["last_mb"] >= 50 and g["growth"] is not None}
    assert sizable, growth
    grown = {f"{g['name']}[{pid}]": f"{g['growth']:+.1%}" for pid, g in sizable.items() if g["growth"] >= 0.05}
    assert not grown, f"memory still growing after warm-up: {grown}"
