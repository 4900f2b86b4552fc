"""A short autoscaling replay on the fake GPU cluster (issue 28 item 6): simulated engines, one per {"GPU": 1}
node, nodes that take 10 s to boot; the 90-second 4x step trace (loadtest/traces/step_short.jsonl) replayed
open loop. The model deployment must grow past one replica during the step and come back to one after it, and
no request may fail (a 429 counts as a failure here: the admission limits are far above this load).

Starts and stops its own Ray cluster (marked own_ray_cluster: it runs before the session's Ray starts):
`pytest tests/integration/test_autoscale_replay.py`.
"""

from __future__ import annotations

import asyncio
import time

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.own_ray_cluster]

APP = "replay_test"
MODEL_DEPLOYMENT = "ModelServer"


@pytest.fixture(autouse=True)
def _no_ray_in_this_process():
    import ray

    if ray.is_initialized():
        pytest.fail("Ray is already initialized in this process: own_ray_cluster tests must run first")


def _config():
    from serve_app.config import AppConfig

    return AppConfig.model_validate({
        "model": {"source": "tiny"},
        "engine": {"backend": "simulated", "max_num_seqs": 4,
                   "simulated": {"profile": "gpu-h100-llama3.1-8b", "load_time_s": 3, "max_num_seqs": 4,
                                 "step_time_scale": 10}},
        "model_deployment": {
            "num_replicas": "auto", "min_replicas": 1, "max_replicas": 4, "num_cpus": 0.1, "num_gpus": 1,
            "max_ongoing_requests": 256, "upscale_delay_s": 2, "downscale_delay_s": 10,
            "latency_targets": {"ttft_p99_ms": 1000, "tpot_p99_ms": 100, "window_s": 8, "report_interval_s": 1,
                                "min_samples": 3, "max_waiting_per_replica": 2, "queue_lookahead_s": 5},
        },
        "admission": {"max_in_flight_requests": 512, "request_timeout_s": 300},
    })


def _running_replicas() -> int:
    from ray import serve

    app = serve.status().applications.get(APP)
    if app is None or MODEL_DEPLOYMENT not in app.deployments:
        return 0
    return int(app.deployments[MODEL_DEPLOYMENT].replica_states.get("RUNNING", 0))


def test_a_short_step_replay_scales_up_and_back_down_without_a_failed_request():
    import httpx
    from ray import serve

    from loadtest.replay import plan_replay, replay
    from loadtest.workload import PromptFactory
    from serve_app.platform.models import resolve_model_path
    from loadtest.traces.format import read_trace
    from loadtest.traces.generate import TRACES_DIR
    from serve_app.app import build_graph
    from serve_app.platform.fake_gpu_cluster import (FakeGpuCluster, FakeGpuClusterSpec, free_port,
                                                       start_serve_on_one_host)

    trace = read_trace(TRACES_DIR / "step_short.jsonl")
    config = _config()
    with FakeGpuCluster(FakeGpuClusterSpec(max_gpu_nodes=4, node_start_delay_s=10, idle_timeout_s=20)) as cluster:
        port = free_port()
        start_serve_on_one_host(port)
        serve.run(build_graph(config), name=APP, route_prefix="/", blocking=False)
        base_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and _running_replicas() < 1:
            time.sleep(1)
        assert _running_replicas() == 1
        assert httpx.get(f"{base_url}/health", timeout=10).status_code == 200

        replicas_seen: list[int] = []

        async def scenario():
            async def sample():
                while True:
                    replicas_seen.append(await asyncio.to_thread(_running_replicas))
                    await asyncio.sleep(1)

            sampler = asyncio.create_task(sample())
            try:
                # Prompts of exactly the trace's token counts in the served model's tokenizer.
                plans = plan_replay(trace, factory=PromptFactory(resolve_model_path(config.model)))
                records = await replay(plans, base_url=base_url, model=config.model.resolved_name(),
                                       timeout_s=300)
                # After the step the load is back at a quarter: the deployment must return to one replica.
                end = time.monotonic() + 120
                while time.monotonic() < end and replicas_seen[-1] != 1:
                    await asyncio.sleep(1)
            finally:
                sampler.cancel()
            return records

        records = asyncio.run(scenario())
        gpu_nodes_at_end = len(cluster.gpu_nodes())

    failures = [(r.status_code, r.error_kind, r.error) for r in records if not r.ok]
    assert not failures, failures[:5]
    assert all(r.output_tokens_server == r.max_tokens for r in records)
    peak = max(replicas_seen)
    assert peak >= 2, f"never scaled up: {replicas_seen}"
    assert replicas_seen[-1] == 1, f"did not come back to one replica: {replicas_seen[-20:]}"
    assert gpu_nodes_at_end >= 1
