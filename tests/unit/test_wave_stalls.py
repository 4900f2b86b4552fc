"""benchmarks/wave_stalls.py: a closed loop's prefill-wave stalls counted against the p99's rank, so a reader sees
whether a many-user ITL p99 measured a decode step or a wave's prefill."""

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import pytest  # noqa: E402

import harness  # noqa: E402
import tables  # noqa: E402
import wave_stalls  # noqa: E402
from serve_app.stats import percentile_of  # noqa: E402


@pytest.mark.parametrize("num_gaps", [100, 999, 8050, 8064])
def test_the_p99_lies_between_the_gaps_at_its_rank(num_gaps):
    gaps = [float(i) for i in range(num_gaps)]
    rank = wave_stalls.run_stalls(gaps)["p99_rank"]
    longest_first = sorted(gaps, reverse=True)
    assert longest_first[rank - 1] <= percentile_of(gaps, 99.0) <= longest_first[rank - 2]


def stalls_then_decodes(num_stalls: int, num_gaps: int = 1000) -> dict:
    return wave_stalls.run_stalls([200.0] * (num_gaps - num_stalls) + [3000.0] * num_stalls)


def test_a_p99_below_the_stalls_lands_on_a_decode_gap():
    run = stalls_then_decodes(10)  # rank 11: one stall fewer than the rank
    assert run["p99_rank"] == 11 and run["num_stalls"] == 10 and run["shortest_stall_ms"] == 3000.0
    assert run["p99_ms"] < 300.0 and not run["p99_on_a_stall"]


def test_as_many_stalls_as_the_rank_put_the_p99_on_a_stall():
    run = stalls_then_decodes(11)  # a split wave: the stalls reach past the rank
    assert run["num_stalls"] == 11 == run["p99_rank"]
    assert run["p99_ms"] == 3000.0 and run["p99_on_a_stall"]


def loadtest_result(requests: list[tuple[float, list[float]]], warmup_requests: int, warmup_s: float = 0.0) -> dict:
    return {"config": {"warmup_requests": warmup_requests, "warmup_s": warmup_s}, "validity": {"valid": False},
            "records": [{"send_s": send_s, "done_s": times[-1], "status_code": 200, "event_times_s": times}
                        for send_s, times in requests]}


def test_the_warm_up_requests_and_the_ramp_are_not_measured():
    requests = [(0.0, [1.0, 9.0]), (5.0, [6.0, 6.5]), (12.0, [13.0, 13.2, 13.4])]
    assert harness.request_gaps_ms(loadtest_result(requests, 1)) == pytest.approx([500.0, 200.0, 200.0])
    assert harness.request_gaps_ms(loadtest_result(requests, 1, warmup_s=10.0)) == pytest.approx([200.0, 200.0])
    assert harness.request_gaps_ms(loadtest_result(requests, 3)) == []


def write_cell(folder: Path, client: str, users: int, name: str, data: dict, error: bool = False) -> None:
    (folder / f"{client}_c{users}").mkdir(parents=True)
    (folder / f"{client}_c{users}" / name).write_text(json.dumps(data))
    unit = folder / "unit.json"
    cells = json.loads(unit.read_text())["cells"] if unit.exists() else {}
    cells[f"{client}_c{users}"] = {"error": "boom"} if error else {"valid": True}
    unit.write_text(json.dumps({"cells": cells}))


def test_both_clients_runs_are_read_and_a_failed_cell_or_other_load_is_not(tmp_path):
    folder = tmp_path / "sbs"
    warm_up = (0.0, [0.0, 9.0])  # one 9 s gap, not measured
    measured = (1.0, [1.0, 1.2, 1.4, 4.4, 4.6])
    write_cell(folder / "runs/r1/vllm", "loadtest", 32, "result.json", loadtest_result([warm_up, measured], 1))
    write_cell(folder / "runs/r1/vllm", "vllm_bench", 32, "bench.json", {"itls": [[0.2, 0.2, 3.0, 0.2]]})
    write_cell(folder / "runs/r1/vllm", "loadtest", 320, "result.json", loadtest_result([measured], 0))
    write_cell(folder / "runs/r2/vllm", "vllm_bench", 32, "bench.json", {"itls": [[0.2, 0.2]]}, error=True)
    rows = wave_stalls.summarise([folder], 32)
    assert [(r["repeat"], r["client"], r["num_gaps"], r["num_stalls"]) for r in rows] == [
        ("r1", "loadtest", 4, 1), ("r1", "vllm_bench", 4, 1)]
    meta = {"users": 32, "stall_over_median": wave_stalls.STALL_OVER_MEDIAN,
            "measured": {str(folder): {"cpu": "2-core X", "date": "2026-12-06", "commit": "0" * 40}}}
    table = tables.wave_stalls({"meta": meta, "runs": rows})
    assert "| vllm | loadtest | 4 | 2 | 1 | 3.00 s | **2.92 s** (INVALID) |" in table
