"""Latency-target autoscaling on multi-node Ray clusters on one machine (tiny model, real vLLM on CPU).

(a) `ray.cluster_utils.Cluster`: a head plus two raylets that each carry one {"accelerator": 1}, standing in
    for a GPU. Load makes the model deployment grow from 1 to 2 replicas, one per accelerator node, and
    shrink back once the load is a trickle; no request fails during either change.
(b) Ray's fake multi-node autoscaler: the head has no accelerator, so the model replica stays pending until
    the autoscaler launches an accelerator node for it.

Each test starts and stops its own Ray cluster (they cannot share the session app), so they run apart
from the other integration tests: `pytest tests/integration/test_autoscaling_multinode.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from loadtest.sse import async_sse_data
from serve_app.config import AppConfig
from serve_app.platform.fake_gpu_cluster import (add_node_with_retries, free_port, start_serve_on_one_host,
                                                   stop_process_group)

pytestmark = [pytest.mark.integration, pytest.mark.own_ray_cluster]


APP_NAME = "autoscale_app"
MODEL_DEPLOYMENT = "ModelServer"
PROMPT = "The quick brown fox jumps over the lazy dog. " * 3


def autoscaling_test_config(max_replicas: int = 2) -> AppConfig:
    """Tiny model, small batches (a queue forms fast), short windows and delays (decisions in seconds)."""
    return AppConfig.model_validate(
        {
            "model": {"source": "tiny"},
            "engine": {
                "dtype": "float32",
                "max_model_len": 256,
                "max_num_seqs": 4,
                "enforce_eager": True,
                "cpu_kvcache_space_gib": 1,
            },
            "model_deployment": {
                "num_replicas": "auto",
                "min_replicas": 1,
                "max_replicas": max_replicas,
                "num_cpus": 1,
                "resources": {"accelerator": 1},
                "max_ongoing_requests": 64,
                "upscale_delay_s": 2,
                "downscale_delay_s": 5,
                "latency_targets": {
                    "ttft_p99_ms": 5000,
                    "tpot_p99_ms": 1000,
                    "window_s": 10,
                    "max_waiting_per_replica": 2,
                    "queue_lookahead_s": 5,
                    "min_samples": 3,
                    "report_interval_s": 0.5,
                },
            },
            "ingress_deployment": {"num_cpus": 0.05},
            "admission": {"max_in_flight_requests": 256, "request_timeout_s": 120},
        }
    )


def deploy(config: AppConfig, http_port: int, timeout_s: float = 300) -> str:
    from ray import serve

    from serve_app.app import build_graph
    from serve_app.platform.models import resolve_model_path

    # Build the tiny checkpoint once here, not in two replicas at the same time.
    resolve_model_path(config.model)
    start_serve_on_one_host(http_port)
    serve.run(build_graph(config), name=APP_NAME, route_prefix="/", blocking=False)
    base_url = f"http://127.0.0.1:{http_port}"
    wait_for(lambda: health_ok(base_url), timeout_s=timeout_s, what="app healthy")
    return base_url


def health_ok(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/health", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def wait_for(predicate, timeout_s: float, what: str, period_s: float = 1.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(period_s)
    raise TimeoutError(f"timed out after {timeout_s:g} s waiting for: {what}")


def model_replica_nodes() -> list[str]:
    """Node ids of the model deployment's live replica actors."""
    import ray

    class_name = f"ServeReplica:{APP_NAME}:{MODEL_DEPLOYMENT}"
    nodes = []
    for actor in ray._private.state.actors().values():
        if actor.get("ActorClassName") == class_name and actor.get("State") in ("ALIVE", 2):
            nodes.append(actor["Address"]["NodeID"])
    return nodes


def running_model_replicas() -> int:
    from ray import serve

    app = serve.status().applications.get(APP_NAME)
    if app is None or MODEL_DEPLOYMENT not in app.deployments:
        return 0
    return int(app.deployments[MODEL_DEPLOYMENT].replica_states.get("RUNNING", 0))


