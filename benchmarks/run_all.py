"""Every README table's benchmark, one command: the registry below names each table's script, its full arguments
(what the README's figures come from), its `--quick` arguments (a smoke pass of minutes that proves the command
still runs; written under /tmp, never over results/) and where its results land.

    .venv/bin/python benchmarks/run_all.py --list                 # the registry
    .venv/bin/python benchmarks/run_all.py --quick                # smoke pass of every ready benchmark
    .venv/bin/python benchmarks/run_all.py --only side_by_side    # one table, full
    .venv/bin/python benchmarks/run_all.py                        # everything, full (hours on 2 cores)

Each benchmark runs under the shared heavy lock (`flock /tmp/serve_app_heavy.lock`, taken per benchmark so other
work can interleave between them; `--lock ''` to run without) and a timeout. Beside each benchmark's own files,
run_all writes <out>/run_all.json: the command, exit status, wall time and the machine (commit, CPU model and
flags, date), so even a script that does not record them itself has them on file. Entries whose script does not
exist yet (another engineer is writing it) are listed as planned and skipped.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from harness import REPO, VENV_PY, machine  # benchmarks/, beside this script

LOCK = "/tmp/serve_app_heavy.lock"
CHUNKS_DONE = "done: every unit measured"  # what a chunked benchmark prints when nothing is left
QUICK_ROOT = Path("/tmp/serve_app_quick")
W8A8 = "~/.cache/serve_app/compressed/SmolLM2-135M-Instruct-w8a8-sq0.5-chat-n16"
BASE = "~/.cache/serve_app/models/SmolLM2-135M-Instruct"


@dataclass(frozen=True)
class Benchmark:
    """One table's benchmark: `{out}` in the arguments is replaced by the output path (results/... when full,
    under /tmp when quick)."""

    name: str
    script: str  # relative to benchmarks/
    results: str  # relative to the repository: the full run's output (folder or path stem)
    full_args: tuple[str, ...]
    quick_args: tuple[str, ...] | None  # None: no smoke pass (e.g. needs another venv or a checkpoint)
    timeout_min: float = 15.0
    quick_timeout_min: float = 10.0
    note: str = ""
    # Resumable in chunks: run again (the lock taken afresh each time) until the log says CHUNKS_DONE.
    max_chunks: int = 1


REGISTRY: tuple[Benchmark, ...] = (
    Benchmark("side_by_side", "side_by_side.py", "results/side_by_side",
              ("--loads", "1,8,32,128", "--repeats", "3", "--budget-min", "11", "--out", "{out}"),
              ("--quick", "--servers", "vllm,serve_app", "--out", "{out}"), timeout_min=20, max_chunks=40,
              note="interleaved repeats in resumable ~11-minute chunks, the lock released between them"),
    Benchmark("goodput", "goodput.py", "results/goodput", ("--out", "{out}"),
              ("--servers", "serve_app", "--capacity-rps", "0.7", "--factors", "2", "--duration-s", "10",
               "--out", "{out}"), timeout_min=40, note="owner: tenancy engineer"),
    Benchmark("noisy_neighbour", "noisy_neighbour.py", "results/noisy_neighbour", ("--out", "{out}"),
              ("--servers", "serve_app_fair", "--duration-s", "20", "--b-requests", "3", "--out", "{out}"),
              timeout_min=20, note="owner: tenancy engineer"),
    Benchmark("prefix_routing", "prefix_routing.py", "results/prefix_routing",
              ("--conversations", "32", "--out", "{out}"),
              ("--routers", "prefix_affinity", "--conversations", "8", "--system-prompts", "4", "--turns", "2",
               "--users", "2", "--out", "{out}"), timeout_min=70, note="each system prompt used once"),
    Benchmark("prefix_routing_shared_prompts", "prefix_routing.py", "results/prefix_routing/shared_prompts",
              ("--conversations", "32", "--system-prompts", "16", "--system-prompt-tokens", "2000", "--out", "{out}"),
              None, timeout_min=70, note="each system prompt shared by two conversations; the same script as "
                                         "prefix_routing, whose quick pass covers it"),
    Benchmark("speculation_load", "speculation_load.py", "results/speculation/load", ("--out", "{out}"),
              ("--servers", "serve_app_auto", "--loads", "1", "--out", "{out}"), timeout_min=40),
    Benchmark("speculation_schedule", "speculation_schedule.py", "results/speculation", ("--out", "{out}"),
              ("--ks", "0,8", "--batch-sizes", "1", "--repeats", "1", "--max-tokens", "32", "--out", "{out}"),
              timeout_min=60, note="offline engine, no server"),
    Benchmark("compression_speed", "compression_speed_pair.py", "results/compression/speed_pair_w8a8_fp32.json",
              ("--base", BASE, "--model", W8A8, "--out", "{out}"),
              ("--base", BASE, "--model", W8A8, "--rounds", "1", "--concurrency", "4", "--max-tokens", "16",
               "--out", "{out}/speed_pair.json"), timeout_min=20,
              note="needs the W8A8 checkpoint (scripts/install_compress.sh, benchmarks/compression_all_methods.py)"),
    Benchmark("overload_soak", "overload_soak.py", "results/overload_soak", ("--out", "{out}"),
              ("--capacity-users", "4", "--overload-s", "10", "--soak-s", "30", "--out", "{out}/overload_soak"),
              timeout_min=25),
    # Other engineers are writing these; an entry goes live when its script exists.
    Benchmark("autoscale_replay", "autoscale_replay.py", "results/autoscale_replay", ("--out", "{out}"),
              ("--quick", "--out", "{out}"), timeout_min=60, note="owner: loadtest/replay engineer"),
    Benchmark("engine_recovery", "engine_recovery.py", "results/engine_recovery", ("--repeats", "3", "--out", "{out}"),
              ("--repeats", "1", "--modes", "in_place", "--out", "{out}/engine_recovery"), timeout_min=25),
    Benchmark("simulated_engine_validation", "fit_sim_profile.py", "results/simulated_engine",
              ("report",), None,
              note="measure --server real, fit, measure --server simulated, then report (see its docstring)"),
)


def command_of(benchmark: Benchmark, quick: bool, out: Path) -> list[str]:
    args = benchmark.quick_args if quick else benchmark.full_args
    assert args is not None
    return [str(VENV_PY), str(REPO / "benchmarks" / benchmark.script),
            *(str(Path(a.replace("{out}", str(out))).expanduser()) if "{out}" in a or a.startswith("~") else a
              for a in args)]


def run_one(benchmark: Benchmark, quick: bool, lock: str) -> dict:
    """Run one benchmark (under the lock, with its timeout) and record what ran, where and how it ended."""
    out = QUICK_ROOT / benchmark.name if quick else REPO / benchmark.results
    record: dict = {"name": benchmark.name, "quick": quick, "machine": machine(), "out": str(out)}
    if not (REPO / "benchmarks" / benchmark.script).exists():
        return {**record, "status": "planned", "note": benchmark.note}
    if quick and benchmark.quick_args is None:
        return {**record, "status": "skipped: no quick pass", "note": benchmark.note}
    command = command_of(benchmark, quick, out)
    timeout_s = 60 * (benchmark.quick_timeout_min if quick else benchmark.timeout_min)
    wrapped = (["flock", lock] if lock else []) + ["timeout", "-s", "INT", "-k", "60", str(int(timeout_s))] + command
    log_path = (QUICK_ROOT if quick else REPO / "results") / f"run_all.{benchmark.name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_text("")
    if quick:
        out.mkdir(parents=True, exist_ok=True)
    started_s = time.monotonic()
    for _ in range(1 if quick else benchmark.max_chunks):
        with open(log_path, "a") as log:
            code = subprocess.run(wrapped, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
        if code != 0 or benchmark.max_chunks == 1 or CHUNKS_DONE in log_path.read_text():
            break
    record.update({"command": command, "exit_code": code, "wall_s": round(time.monotonic() - started_s, 1),
                   "status": "ok" if code == 0 else "timed out" if code == 124 else "failed", "log": str(log_path)})
    # Beside the benchmark's own files: in its folder, or next to a file / path stem (overload_soak.{json,md})
    record_path = out / "run_all.json" if out.is_dir() else out.with_name(out.name + ".run_all.json")
    record_path.parent.mkdir(parents=True, exist_ok=True)
    record_path.write_text(json.dumps(record, indent=1))
    return record


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke pass, outputs under /tmp/serve_app_quick")
    parser.add_argument("--only", help="comma-separated names from --list")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--lock", default=LOCK, help="flock file taken per benchmark ('' for none)")
    args = parser.parse_args()
    chosen = [b for b in REGISTRY if not args.only or b.name in args.only.split(",")]
    if args.list:
        for b in REGISTRY:
            ready = "ready" if (REPO / "benchmarks" / b.script).exists() else "planned"
            print(f"{b.name:28} {ready:8} {b.script:30} -> {b.results}  {b.note}")
        return 0
    records = []
    for benchmark in chosen:
        print(f"{benchmark.name}: ...", flush=True)
        record = run_one(benchmark, args.quick, args.lock)
        records.append(record)
        print(f"{benchmark.name}: {record['status']} {record.get('wall_s', '')} s {record.get('log', '')}", flush=True)
    summary_path = (QUICK_ROOT if args.quick else REPO / "results") / "run_all.json"
    summary_path.write_text(json.dumps(records, indent=1))
    print(f"wrote {summary_path}")
    return 0 if all(r["status"] in ("ok", "planned") or r["status"].startswith("skipped") for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
