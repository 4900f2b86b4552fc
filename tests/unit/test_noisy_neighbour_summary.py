"""benchmarks/noisy_neighbour.py's summary: a tail is a p99 only over 200+ requests, ratios are paired over the
interleaved repeats, an invalid or failed repeat is left out of its pairs, and the verdicts follow the interval."""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import noisy_neighbour  # noqa: E402
import tables  # noqa: E402


def result(tenants: dict[str, list[float]], tps: float, valid: bool = True) -> dict:
    """A load tester result.json with each tenant's TTFTs (ms)."""
    records = [{"tenant": name, "status_code": 200, "send_s": 1.0, "first_text_s": 1.0 + ms / 1000}
               for name, ttfts in tenants.items() for ms in ttfts]
    return {"config": {"warmup_s": 0.0},
            "summary": {"output_throughput_tps": tps, "window_s": {"length": 60.0}, "num_ok": len(records),
                        "tenants": {name: {"num_requests": len(t), "num_ok": len(t), "output_tokens": 16 * len(t),
                                           "output_token_share": 0.66 if name == "C" else None}
                                    for name, t in tenants.items()}},
            "validity": {"valid": valid, "reasons": [] if valid else ["loop lag"]}, "records": records}


def repeat(alone_ms: float, beside_ms: float, alone_tps: float, flood_tps: float, fair: bool, valid=True) -> dict:
    row = {"B_alone": noisy_neighbour.figures(result({"B": [alone_ms] * 199 + [2 * alone_ms]}, 10.0)),
           "A_alone": noisy_neighbour.figures(result({"A": [900.0] * 50}, alone_tps)),
           "A32_B1": noisy_neighbour.figures(result({"A": [900.0] * 50, "B": [beside_ms] * 200}, flood_tps, valid))}
    if fair:
        row["A16_C16"] = noisy_neighbour.figures(result({"A": [500.0] * 20, "C": [400.0] * 40}, 100.0))
    return row


def test_a_tail_over_fewer_than_200_requests_is_their_max():
    few = noisy_neighbour.figures(result({"B": [100.0] * 59 + [900.0]}, 10.0))["B"]
    assert few["ttft_tail"] == "max of 60" and abs(few["ttft_tail_ms"] - 900.0) < 1e-6
    many = noisy_neighbour.figures(result({"B": [100.0] * 199 + [900.0]}, 10.0))["B"]
    assert many["ttft_tail"] == "p99" and many["ttft_tail_ms"] < 900.0


def test_ratios_are_paired_over_repeats_and_an_invalid_repeat_is_left_out():
    runs = {"serve_app_fair": [repeat(100, 140, 98, 100, True), repeat(110, 150, 99, 101, True),
                               repeat(100, 900, 50, 50, True, valid=False)],
            "serve_app_fcfs": [repeat(100, 4000, 100, 100, False), repeat(100, 4200, 100, 100, False),
                               repeat(100, 4100, 100, 100, False)]}
    est = noisy_neighbour.estimates(runs)
    assert est["b_tail_ratio_fair"]["num_pairs"] == 2  # the invalid third repeat is in no pair
    assert 1.3 < est["b_tail_ratio_fair"]["value"] < 1.45  # p99 beside (140, 150) over p99 alone (~100, ~110)
    assert est["flood_total_tps_fair_vs_fcfs"]["num_pairs"] == 2
    assert abs(est["flood_total_tps_fair_vs_fcfs"]["value"] - 1.005) < 0.01
    text = tables.noisy_neighbour({"meta": {"cpu": "2-core X", "cpu_flags": [], "date": "d", "commit": "0" * 40,
                                            "workload": "w", "repeats": 3}, "runs": runs, "estimates": est})
    assert "INVALID" in text and "not judged: 2 valid pair(s)" in text  # two pairs cannot decide a target


def test_three_valid_repeats_decide_the_tail_target_by_the_whole_interval():
    fair = [repeat(100, 300, 90, 100, True), repeat(100, 310, 90, 100, True), repeat(100, 290, 90, 100, True)]
    fcfs = [repeat(100, 4000, 100, 100, False) for _ in range(3)]
    est = noisy_neighbour.estimates({"serve_app_fair": fair, "serve_app_fcfs": fcfs})
    assert tables.verdict(est["b_tail_ratio_fair"], "at_most", 1.5) == "NOT met"
    assert tables.verdict(est["a_alone_tps_fair_vs_fcfs"], "at_least", 0.97) == "NOT met"  # 0.90x
    assert est["c_share_weight_2"]["mean"] == 0.66