class LoadGenerator:
    """Closed-loop streaming clients; every request must end with a finish_reason and no error."""

    def __init__(self, base_url: str, max_tokens: int = 48):
        self.base_url = base_url
        self.max_tokens = max_tokens
        self.num_ok = 0
        self.failures: list[str] = []
        self._tasks: list[asyncio.Task] = []
        self._stop = asyncio.Event()

    async def _one(self, client: httpx.AsyncClient) -> None:
        body = {
            "model": "tiny-llama",
            "prompt": PROMPT,
            "max_tokens": self.max_tokens,
            "ignore_eos": True,
            "stream": True,
        }
        finish_reason = None
        try:
            async with client.stream("POST", f"{self.base_url}/v1/completions", json=body) as response:
                if response.status_code != 200:
                    self.failures.append(f"HTTP {response.status_code}: {(await response.aread())[:200]!r}")
                    return
                async for data in async_sse_data(response.aiter_bytes()):
                    if data == "[DONE]":
                        continue
                    event = json.loads(data)
                    if "error" in event:
                        self.failures.append(f"stream error: {event['error']}")
                        return
                    finish_reason = event["choices"][0].get("finish_reason") or finish_reason
        except (httpx.HTTPError, json.JSONDecodeError) as exc:
            self.failures.append(f"{type(exc).__name__}: {exc}")
            return
        if finish_reason is None:
            self.failures.append("stream ended without a finish_reason")
        else:
            self.num_ok += 1

    async def _client_loop(self, stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(timeout=120) as client:
            while not stop.is_set() and not self._stop.is_set():
                await self._one(client)

    def start(self, concurrency: int) -> asyncio.Event:
        """Adds `concurrency` clients; setting the returned event stops just those."""
        stop = asyncio.Event()
        self._tasks += [asyncio.create_task(self._client_loop(stop)) for _ in range(concurrency)]
        return stop

    async def close(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


async def poll(predicate, timeout_s: float, what: str, period_s: float = 1.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = await asyncio.to_thread(predicate)
        if value:
            return value
        await asyncio.sleep(period_s)
    raise TimeoutError(f"timed out after {timeout_s:g} s waiting for: {what}")


# ---------------------------------------------------------------------------------------------- (a)


@contextlib.contextmanager
def ray_memory_monitor_off():
    """Raylets started inside inherit RAY_memory_monitor_refresh_ms=0.

    Ray's memory monitor kills workers (the Serve controller included) once the *machine* passes 95% memory,
    whoever uses it; on a shared CI machine that turns other jobs' load into failures of this test.
    """
    previous = os.environ.get("RAY_memory_monitor_refresh_ms")
    os.environ["RAY_memory_monitor_refresh_ms"] = "0"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("RAY_memory_monitor_refresh_ms", None)
        else:
            os.environ["RAY_memory_monitor_refresh_ms"] = previous


@pytest.fixture
def accelerator_cluster():
    """Head (CPU stages, controller, proxy) + two raylets with one accelerator each."""
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    cluster = Cluster()
    try:
        with ray_memory_monitor_off():
            add_node_with_retries(cluster, num_cpus=4, include_dashboard=False)
            for _ in range(2):
                add_node_with_retries(cluster, num_cpus=2, resources={"accelerator": 1})
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        yield cluster
    finally:
        try:
            if ray.is_initialized():
                serve.shutdown()
        finally:
            ray.shutdown()
            cluster.shutdown()


def test_model_deployment_grows_across_nodes_and_shrinks_without_failures(accelerator_cluster):
    import ray

    base_url = deploy(autoscaling_test_config(max_replicas=2), free_port())
    assert running_model_replicas() == 1
    accelerator_nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("accelerator")}
    assert len(accelerator_nodes) == 2

    async def scenario() -> tuple[LoadGenerator, set[str]]:
        load = LoadGenerator(base_url)
        trickle_stop = load.start(1)
        burst_stop = load.start(11)
        try:
            # The engine queue (11+ requests on a batch of 4) makes the policy ask for a second replica.
            await poll(lambda: running_model_replicas() >= 2, 420, "second model replica RUNNING")
            nodes = set(await asyncio.to_thread(model_replica_nodes))
            # Keep the load on both replicas for a while, then drop to the trickle.
            await asyncio.sleep(10)
            burst_stop.set()
            await poll(lambda: running_model_replicas() == 1, 240, "model deployment back to 1 replica")
            # The removed replica drains its streams before its actor exits; the trickle runs through that.
            await poll(lambda: len(model_replica_nodes()) == 1, 90, "removed replica's actor gone")
            await asyncio.sleep(2)
            trickle_stop.set()
        finally:
            await load.close()
        return load, nodes

    load, nodes_at_peak = asyncio.run(scenario())
    assert not load.failures, load.failures[:5]
    assert load.num_ok > 20
    assert len(nodes_at_peak) == 2 and nodes_at_peak <= accelerator_nodes
    assert len(model_replica_nodes()) == 1


# ---------------------------------------------------------------------------------------------- (b)


def fake_autoscaler_config(gcs_address: str) -> dict:
    """A cluster-launcher config for Ray's fake multi-node provider (what AutoscalingCluster writes)."""
    return {
        "cluster_name": "serve-app-fake",
        "max_workers": 2,
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": 1,
        "provider": {
            "type": "fake_multinode",
            "gcs_address": gcs_address,
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
        },
        "auth": {"ssh_user": "ubuntu"},
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 4}, "node_config": {}, "max_workers": 0},
            "accelerator_node": {
                "resources": {"CPU": 2, "accelerator": 1},
                "node_config": {},
                "min_workers": 0,
                "max_workers": 2,
            },
        },
        "head_node_type": "ray.head.default",
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }


