"""benchmarks/goodput.py's summary: serve_app's goodput is paired with bare vLLM's in the same repeat, a repeat the
load tester marked invalid (or where vLLM had no good request) is in no pair, refusal latencies are pooled over the
valid repeats with their tail named for its sample count, and the table's verdicts follow."""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import goodput  # noqa: E402
import tables  # noqa: E402


def cell(good: float, valid: bool = True, refusals: list[float] | None = None, lost: int = 0) -> dict:
    return {"good_fraction": good, "goodput_rps": good * 2.7, "load_tester_valid": valid, "admitted_lost": lost,
            "outcomes": {"hung": 0}, "refused_after_waiting": 0, "refusal_on_arrival_ms": refusals or [],
            "admitted_ttft_ms": [100.0, 200.0, 300.0]}


def summary(vllm: list[dict], serve_app: list[dict]) -> dict:
    return {"meta": {"cpu": "2-core X", "cpu_flags": [], "date": "d", "commit": "0" * 40}, "factors": [2.0, 5.0],
            "duration_s": 40.0, "repeats": len(vllm), "capacity_rps": 2.7, "capacity": {},
            "results": {"vllm": [{"x2": v, "x5": v} for v in vllm],
                        "serve_app": [{"x2": s, "x5": s} for s in serve_app]}}


def test_pairs_skip_invalid_repeats_and_a_baseline_without_good_requests():
    data = summary([cell(0.05), cell(0.04), cell(0.0), cell(0.05)],
                   [cell(0.50), cell(0.48), cell(0.5), cell(0.9, valid=False)])
    ratio = goodput.estimate(data)["serve_app"]["x2"]["good_ratio_to_vllm"]
    assert ratio["num_pairs"] == 2 and 9.9 < ratio["value"] < 12.1


def test_refusals_pool_over_valid_repeats_and_name_their_tail():
    fast, slow = [5.0] * 150, [500.0] * 150
    data = summary([cell(0.05)] * 3, [cell(0.5, refusals=fast), cell(0.5, refusals=fast),
                                      cell(0.5, valid=False, refusals=slow)])
    c = goodput.estimate(data)["serve_app"]["x5"]
    assert c["refusal_n"] == 300 and c["refusal_tail"] == "p99" and c["refusal_tail_ms"] == 5.0
    text = tables.goodput({**data, "estimates": goodput.estimate(data)})
    assert "429 on arrival at the client p50 <= 10 ms, p99 <= 50 ms" in text and "| 5.0 / 5.0 ms | met |" in text
    assert "| serve_app | 5x | 50.0, 50.0, 50.0 |" in text and "2 of 3 valid" in text
    assert "bare vLLM's | 10.00x [10.00, 10.00] | not judged: 2 valid pair(s), 3 needed (inside) |" in text


def test_a_lost_request_fails_its_target():
    data = summary([cell(0.05)] * 3, [cell(0.5), cell(0.5, lost=1), cell(0.5)])
    text = tables.goodput({**data, "estimates": goodput.estimate(data)})
    assert "| 2 lost | NOT met |" in text
