"""Where the 1-user inter-token jitter comes from: the gaps between a stream's successive tokens as the client saw
them, per server, from the loadtest runs of a side by side (benchmarks/side_by_side.py --loads 1).

Run the side by side first, with the servers that split the path (each runs alone, interleaved repeats):

    .venv/bin/python benchmarks/side_by_side.py --servers vllm,vllm_worker_in_core,serve_app,serve_app_direct_ingress,\
serve_app_haproxy --loads 1 --repeats 3 --out results/token_jitter         # ~43 min on 2 cores without AVX-512
    .venv/bin/python benchmarks/side_by_side.py --servers vllm,vllm_worker_in_core,serve_app --loads 1 \
        --clients loadtest --repeats 2 --out results/token_jitter/cpu      # ~10 min: CPU per token, by process
    .venv/bin/python benchmarks/token_jitter.py                          # results/token_jitter/jitter.{json,md}
    .venv/bin/python benchmarks/side_by_side.py --servers vllm_worker_in_core,serve_app_control_loop_0_1,serve_app \
        --loads 1 --clients loadtest --repeats 3 --out results/token_jitter/control_loop  # loop 0.1 vs 0.5 s
        # (the committed run, at 3464001, named serve_app (then 0.1 s) and serve_app_control_loop_0_5)
    .venv/bin/python benchmarks/token_jitter.py --out results/token_jitter/control_loop

`vllm_worker_in_core` is bare vLLM with the engine setting serve_app uses (the worker in the engine core's
process); `serve_app_direct_ingress` is serve_app with the client on the model replica's own HTTP port (no Ray
proxy); `serve_app` goes through Ray's proxy. So serve_app against direct ingress is the proxy's hop, and direct
ingress against vllm_worker_in_core is the model server's (Ray Serve's replica, serve_app's relay and metrics)
beside vLLM's own API server.

The second run records each process role's CPU time around each loadtest run (benchmarks/harness.py:
cpu_seconds_by_role): CPU milliseconds per output token show what each hop costs, which on a machine whose engine
computes on every core is time taken from the engine's steps.

Per server, over every measured request of every valid repeat: the gap percentiles (p50, p90, p99, p99.9), the
share of gaps over 1.25x and 1.5x the server's median gap ("stalls": over 1.25x), and the time the stalls add
beyond the median per 1,000 gaps (a 64-token stream has 63). Per repeat, the p99 too, so the spread between
repeats shows.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tables  # noqa: E402
from harness import REPO, machine, request_gaps_ms  # noqa: E402
from serve_app.stats import percentile_of  # noqa: E402


def distribution(gaps: list[float]) -> dict:
    p50 = percentile_of(gaps, 50.0)
    stalls = [g for g in gaps if g > 1.25 * p50]
    return {
        "num_gaps": len(gaps),
        **{f"p{q:g}_ms".replace(".", "_"): percentile_of(gaps, q) for q in (50.0, 90.0, 99.0, 99.9)},
        "max_ms": max(gaps),
        "share_over_1_25x_median": len(stalls) / len(gaps),
        "share_over_1_5x_median": sum(g > 1.5 * p50 for g in gaps) / len(gaps),
        "stall_ms_per_1000_gaps": 1000.0 * sum(g - p50 for g in stalls) / len(gaps),
    }


def summarise(runs_dir: Path) -> dict:
    per_server: dict[str, dict] = {}
    for result_file in sorted(runs_dir.glob("r*/*/loadtest_c1/result.json")):
        server, repeat = result_file.parts[-3], result_file.parts[-4]
        result = json.loads(result_file.read_text())
        entry = per_server.setdefault(server, {"gaps": [], "repeats": {}})
        if not result["validity"]["valid"]:
            entry["repeats"][repeat] = {"valid": False, "reasons": result["validity"]["reasons"]}
            continue
        gaps = request_gaps_ms(result)
        entry["gaps"].extend(gaps)
        entry["repeats"][repeat] = {"valid": True, "p50_ms": percentile_of(gaps, 50.0),
                                    "p99_ms": percentile_of(gaps, 99.0), "num_gaps": len(gaps)}
    return {server: {"pooled": distribution(entry["gaps"]) if entry["gaps"] else None, "repeats": entry["repeats"]}
            for server, entry in per_server.items()}


def cpu_per_token(runs_dir: Path) -> dict:
    """Per server: each role's CPU milliseconds per output token over its 1-user loadtest runs (side_by_side.py
    records `cpu_s_by_role` around each run: every process on the machine but the clients and the benchmark),
    summed over the repeats, and the repeats counted."""
    per_server: dict[str, dict] = {}
    for unit_file in sorted(runs_dir.glob("r*/*/unit.json")):
        unit = json.loads(unit_file.read_text())
        cell = unit["cells"].get("loadtest_c1") or {}
        if "cpu_s_by_role" not in cell or not cell.get("output_tokens") or cell.get("valid") is False:
            continue
        entry = per_server.setdefault(unit["server"], {"cpu_s": {}, "output_tokens": 0, "num_repeats": 0})
        entry["num_repeats"] += 1
        entry["output_tokens"] += cell["output_tokens"]
        for role, used_s in cell["cpu_s_by_role"].items():
            entry["cpu_s"][role] = entry["cpu_s"].get(role, 0.0) + used_s
    return {server: {"num_repeats": e["num_repeats"], "output_tokens": e["output_tokens"],
                     "cpu_ms_per_token": {role: 1000.0 * used_s / e["output_tokens"]
                                          for role, used_s in sorted(e["cpu_s"].items())}}
            for server, e in per_server.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "results/token_jitter",
                        help="the side by side's --out (its runs/ are read; jitter.{json,md} are written here)")
    args = parser.parse_args()
    side_by_side = json.loads((args.out / "summary.json").read_text())
    data = {"meta": {**machine(), "measured": side_by_side["meta"],
                     "command": "benchmarks/side_by_side.py --loads 1, then benchmarks/token_jitter.py"},
            "servers": summarise(args.out / "runs")}
    # CPU by process: from a run of its own in cpu/ (the first run here had no CPU accounting), else this run's.
    cpu_dir = args.out / "cpu" if (args.out / "cpu" / "summary.json").exists() else args.out
    cpu_servers = cpu_per_token(cpu_dir / "runs")
    if cpu_servers:
        data["cpu"] = {"measured": json.loads((cpu_dir / "summary.json").read_text())["meta"], "servers": cpu_servers}
    (args.out / "jitter.json").write_text(json.dumps(data, indent=1) + "\n")
    table = tables.token_jitter(data)
    (args.out / "jitter.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