def test_requests_sent_in_the_warm_up_are_not_measured():
    warm = result({"B": [100.0] * 10}, 10.0)
    warm["records"][0]["send_s"] = 0.5  # sent while the flood's streams were opening
    warm["records"][0]["first_text_s"] = 0.5 + 5.0
    warm["config"]["warmup_s"] = 1.0
    b = noisy_neighbour.figures(warm)["B"]
    assert b["ttft_n"] == 9 and abs(b["ttft_tail_ms"] - 100.0) < 1e-6


def test_added_repeats_name_their_commit_and_still_pair_and_render():
    """`--add-repeats` rows carry the commit they ran on beside their phases; the summary and the table read past it."""
    fair = [{**repeat(100, 140, 98, 100, True), "commit": c} for c in ("a" * 40, "a" * 40, "b" * 40)]
    fcfs = [{**repeat(100, 4000, 100, 100, False), "commit": c} for c in ("a" * 40, "a" * 40, "b" * 40)]
    est = noisy_neighbour.estimates({"serve_app_fair": fair, "serve_app_fcfs": fcfs})
    assert est["b_tail_ratio_fair"]["num_pairs"] == 3
    meta = {"cpu": "2-core X", "cpu_flags": [], "date": "d", "commit": "a" * 40, "workload": "w", "repeats": 3,
            "added_repeats": [{"first": 2, "count": 1, "commit": "b" * 40, "date": "d2", "uncommitted": False}]}
    text = tables.noisy_neighbour({"meta": meta, "runs": {"serve_app_fair": fair, "serve_app_fcfs": fcfs},
                                   "estimates": est})
    assert "repeats 2-2 added on commit bbbbbbbbbb, d2" in text and "INVALID" not in text


def test_a_remeasure_keeps_each_phase_with_the_commit_and_warmup_it_was_last_measured_on():
    first = {"phases": ["A_alone"], "commit": "a" * 40, "date": "d1", "uncommitted": False,
             "warmup_s": {"A_alone": 10}, "alone_s": 60}
    second = {"phases": ["B_alone", "A32_B1"], "commit": "b" * 40, "date": "d2", "uncommitted": False,
              "warmup_s": {"B_alone": 3, "A32_B1": 10}}
    records = noisy_neighbour.remeasure_records([first], second)
    assert [r["phases"] for r in records] == [["A_alone"], ["B_alone", "A32_B1"]]
    third = {"phases": ["A_alone", "B_alone"], "commit": "c" * 40, "date": "d3", "uncommitted": False,
             "warmup_s": {"A_alone": 10, "B_alone": 3}, "alone_s": 60}
    records = noisy_neighbour.remeasure_records(records, third)
    # A_alone's first record is gone; the second keeps only A32_B1, with its own warm-up and no A_alone length.
    assert [r["phases"] for r in records] == [["A32_B1"], ["A_alone", "B_alone"]]
    assert records[0]["warmup_s"] == {"A32_B1": 10} and "alone_s" not in records[0]
    runs = {"serve_app_fair": [repeat(100, 140, 98, 100, True)] * 3,
            "serve_app_fcfs": [repeat(100, 4000, 100, 100, False)] * 3}
    text = tables.noisy_neighbour({"meta": {"cpu": "2-core X", "cpu_flags": [], "date": "d", "commit": "0" * 40,
                                            "workload": "w", "repeats": 3, "remeasured": records},
                                   "runs": runs, "estimates": noisy_neighbour.estimates(runs)})
    assert "A32_B1 re-measured on commit bbbbbbbbbb, d2, after a 10 s warm-up;" in text
    assert "A_alone, B_alone re-measured on commit cccccccccc, d3" in text and "A_alone for 60 s" in text


def test_b_alone_phase_has_an_unmeasured_warmup():
    args = type("Args", (), {"beside_warmup_s": 10, "alone_warmup_s": 10, "b_alone_warmup_s": 3})()
    assert noisy_neighbour.phase_warmup_s("B_alone", args) == 3


def test_a_remeasure_of_some_servers_or_repeats_leaves_the_others_with_their_record():
    whole = {"phases": ["B_alone", "A32_B1"], "commit": "b" * 40, "date": "d2", "uncommitted": False,
             "warmup_s": {"B_alone": 3, "A32_B1": 10}}
    part = {"phases": ["B_alone", "A32_B1"], "commit": "c" * 40, "date": "d3", "uncommitted": False,
            "warmup_s": {"B_alone": 3, "A32_B1": 10}, "servers": ["serve_app_fair"], "repeats": [0]}
    records = noisy_neighbour.remeasure_records([whole], part)
    assert records == [whole, part]  # the other server's and repeats' cells are still the first re-measure's
    assert noisy_neighbour.remeasure_records(records, {**whole, "commit": "d" * 40}) == [{**whole, "commit": "d" * 40}]
    assert "B_alone, A32_B1 (serve_app_fair, repeat 0) re-measured on commit cccccccccc" in tables._remeasured(part)
