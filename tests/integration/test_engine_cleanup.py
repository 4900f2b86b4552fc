"""No vLLM engine process outlives its model replica, however `serve-app serve` is stopped.

Each test starts `serve-app serve --model tiny` the way a shell runs scripts/serve.sh (a process group of its
own), notes the vLLM engine processes under it (`VLLM::EngineCore`, `VLLM::Worker`) once it serves, stops it one
way and then looks for engines left behind:
(a) SIGTERM to its process group (what scripts do), (b) SIGINT to its process group (Ctrl-C in a terminal),
(c) `ray stop --force`, limited to this server's processes (see `ray_stop_force`),
(d) SIGKILL of the model replica: its engine goes with it while Serve replaces the replica, then a normal stop.

Each test starts and stops a Ray cluster of its own, so they run before the session's shared app.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.integration.serve_process import Server, alive, assert_server_exits, describe

pytestmark = [pytest.mark.integration, pytest.mark.own_ray_cluster]

# A stop lets Serve drain the replica first: with direct ingress (ray_serve_throughput_optimized) it stays open
# RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S (30 s), and serve.shutdown() gives up waiting after 30 s.
ENGINES_GONE_AFTER_STOP_S = 60
ENGINES_GONE_AFTER_KILL_S = 30
# An engine process dies with the process that started it (the kernel kills it as its parent exits: engine_guard.py);
# the slack covers tearing down gigabytes on a busy machine, not an engine noticing on its own much later (or never).
OUTLIVED_PARENT_S = 5.0
MODEL_REPLICA = "ray::ServeReplica:serve_app:ModelServer"


def device_config_file(device: str, path: Path) -> Path | None:
    """On a device other than the CPU, the tiny model's config put on it (`serve-app serve --config`)."""
    if device == "cpu":
        return None
    import yaml

    from serve_app.config import AppConfig
    from tests.devices import on_device

    config = on_device(AppConfig.model_validate({"model": {"source": "tiny"}}), device)
    path.write_text(yaml.safe_dump(config.model_dump(mode="json", exclude_unset=True)))
    return path


@pytest.fixture
def server(tmp_path, device):
    started = Server(tmp_path / "serve.log", device_config_file(device, tmp_path / "config.yaml"))
    try:
        yield started
    finally:
        started.kill_everything()


@dataclass(frozen=True)
class Engine:
    """A vLLM process and the one that started it (the replica for the engine core, the core for a worker)."""

    process: psutil.Process
    parent: psutil.Process

    def __str__(self) -> str:
        return f"{self.process.pid} {self.name} (parent {self.parent.pid})"

    @property
    def name(self) -> str:
        with contextlib.suppress(psutil.Error):
            return self.process.name()
        return "?"


def running_engines(server: Server) -> list[Engine]:
    server.wait_serving()
    engines = []
    for process in server.engines():
        with contextlib.suppress(psutil.NoSuchProcess):
            engines.append(Engine(process, process.parent()))
    assert any(engine.name.startswith("VLLM::EngineCor") for engine in engines), \
        f"no vLLM engine process under serve-app serve: {describe(server.processes())}"
    return engines


def assert_engines_gone(engines: list[Engine], after: str, server: Server, timeout_s: float) -> None:
    """Every engine process is gone within timeout_s, and none outlived the process that started it by more than
    OUTLIVED_PARENT_S."""
    parent_gone_s: dict[int, float] = {}
    gone_s: dict[int, float] = {}
    start = time.monotonic()
    while len(gone_s) < len(engines) and time.monotonic() - start < timeout_s:
        now_s = time.monotonic() - start
        for engine in engines:
            if engine.process.pid not in parent_gone_s and not alive(engine.parent):
                parent_gone_s[engine.process.pid] = now_s
            if engine.process.pid not in gone_s and not alive(engine.process):
                gone_s[engine.process.pid] = now_s
        time.sleep(0.2)
    left = [engine for engine in engines if engine.process.pid not in gone_s]
    assert not left, (f"vLLM engine processes still running {timeout_s} s after {after}: "
                      f"{describe([engine.process for engine in left])}\n{server.log_tail()}")
    report = []
    for engine in engines:
        pid = engine.process.pid
        outlived_s = gone_s[pid] - parent_gone_s.get(pid, gone_s[pid])
        report.append(f"{engine}: gone {gone_s[pid]:.1f} s after {after}, {outlived_s:.1f} s after its parent")
        assert outlived_s <= OUTLIVED_PARENT_S, f"{engine} outlived its parent by {outlived_s:.1f} s"
    print("\n".join(report))


def ray_stop_force(server: Server) -> None:
    """`ray stop --force`, limited to this server's processes: SIGKILL to each process matching Ray's own list
    (ray.autoscaler._private.constants.RAY_PROCESSES), the raylet first and the GCS last as `ray stop` does.

    The real command kills every Ray process on the machine (another job's, a developer's other clusters);
    nothing that the engines see differs.
    """
    from ray.autoscaler._private.constants import RAY_PROCESSES

    processes = server.processes()
    for bucket in (RAY_PROCESSES[:1], RAY_PROCESSES[1:-1], RAY_PROCESSES[-1:]):
        for keyword, by_name in bucket:
            for process in processes:
                with contextlib.suppress(psutil.Error):
                    corpus = process.name() if by_name else subprocess.list2cmdline(process.cmdline())
                    if keyword in corpus:
                        process.kill()


@pytest.mark.parametrize("stop", ["sigterm", "sigint"])
def test_stopping_the_process_group_leaves_no_engine(server, stop):
    engines = running_engines(server)
    server.signal_group(signal.SIGTERM if stop == "sigterm" else signal.SIGINT)
    assert_engines_gone(engines, f"{stop.upper()} to the process group", server, ENGINES_GONE_AFTER_STOP_S)
    assert assert_server_exits(server, stop.upper()) == 0
    assert "Stopping serve_app..." in server.log_path.read_text(errors="replace")


def test_ray_stop_force_leaves_no_engine(server):
    engines = running_engines(server)
    ray_stop_force(server)
    assert_engines_gone(engines, "ray stop --force", server, ENGINES_GONE_AFTER_KILL_S)


def test_killed_model_replica_takes_its_engine_and_serve_replaces_it(server):
    engines = running_engines(server)
    replicas = server.running(MODEL_REPLICA)
    assert len(replicas) == 1, describe(server.processes())
    replicas[0].kill()
    assert_engines_gone(engines, "SIGKILL of the model replica", server, ENGINES_GONE_AFTER_KILL_S)
    replacement = running_engines(server)
    assert not {e.process.pid for e in replacement} & {e.process.pid for e in engines}
    server.signal_group(signal.SIGTERM)
    assert_engines_gone(replacement, "SIGTERM to the process group", server, ENGINES_GONE_AFTER_STOP_S)
    assert assert_server_exits(server, "SIGTERM") == 0
