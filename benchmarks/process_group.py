"""Stopping a server a benchmark started in its own session (`start_new_session=True`): the whole group."""

from __future__ import annotations

import os
import signal
import subprocess


def stop_process_group(process: subprocess.Popen, first_signal: int = signal.SIGINT, timeout_s: float = 60) -> None:
    """`first_signal` to the group (SIGINT lets serve-app and Ray stop cleanly), SIGKILL after `timeout_s`."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, first_signal)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
