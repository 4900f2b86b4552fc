"""The environment Ray must start with for the config's Ray Serve options (read by every Ray process at import).

`ray_serve_throughput_optimized` (default on) turns on Ray Serve's throughput-optimized mode: its user code runs
on the replica's own event loop (no separate thread), calls between deployments go over gRPC, and each ingress
replica also serves HTTP directly on a port of its own (direct ingress) beside Ray's proxy. Measured side by side
(results/side_by_side): the fastest serve_app variant at 8 and 32 users, equal to bare vLLM at one user.
`ray_serve_haproxy` puts Ray's HAProxy in front instead of its Python proxy (clients then reach the ingress
replicas' own ports through HAProxy: no Python hop). `ray_serve_control_loop_interval_s` (0.5 s; Ray's default
0.1 s) slows Serve's controller loop, whose CPU on a 2-core machine came out of the engine's steps.
`ray_worker_niceness` (Ray's default, 15) is how much nicer than its raylet every worker runs (replicas, their
engines, the proxy, the controller); set only when it differs from Ray's default.
"""

from __future__ import annotations

import os

from serve_app.config import AppConfig

RAY_DEFAULT_WORKER_NICENESS = 15  # Ray's worker_niceness (ray_config_def.h)


def replica_context():
    """Ray Serve's context of the replica this code runs in (app, deployment, replica id); None outside one."""
    try:
        from ray import serve

        return serve.get_replica_context()
    except Exception:  # noqa: BLE001 - offline use, unit tests
        return None


def ray_environment(config: AppConfig) -> dict[str, str]:
    """Variables to set before Ray starts (the CLI and the test suite set them; a cluster sets them itself)."""
    env = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"} if config.ray_serve_throughput_optimized else {}
    env["RAY_SERVE_CONTROL_LOOP_INTERVAL_S"] = f"{config.ray_serve_control_loop_interval_s:g}"
    if config.ray_worker_niceness != RAY_DEFAULT_WORKER_NICENESS:
        env["RAY_worker_niceness"] = str(config.ray_worker_niceness)
    if config.ray_serve_haproxy:
        env["RAY_SERVE_ENABLE_HA_PROXY"] = "1"
    return env


def apply_ray_environment(config: AppConfig) -> None:
    """Put `ray_environment(config)` into this process's environment before Ray starts here (every Ray process it
    starts inherits it); a variable already set wins."""
    for key, value in ray_environment(config).items():
        os.environ.setdefault(key, value)
