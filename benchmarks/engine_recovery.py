"""Engine death -> first answer: how long the model is down when its vLLM engine dies, and what clients see.

For each mode the default model is served with `serve-app serve` (default config, speculation as users get it);
the engine core process is killed (SIGKILL, as an OOM kill or a crash would end it) `--repeats` times, and a client
sends a small completion every 0.25 s from the kill until the first 200. Modes: `in_place` (default:
`engine.restart_in_place`, the replica builds a new engine) and `replica_replacement` (restart_in_place off: Ray
Serve's health check fails and Serve starts a new replica, which is what the project did before).

    .venv/bin/python benchmarks/engine_recovery.py [--repeats 3] [--modes in_place,replica_replacement]

Writes results/engine_recovery/results.json and summary.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import NAME, PORT, REPO, Server, machine, running  # noqa: E402

OUT = REPO / "results/engine_recovery"
MODES = {"in_place": "engine: {restart_in_place: true}", "replica_replacement": "engine: {restart_in_place: false}"}
PROBE_PERIOD_S = 0.25
GIVE_UP_S = 300.0


def engine_pids(launcher: subprocess.Popen) -> list[int]:
    """The vLLM engine processes of the server `launcher` started (never another server's on the machine)."""
    return [p.pid for p in psutil.Process(launcher.pid).children(recursive=True) if "EngineCor" in p.name()]


def probe() -> int:
    body = json.dumps({"model": NAME, "prompt": "Hello", "max_tokens": 4}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{PORT}/v1/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except Exception:  # noqa: BLE001 - connection refused or reset while the replica is replaced
        return 0


def one_death(launcher: subprocess.Popen) -> dict:
    (pid,) = engine_pids(launcher)
    psutil.Process(pid).kill()
    killed_s = time.monotonic()
    statuses: dict[str, int] = {}
    while time.monotonic() - killed_s < GIVE_UP_S:
        status = probe()
        if status == 200:
            return {"recovery_s": round(time.monotonic() - killed_s, 2), "probe_statuses": statuses}
        statuses[str(status)] = statuses.get(str(status), 0) + 1
        time.sleep(PROBE_PERIOD_S)
    return {"recovery_s": None, "probe_statuses": statuses}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    serve_app = [str(REPO / ".venv/bin/serve-app"), "serve", "--port", str(PORT), "--config"]
    runs = {}
    for mode in args.modes.split(","):
        server = Server(f"serve_app_{mode}", serve_app, yaml=f"model: {{source: default}}\n{MODES[mode]}\n")
        deaths: list[dict] = []
        runs[mode] = deaths
        with running(server, args.out / mode) as launcher:
            for _ in range(args.repeats):
                deaths.append(one_death(launcher))
                write(runs, args.repeats, args.out)  # after every death: a run cut short keeps what it measured
                time.sleep(5)  # settle (a replaced replica's first requests warm it up)
    print(write(runs, args.repeats, args.out))


def write(runs: dict[str, list[dict]], repeats: int, out: Path) -> str:
    summary = {"machine": machine(), "repeats": repeats, "probe_period_s": PROBE_PERIOD_S,
               "runs": {mode: summarise(deaths) for mode, deaths in runs.items()}}
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = ["| mode | deaths | engine death -> first answer (s): mean [min, max] | what the probes got meanwhile |",
             "|---|---|---|---|"]
    for mode, run in summary["runs"].items():
        seen: dict[str, int] = {}
        for death in run["deaths"]:
            for status, count in death["probe_statuses"].items():
                seen[status] = seen.get(status, 0) + count
        seen_text = ", ".join(f"{count} x {'no connection' if status == '0' else status}"
                              for status, count in sorted(seen.items()))
        lines.append(f"| {mode} | {run['num_recovered']}/{len(run['deaths'])} | {run['recovery_s_mean']} "
                     f"[{run['recovery_s_min']}, {run['recovery_s_max']}] | {seen_text or '-'} |")
    m = summary["machine"]
    lines += ["", f"{m['cpu']} ({', '.join(m['cpu_flags'])}), commit {m['commit'][:10]}, {m['date']}; "
              f"`.venv/bin/python benchmarks/engine_recovery.py --repeats {repeats}`"]
    text = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(text)
    return text


def summarise(deaths: list[dict]) -> dict:
    times = [d["recovery_s"] for d in deaths if d["recovery_s"] is not None]
    return {"deaths": deaths, "num_recovered": len(times), "recovery_s_min": min(times, default=None),
            "recovery_s_max": max(times, default=None),
            "recovery_s_mean": round(sum(times) / len(times), 2) if times else None}


if __name__ == "__main__":
    main()
