"""vLLM engine processes die with the process that spawned them, however it stops.

vLLM starts its engine core (and, for multiprocess executors, its workers) as child processes. When a model
server replica dies without shutting its engine down (SIGKILL, `ray stop --force`, a crashed Ray node), those
children used to live on with no parent, each holding gigabytes. Linux's parent-death signal fixes that: a child
that asked for PR_SET_PDEATHSIG gets SIGKILL the moment its parent goes away.

`register()` runs from serve_app's vLLM general plugin (vllm_plugin.py; entry point group `vllm.general_plugins`
in pyproject.toml), which vLLM calls when each of its processes starts: the engine core process, its worker processes, and the process that
creates the engine (the replica). The replica sets ENGINE_GUARD_ENV to its pid right before it spawns the engine
(model_server.py); a process whose spawning parent is that pid arms the signal and writes its own pid there,
so that its own workers arm it in turn. Any other process (the replica itself, anything vLLM runs elsewhere)
is left alone.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys

# The pid of the process whose vLLM children must die with it (set by that process before it spawns them).
ENGINE_GUARD_ENV = "SERVE_APP_ENGINE_GUARD_PARENT"

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>

logger = logging.getLogger(__name__)


def set_parent_death_signal(signum: int) -> bool:
    """Ask Linux to send `signum` to this process when its parent (the thread that started it) exits.

    Returns False where that is not available (not Linux, or prctl failed); never raises.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _spawning_parent_pid() -> int:
    """The pid of the process that started this one, even if it has died since (then getppid() says 1 or a
    subreaper). multiprocessing children (how vLLM starts its processes) know it; other processes fall back on
    getppid()."""
    parent = multiprocessing.parent_process()
    return parent.pid if parent is not None and parent.pid else os.getppid()


def register() -> bool:
    """Arm the parent-death signal in a vLLM process spawned by a guarded parent (called by serve_app's vLLM
    plugin, vllm_plugin.py). Returns True in such a process the first time (it is one of serve_app's engine
    processes), False elsewhere and on later calls. Idempotent (vLLM may call it more than once in one process)
    and never raises.
    """
    try:
        guarded_parent = os.environ.get(ENGINE_GUARD_ENV)
        parent = _spawning_parent_pid()
        if guarded_parent is None or guarded_parent != str(parent):
            return False  # not spawned by a guarded process (or already armed: then the variable holds our own pid)
        if not set_parent_death_signal(signal.SIGKILL):
            logger.warning("serve_app engine guard: PR_SET_PDEATHSIG unavailable; this vLLM process (pid %d) "
                           "may outlive its parent %d", os.getpid(), parent)
            os.environ[ENGINE_GUARD_ENV] = str(os.getpid())
            return True
        if os.getppid() != parent:
            # The parent died before the signal was armed: nobody will ever deliver it, so go now.
            os._exit(1)
        os.environ[ENGINE_GUARD_ENV] = str(os.getpid())  # this process's own vLLM children arm it against us
        return True
    except Exception:  # noqa: BLE001 - a plugin must never stop vLLM from starting
        logger.exception("serve_app engine guard failed; vLLM continues without it")
        return False
