"""The 90-second 4x step trace (loadtest/traces/step_short.jsonl) replayed open loop against an app on the fake GPU
cluster (simulated engines, one per {"GPU": 1} node, nodes that take 10 s to boot), for the autoscaling tests.
Starts and stops its own Ray cluster: its tests are marked own_ray_cluster and run before the session's Ray."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field

APP = "replay_test"
MODEL_DEPLOYMENT = "ModelServer"


def replay_config(**overrides):
    """Simulated engines of 4 rows behind a latency-target policy with decisions in seconds (1 to 4 replicas)."""
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
        **overrides,
    })


def running_replicas() -> int:
    from ray import serve

    app = serve.status().applications.get(APP)
    if app is None or MODEL_DEPLOYMENT not in app.deployments:
        return 0
    return int(app.deployments[MODEL_DEPLOYMENT].replica_states.get("RUNNING", 0))


def read_metric(base_url: str, name: str) -> float | None:
    """One series' value from the app's /metrics (None: not there)."""
    import httpx

    try:  # a scrape waits up to 15 s for every engine's stats; during a scale change one may not answer
        text = httpx.get(f"{base_url}/metrics", timeout=20).text
    except httpx.HTTPError:
        return None
    match = re.search(rf"^{name}(?:\{{[^}}]*\}})? ([0-9.e+-]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


@dataclass
class ReplayRun:
    records: list = field(default_factory=list)
    replicas_seen: list[int] = field(default_factory=list)  # the model deployment's running replicas, each second
    metric_seen: list[float | None] = field(default_factory=list)  # `metric` from /metrics, each second
    gpu_nodes_at_end: int = 0


def run_step_replay(config, metric: str | None = None, metric_settles_to: float | None = None) -> ReplayRun:
    """Replay the step trace, then wait (up to 120 s) for the deployment to come back to one replica; with
    `metric_settles_to`, then up to 15 s more for `metric` to read that value (its last sample is the last read)."""
    import httpx
    from ray import serve

    from loadtest.replay import plan_replay, replay
    from loadtest.traces.format import read_trace
    from loadtest.traces.generate import TRACES_DIR
    from loadtest.workload import PromptFactory
    from serve_app.app import build_graph
    from serve_app.platform.fake_gpu_cluster import (FakeGpuCluster, FakeGpuClusterSpec, free_port,
                                                       start_serve_on_one_host)
    from serve_app.platform.models import resolve_model_path

    trace = read_trace(TRACES_DIR / "step_short.jsonl")
    run = ReplayRun()
    with FakeGpuCluster(FakeGpuClusterSpec(max_gpu_nodes=4, node_start_delay_s=10, idle_timeout_s=20)) as cluster:
        port = free_port()
        start_serve_on_one_host(port)
        serve.run(build_graph(config), name=APP, route_prefix="/", blocking=False)
        base_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and running_replicas() < 1:
            time.sleep(1)
        assert running_replicas() == 1
        health = httpx.get(f"{base_url}/health", timeout=10)
        assert health.status_code == 200, health.text[:500]

        async def scenario():
            async def sample():
                while True:
                    run.replicas_seen.append(await asyncio.to_thread(running_replicas))
                    if metric is not None:
                        run.metric_seen.append(await asyncio.to_thread(read_metric, base_url, metric))
                    await asyncio.sleep(1)

            sampler = asyncio.create_task(sample())
            try:
                # Prompts of exactly the trace's token counts in the served model's tokenizer.
                plans = plan_replay(trace, factory=PromptFactory(resolve_model_path(config.model)))
                run.records = await replay(plans, base_url=base_url, model=config.model.resolved_name(),
                                           timeout_s=300)
                # After the step the load is back at a quarter: the deployment must return to one replica.
                end = time.monotonic() + 120
                while time.monotonic() < end and (not run.replicas_seen or run.replicas_seen[-1] != 1):
                    await asyncio.sleep(1)
                await asyncio.sleep(2)  # one more sample at one replica
            finally:
                sampler.cancel()
            if metric is not None and metric_settles_to is not None:
                end = time.monotonic() + 15
                while time.monotonic() < end and run.metric_seen[-1:] != [metric_settles_to]:
                    run.metric_seen.append(await asyncio.to_thread(read_metric, base_url, metric))
                    await asyncio.sleep(1)

        asyncio.run(scenario())
        run.gpu_nodes_at_end = len(cluster.gpu_nodes())
    return run
