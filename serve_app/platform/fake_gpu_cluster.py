"""A fake multi-node GPU cluster on one machine: Ray's fake multi-node autoscaler with GPU node types and a node
start delay, for autoscaling replays with simulated engines (issue 28).

Ray's `fake_multinode` provider starts a raylet the moment the autoscaler asks for a node. A cloud takes a
minute or more to boot a GPU VM, so `DelayedFakeMultiNodeProvider` (loaded by the autoscaler through the
`external` provider type) sleeps `node_start_delay_s` inside `create_node...` before starting the raylet. That
is the closest real thing: the autoscaler (v1, forced here) counts the launch as pending for the whole sleep,
so it does not launch a second node for the same demand, exactly as it waits on a booting VM. The model load
delay is the replica's own (`engine.simulated.load_time_s`).

`FakeGpuCluster` starts the head with `ray start --head --autoscaling-config` in a process group of its own
(own ports and temp dir) and stops only that group, then deletes the temp dir; it never runs `ray stop`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray.autoscaler._private.fake_multi_node.node_provider import FakeMultiNodeProvider

PROVIDER_MODULE = "serve_app.platform.fake_gpu_cluster.DelayedFakeMultiNodeProvider"
GPU_NODE_TYPE = "gpu_node"
CPU_NODE_TYPE = "cpu_node"


class DelayedFakeMultiNodeProvider(FakeMultiNodeProvider):
    """The fake multi-node provider with a boot delay: `provider.node_start_delay_s` seconds per launch."""

    def create_node_with_resources_and_labels(self, node_config, tags, count, resources, labels):
        delay_s = float(self.provider_config.get("node_start_delay_s", 0.0))
        if delay_s > 0:
            time.sleep(delay_s)
        return super().create_node_with_resources_and_labels(node_config, tags, count, resources, labels)


@dataclass(frozen=True)
class FakeGpuClusterSpec:
    """The cluster's shape: a CPU-only head and up to `max_gpu_nodes` nodes of `gpus_per_node` GPUs each."""

    head_cpus: int = 4
    gpus_per_node: int = 1
    cpus_per_gpu_node: int = 2
    max_gpu_nodes: int = 8
    node_start_delay_s: float = 60.0
    # An idle GPU node is given back after this long (Ray's `idle_timeout_minutes`).
    idle_timeout_s: float = 30.0
    # CPU-only nodes for CPU-only work that outgrows the head (more ingress replicas), as a real cluster has; without
    # them Ray's autoscaler starts GPU nodes for it (replay step_4x, 2026-12-05: 3 GPU nodes for ingress replicas).
    cpus_per_cpu_node: int = 4
    max_cpu_nodes: int = 4


