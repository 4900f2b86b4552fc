"""`serve-app serve` as a user starts it (a process group of its own, a Ray cluster of its own), for integration
tests that need the whole command: how it stops (test_engine_cleanup.py), Ray's HAProxy in front (test_haproxy.py).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from serve_app.config import AppConfig
from serve_app.platform.fake_gpu_cluster import free_port
from serve_app.platform.ray_env import ray_environment

SERVE_APP = str(Path(sys.executable).parent / "serve-app")
READY_TIMEOUT_S = 180  # the tiny model serves 25-40 s after start on an idle 2-core machine
EXIT_TIMEOUT_S = 90  # `serve-app serve` kills what it started 60 s after a stop signal (cli.STOP_TIMEOUT_S)


def alive(process: psutil.Process) -> bool:
    """Running and not a zombie (an exited process nobody has reaped holds no memory)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_gone(processes: list[psutil.Process], timeout_s: float) -> tuple[list[psutil.Process], float]:
    """(the processes still alive after timeout_s, seconds until the last one went)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if not any(alive(p) for p in processes):
            break
        time.sleep(0.5)
    return [p for p in processes if alive(p)], time.monotonic() - start


def describe(processes: list[psutil.Process]) -> list[str]:
    described = []
    for process in processes:
        with contextlib.suppress(psutil.Error):
            described.append(f"{process.pid} {process.name()} (ppid {process.ppid()}, "
                             f"{process.memory_info().rss >> 20} MiB)")
    return described


class Server:
    """`serve-app serve --model tiny` in a process group of its own, and every process seen under it."""

    def __init__(self, log_path: Path, config_path: Path | None = None):
        self.port = free_port()
        self.log_path = log_path
        env = {**os.environ, "RAY_memory_monitor_refresh_ms": "0"}  # other jobs' memory must not kill replicas
        env.pop("RAY_ADDRESS", None)
        for key in ray_environment(AppConfig()):  # this session's conftest set them: the CLI must set them itself
            env.pop(key, None)
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                [SERVE_APP, "serve", "--model", "tiny", "--port", str(self.port)]
                + (["--config", str(config_path)] if config_path else []),
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, process_group=0)
        # Remembered by pid: once their parent dies, Ray's processes are no longer descendants of the server.
        self.seen: dict[int, psutil.Process] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, num_lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-num_lines:])

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_serving(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Until /health is 200 and a completion comes back."""
        deadline = time.monotonic() + timeout_s
        while not self.healthy():
            if self.process.poll() is not None:
                pytest.fail(f"serve-app serve exited ({self.process.returncode}) before serving:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"serve-app serve not healthy within {timeout_s} s:\n{self.log_tail()}")
            time.sleep(1)
        response = httpx.post(f"{self.url}/v1/completions", timeout=60,
                              json={"model": "tiny-llama", "prompt": "Hello", "max_tokens": 4})
        assert response.status_code == 200, response.text
        self.processes()

    def processes(self) -> list[psutil.Process]:
        """Every live process seen under the server so far (looks again while the server still runs)."""
        with contextlib.suppress(psutil.NoSuchProcess):
            for process in psutil.Process(self.process.pid).children(recursive=True):
                self.seen.setdefault(process.pid, process)
        return [p for p in self.seen.values() if alive(p)]

    def running(self, command_prefix: str) -> list[psutil.Process]:
        """The live processes under the server whose command line starts with `command_prefix` (one that exits
        between the listing and the read of its command line, as a process just killed may, is not one)."""
        found = []
        for process in self.processes():
            with contextlib.suppress(psutil.Error):
                if " ".join(process.cmdline()).startswith(command_prefix):
                    found.append(process)
        return found

    def engines(self) -> list[psutil.Process]:
        found = []
        for process in self.processes():
            with contextlib.suppress(psutil.Error):
                if process.name().startswith("VLLM"):
                    found.append(process)
        return found

    def signal_group(self, signum: int) -> None:
        os.killpg(self.process.pid, signum)

    def kill_everything(self) -> None:
        """SIGKILL the server's process group, everything seen under it, and the sessions those ran in."""
        seen = self.processes()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        sessions = set()
        for process in seen:
            with contextlib.suppress(psutil.Error, OSError):
                sessions.add(os.getsid(process.pid))
                process.kill()
        sessions.discard(os.getsid(0))  # this test's own session (the server's group was started in it)
        for process in psutil.process_iter():
            with contextlib.suppress(psutil.Error, OSError):
                if os.getsid(process.pid) in sessions:
                    process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)


def assert_server_exits(server: Server, after: str) -> int:
    start = time.monotonic()
    try:
        code = server.process.wait(timeout=EXIT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"serve-app serve still running {EXIT_TIMEOUT_S} s after {after}:\n{server.log_tail()}")
    print(f"serve-app serve exited with {code} {time.monotonic() - start:.1f} s after {after}")
    left, _ = wait_gone(list(server.seen.values()), 10)
    assert not left, f"processes serve-app serve started outlived it: {describe(left)}"
    return code
