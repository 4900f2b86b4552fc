"""benchmarks/wave_stalls.py: a closed loop's prefill-wave stalls counted against the p99's rank, so a reader sees
whether a many-user ITL p99 measured a decode step or a wave's prefill."""

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import tables  # noqa: E402
import wave_stalls  # noqa: E402


def test_a_p99_below_the_stalls_lands_on_a_decode_gap():
    gaps = [200.0] * 990 + [3000.0] * 9  # 9 stalls in 999 gaps: fewer than the p99's rank
    run = wave_stalls.run_stalls(gaps)
    assert run["num_stalls"] == 9 and run["shortest_stall_ms"] == 3000.0
    assert run["p99_ms"] == 200.0 and not run["p99_on_a_stall"]


def test_one_more_stall_than_the_rank_moves_the_p99_onto_the_stalls():
    gaps = [200.0] * 980 + [3000.0] * 20  # a split wave: twice the stalls
    run = wave_stalls.run_stalls(gaps)
    assert run["num_stalls"] == 20 > run["p99_rank"]
    assert run["p99_ms"] == 3000.0 and run["p99_on_a_stall"]


def test_both_clients_runs_are_read_and_tabled(tmp_path):
    folder = tmp_path / "sbs"
    times = [0.0, 0.2, 0.4, 3.4, 3.6]
    loadtest = {"config": {"warmup_requests": 0}, "validity": {"valid": False},
                "records": [{"send_s": 0.0, "status_code": 200, "event_times_s": times}]}
    bench = {"itls": [[0.2, 0.2, 3.0, 0.2]]}
    for client, name, data in (("loadtest", "result.json", loadtest), ("vllm_bench", "bench.json", bench)):
        (folder / "runs/r1/vllm" / f"{client}_c32").mkdir(parents=True)
        (folder / "runs/r1/vllm" / f"{client}_c32" / name).write_text(json.dumps(data))
    rows = wave_stalls.summarise([folder], 32)
    assert [(r["client"], r["num_gaps"], r["num_stalls"]) for r in rows] == [("loadtest", 4, 1), ("vllm_bench", 4, 1)]
    meta = {"users": 32, "stall_over_median": wave_stalls.STALL_OVER_MEDIAN,
            "measured": {"sbs": {"cpu": "2-core X", "date": "2026-12-06", "commit": "0" * 40}}}
    table = tables.wave_stalls({"meta": meta, "runs": rows})
    assert "(INVALID)" in table and table.count("| vllm |") == 2
