"""Why the side by side's many-user ITL p99 jumps between repeats: the closed loop's waves of prefill.

With N users in a closed loop, every user sending 128-token prompts for 64 output tokens, all N start together
(`vllm bench serve --request-rate inf` and loadtest without `--ramp-up-s` alike), decode in the same steps, finish in
the same step and send their next requests together. The engine prefills that wave in a step or a few, and each
stream then waits for the whole wave's prefill between two of its tokens: a "wave stall", seconds long on 2 cores.
A run has a fixed number of them per wave, and at 32 users with 128 measured requests (8,064 gaps) they are about
0.9% of the gaps, just under the p99's rank (between the 82nd and 81st longest gap): the p99 lands on an ordinary decode gap when the
waves stay whole, and on a stall when a wave splits (its requests reach the engine over more than one step, one
sub-wave's prefill stalling the other), which takes it from ~0.5 s to 1-3.6 s.

This script counts them in the runs a side by side saved (benchmarks/side_by_side.py --out DIR), per run: the gaps,
the p99's rank, the stalls (gaps longer than 4x the run's median gap), the p99 and whether it landed on a stall.

    .venv/bin/python benchmarks/wave_stalls.py results/side_by_side/no_avx512 \
        results/side_by_side/no_avx512_worker_niceness results/side_by_side/worker_niceness_client_nice_c32 \
        --users 32 --out results/side_by_side/wave_stalls_c32

writes wave_stalls.{json,md} (benchmarks/tables.py: wave_stalls). Staggered starts (side_by_side.py --ramp-up-s)
spread the users over a request's length so that no wave forms, as with users who do not all arrive at once.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tables  # noqa: E402
from harness import machine, request_gaps_ms  # noqa: E402
from serve_app.stats import percentile_of  # noqa: E402

STALL_OVER_MEDIAN = 4.0  # a gap longer than 4x the run's median gap: a prefill wave, not a decode step


def vllm_bench_gaps_ms(bench: dict) -> list[float]:
    """`vllm bench serve --save-detailed`: its per-request inter-token gaps (its warmups are not in them)."""
    return [gap * 1000.0 for request in bench["itls"] for gap in request]


def run_stalls(gaps_ms: list[float]) -> dict:
    """One run: where its p99 lands against its stalls (pure)."""
    ordered = sorted(gaps_ms, reverse=True)
    median_ms = percentile_of(gaps_ms, 50.0)
    stalls = [g for g in ordered if g > STALL_OVER_MEDIAN * median_ms]
    p99_ms = percentile_of(gaps_ms, 99.0)
    return {"num_gaps": len(gaps_ms), "p99_rank": len(gaps_ms) - int(0.99 * (len(gaps_ms) - 1)),
            "median_ms": median_ms, "num_stalls": len(stalls), "stall_share": len(stalls) / len(gaps_ms),
            "shortest_stall_ms": stalls[-1] if stalls else None, "longest_gap_ms": ordered[0],
            "stall_ms_total": sum(stalls), "p99_ms": p99_ms, "p99_on_a_stall": p99_ms > STALL_OVER_MEDIAN * median_ms}


def summarise(folders: list[Path], users: int) -> list[dict]:
    rows = []
    for folder in folders:
        for path in sorted(folder.glob(f"runs/r*/*/*_c{users}/*.json")):
            client = path.parent.name.rsplit("_c", 1)[0]
            if (client, path.name) not in (("loadtest", "result.json"), ("vllm_bench", "bench.json")):
                continue
            unit = json.loads((path.parents[1] / "unit.json").read_text())
            if "error" in unit["cells"].get(path.parent.name, {"error": "not saved"}):
                continue  # that cell failed: a file here is an earlier run's
            data = json.loads(path.read_text())
            valid = data["validity"]["valid"] if client == "loadtest" else None
            gaps = request_gaps_ms(data) if client == "loadtest" else vllm_bench_gaps_ms(data)
            if gaps:
                rows.append({"folder": str(folder), "repeat": path.parts[-4],
                             "server": path.parts[-3], "client": client, "valid": valid, **run_stalls(gaps)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="side by side --out folders (their runs/ are read)")
    parser.add_argument("--users", type=int, default=32)
    parser.add_argument("--out", type=Path, required=True, help="wave_stalls.{json,md} are written here")
    args = parser.parse_args()
    data = {"meta": {**machine(), "users": args.users, "stall_over_median": STALL_OVER_MEDIAN,
                     "measured": {str(f): json.loads((f / "summary.json").read_text())["meta"] for f in args.folders}},
            "runs": summarise(args.folders, args.users)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "wave_stalls.json").write_text(json.dumps(data, indent=1) + "\n")
    table = tables.wave_stalls(data)
    (args.out / "wave_stalls.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
