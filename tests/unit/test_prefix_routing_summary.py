"""benchmarks/tables.py's prefix-routing table: a TTFT tail is a p99 only over 200+ requests (else the max of N),
each router names the machine and commit it ran on, and no ratio is drawn from a run the load tester marked
invalid; from one valid run each a ratio is shown without a verdict."""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import tables  # noqa: E402

WHERE = {"cpu": "2-core Test CPU", "cpu_flags": ["avx512f"], "date": "2026-12-07", "commit": "a" * 40,
         "uncommitted": False}


def row(ttft_p50: float, n: int, valid: bool = True) -> dict:
    return {"ttft_p50_ms": ttft_p50, "ttft_p99_ms": 900.0, "ttft_max_ms": 1500.0, "ttft_n": n, "tpot_p50_ms": 50.0,
            "output_tok_s": 20.0, "error_rate": 0.0, "valid": valid,
            "invalid_reasons": [] if valid else ["client event-loop lag p99 12.0 ms > 10.0 ms: timestamps are late"],
            "machine": WHERE, "replicas": {"r1": {"hit_rate": 0.8}, "r2": {"hit_rate": None}}}


def render(affinity: dict, default: dict) -> str:
    return tables.prefix_routing({"meta": {"workload": "w"}, "results": {"prefix_affinity": affinity,
                                                                          "power_of_two": default}})


def test_tail_is_a_p99_only_over_200_requests():
    text = render(row(100.0, 250), row(200.0, 120))
    assert "| 100 | p99 900 |" in text
    assert "| 200 | max of 120: 1,500 |" in text
    assert "80%, n/a" in text
    assert "2-core Test CPU (avx512f), 2026-12-07, commit aaaaaaaaaa" in text


def test_no_ratio_from_an_invalid_run():
    text = render(row(100.0, 250), row(200.0, 250, valid=False))
    assert "INVALID (client event-loop lag p99 12.0 ms > 10.0 ms)" in text
    assert "no ratio is drawn" in text and "0.50x" not in text


def test_one_valid_run_each_gives_a_ratio_but_no_verdict():
    text = render(row(100.0, 250), row(200.0, 250))
    assert "TTFT p50 prefix affinity / default: 0.50x" in text
    assert "not judged" in text and "met" not in text.split("not judged")[0].split("\n")[-1]


def test_a_failed_router_is_shown_as_failed():
    text = tables.prefix_routing({"meta": {"workload": "w"}, "results": {"prefix_affinity": {"error": "boom"}}})
    assert "| prefix affinity (serve_app) | failed: boom |" in text
    assert "| power of two choices (Ray's default) | failed: not run |" in text