@pytest.fixture
def fake_autoscaling_cluster(tmp_path: Path):
    """`ray start --head` with the fake multi-node autoscaler, in a process group of its own.

    Unlike `ray.cluster_utils.AutoscalingCluster`, this never runs `ray stop --force` (which would stop
    every Ray instance on the machine): teardown signals only this cluster's process group.
    """
    import ray

    from ray._private.services import get_node_ip_address

    port = free_port()
    gcs_address = f"{get_node_ip_address()}:{port}"
    config_path = tmp_path / "fake-autoscaler.json"
    config_path.write_text(json.dumps(fake_autoscaler_config(gcs_address)))
    # Token auth off for this throwaway local cluster: a `ray start` head picks up ~/.ray/auth_token when one
    # exists, and a driver in this process would then be refused by the GCS.
    env = {**os.environ, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1",
           "RAY_memory_monitor_refresh_ms": "0", "RAY_AUTH_MODE": "disabled"}
    ray_cli = str(Path(sys.executable).parent / "ray")
    temp_dir = tempfile.mkdtemp(prefix="ray-fake-", dir="/tmp")
    command = [
        ray_cli, "start", "--head", f"--port={port}", "--num-cpus=4", "--include-dashboard=false",
        f"--ray-client-server-port={free_port()}", f"--temp-dir={temp_dir}",
        f"--autoscaling-config={config_path}", "--block",
    ]
    head = subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: _can_connect(gcs_address) and _try_init(gcs_address), timeout_s=120, what="fake cluster head",
                 period_s=2)
        yield gcs_address
    finally:
        from ray import serve

        try:
            if ray.is_initialized():
                serve.shutdown()
        finally:
            ray.shutdown()
            stop_process_group(head)


def _can_connect(gcs_address: str) -> bool:
    host, port = gcs_address.split(":")
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, int(port))) == 0


def _try_init(gcs_address: str) -> bool:
    import ray

    try:
        ray.init(address=gcs_address, log_to_driver=False)
        return True
    except Exception:  # The head's raylet may not have registered yet.
        ray.shutdown()
        return False


def test_pending_model_replica_makes_the_autoscaler_launch_a_node(fake_autoscaling_cluster):
    import ray

    def accelerator_nodes() -> set[str]:
        return {n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("accelerator")}

    assert not accelerator_nodes(), "the head has no accelerator: the replica cannot start there"
    # Deploying blocks until healthy: the model replica is pending until a new node joins.
    base_url = deploy(autoscaling_test_config(max_replicas=1), free_port(), timeout_s=480)
    launched = accelerator_nodes()
    assert len(launched) == 1
    assert set(model_replica_nodes()) == launched

    async def one_request() -> LoadGenerator:
        load = LoadGenerator(base_url, max_tokens=8)
        stop = load.start(1)
        await poll(lambda: load.num_ok >= 2 or load.failures, 120, "two completed requests")
        stop.set()
        await load.close()
        return load

    load = asyncio.run(one_request())
    assert not load.failures, load.failures