def autoscaler_config(spec: FakeGpuClusterSpec, gcs_address: str) -> dict[str, Any]:
    """A cluster-launcher config for the delayed fake provider (pure)."""
    return {
        "cluster_name": "serve-app-fake-gpu",
        "max_workers": spec.max_gpu_nodes + spec.max_cpu_nodes,
        "upscaling_speed": float(spec.max_gpu_nodes),
        "idle_timeout_minutes": spec.idle_timeout_s / 60.0,
        "provider": {
            "type": "external",
            "module": PROVIDER_MODULE,
            "gcs_address": gcs_address,
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
            # Several nodes per launch call (the fake provider otherwise starts one whatever the count).
            "launch_multiple": True,
            "node_start_delay_s": spec.node_start_delay_s,
        },
        "auth": {"ssh_user": "ubuntu"},
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": spec.head_cpus}, "node_config": {}, "max_workers": 0},
            GPU_NODE_TYPE: {
                "resources": {"CPU": spec.cpus_per_gpu_node, "GPU": spec.gpus_per_node},
                "node_config": {},
                "min_workers": 0,
                "max_workers": spec.max_gpu_nodes,
            },
            CPU_NODE_TYPE: {
                "resources": {"CPU": spec.cpus_per_cpu_node},
                "node_config": {},
                "min_workers": 0,
                "max_workers": spec.max_cpu_nodes,
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


def start_serve_on_one_host(port: int) -> None:
    """Serve with one HTTP proxy, on the head, at 127.0.0.1:`port`, for a cluster whose nodes all run on this host.

    Per-node proxies would all bind 127.0.0.1:`port` (SO_REUSEPORT) with no load balancer to health-check them, and
    a removed node's proxy took a connection with it (replay step_4x, 2026-12-05: one ServerDisconnected as a GPU
    node went away)."""
    from ray import serve

    serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeGpuCluster:
    """Context manager: the head (with the autoscaler) up and this process connected; everything stopped after."""

    def __init__(self, spec: FakeGpuClusterSpec, start_timeout_s: float = 120.0):
        self.spec = spec
        self.start_timeout_s = start_timeout_s
        self.gcs_address = ""
        self._head: subprocess.Popen | None = None
        self._temp_dir = ""

    def __enter__(self) -> "FakeGpuCluster":
        import ray
        from ray._private.services import get_node_ip_address

        port = free_port()
        self.gcs_address = f"{get_node_ip_address()}:{port}"
        self._temp_dir = tempfile.mkdtemp(prefix="ray-fake-gpu-", dir="/tmp")
        config_path = Path(self._temp_dir) / "autoscaler.json"
        config_path.write_text(json.dumps(autoscaler_config(self.spec, self.gcs_address)))
        env = {**os.environ, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1",
               "RAY_enable_autoscaler_v2": "0", "RAY_memory_monitor_refresh_ms": "0", "RAY_AUTH_MODE": "disabled"}
        ray_cli = str(Path(sys.executable).parent / "ray")
        command = [ray_cli, "start", "--head", f"--port={port}", f"--num-cpus={self.spec.head_cpus}", "--num-gpus=0",
                   "--include-dashboard=false", f"--ray-client-server-port={free_port()}",
                   f"--temp-dir={self._temp_dir}", f"--autoscaling-config={config_path}", "--block"]
        self._head = subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self._head.poll() is not None:
                raise RuntimeError(f"ray start --head exited with {self._head.returncode}")
            try:
                ray.init(address=self.gcs_address, log_to_driver=False)
                return self
            except Exception:  # The head's raylet may not have registered yet.
                ray.shutdown()
                time.sleep(2)
        self.__exit__(None, None, None)
        raise TimeoutError(f"the fake GPU cluster's head did not come up in {self.start_timeout_s:g} s")

    def __exit__(self, *exc_info) -> None:
        import ray

        try:
            if ray.is_initialized():
                from ray import serve

                try:
                    serve.shutdown()
                except Exception:
                    pass
        finally:
            ray.shutdown()
            if self._head is not None:
                stop_process_group(self._head)
            if self._temp_dir:  # the head's sessions and logs (hundreds of MB after a long replay)
                shutil.rmtree(self._temp_dir, ignore_errors=True)

    def serve_controller_log_lines(self, contains: str) -> list[str]:
        """Lines of the Serve controller's logs that contain `contains` (e.g. the autoscaling policy's decisions),
        read before the temp dir goes."""
        lines: list[str] = []
        for path in sorted(Path(self._temp_dir).glob("session_*/logs/serve/controller_*.log")):
            lines += [line.rstrip() for line in path.read_text(errors="replace").splitlines() if contains in line]
        return lines

    @staticmethod
    def gpu_nodes() -> list[dict[str, Any]]:
        """Alive nodes that carry GPUs (ray.nodes() rows)."""
        import ray

        return [n for n in ray.nodes() if n["Alive"] and n["Resources"].get("GPU")]


def add_node_with_retries(cluster, attempts: int = 3, **node_args):
    """`ray.cluster_utils.Cluster.add_node`, retried: a raylet waits only 30 s for itself to register, which on a
    loaded 2-core machine can be too short."""
    for attempt in range(attempts):
        try:
            args = dict(node_args)
            if cluster.head_node is None:
                args["gcs_server_port"] = free_port()
            return cluster.add_node(**args)
        except Exception:
            if attempt == attempts - 1:
                raise
            time.sleep(5)


def stop_process_group(process: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL, to the group `process` leads (the head, its raylets and the fake nodes)."""
    for sig, grace_s in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            continue
        time.sleep(1)
