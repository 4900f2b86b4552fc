"""benchmarks/prefix_routing.py's summary and its table (benchmarks/tables.py): a TTFT tail is a p99 only over 200+
requests (else the max of N), each router names the machine and commit it ran on, the ratios pair the repeats whose
runs are both valid and error-free, and a verdict needs three such pairs."""

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import prefix_routing  # noqa: E402
from loadtest.records import RequestRecord  # noqa: E402
import tables  # noqa: E402

WHERE = {"cpu": "2-core Test CPU", "cpu_flags": ["avx512f"], "date": "2026-12-07", "commit": "a" * 40,
         "uncommitted": False}


def row(ttft_p50: float, n: int = 250, valid: bool = True, tok_s: float = 20.0, error_rate: float = 0.0) -> dict:
    return {"ttft_p50_ms": ttft_p50, "ttft_p99_ms": 900.0, "ttft_max_ms": 1500.0, "ttft_n": n, "tpot_p50_ms": 50.0,
            "output_tok_s": tok_s, "error_rate": error_rate, "valid": valid,
            "invalid_reasons": [] if valid else ["client event-loop lag p99 12.0 ms > 10.0 ms: timestamps are late"],
            "machine": WHERE, "replicas": {"r1": {"hit_rate": 0.8}, "r2": {"hit_rate": None}}}


def render(affinity: list[dict], default: list[dict]) -> str:
    runs = {"prefix_affinity": affinity, "power_of_two": default}
    return tables.prefix_routing({"meta": {"workload": "w", "repeats": len(affinity)}, "runs": runs,
                                  "estimates": prefix_routing.estimates(runs)})


def test_tail_is_a_p99_only_over_200_requests():
    text = render([row(100.0, 250)], [row(200.0, 120)])
    assert "| 1 | 100 | - | - | p99 900 |" in text
    assert "| 1 | 200 | - | - | max of 120: 1,500 |" in text
    assert "80%, n/a" in text
    assert "2-core Test CPU (avx512f), 2026-12-07, commit aaaaaaaaaa" in text


def test_no_ratio_from_an_invalid_run_or_one_with_errors():
    text = render([row(100.0), row(100.0)], [row(200.0, valid=False), row(200.0, error_rate=0.03)])
    assert "INVALID (client event-loop lag p99 12.0 ms > 10.0 ms)" in text
    assert "no ratio is drawn" in text and "0.50x" not in text


def test_ratios_pair_the_usable_repeats_and_judge_from_three():
    runs = {"prefix_affinity": [row(100.0, tok_s=30.0), row(104.0, tok_s=31.0), row(90.0), row(98.0, tok_s=30.0)],
            "power_of_two": [row(250.0), row(250.0), row(260.0, valid=False), row(240.0)]}
    estimate = prefix_routing.estimates(runs)
    assert estimate["num_pairs"] == 3 and 0.39 < estimate["ttft_p50"]["value"] < 0.42  # the invalid repeat is out
    assert 1.49 < estimate["output_tok_s"]["value"] < 1.53
    text = render(runs["prefix_affinity"], runs["power_of_two"])
    assert "over 3 pair(s) of usable runs" in text and "(target <= 0.5x: met)" in text


def test_one_usable_pair_gives_a_ratio_but_no_verdict():
    text = render([row(100.0)], [row(200.0)])
    assert "TTFT p50 0.50x [1 repeat, no CI]" in text and "not judged: 1 valid pair(s), 3 needed" in text


def test_a_failed_router_is_shown_as_failed():
    text = tables.prefix_routing({"meta": {"workload": "w"}, "runs": {"prefix_affinity": [{"error": "boom"}]}})
    assert "| prefix affinity (serve_app) | 1 | failed: boom |" in text
    assert "| power of two choices (Ray's default) | 1 | failed: not run |" in text


def test_added_repeats_go_on_from_the_kept_runs_in_the_turned_round_order():
    kept = {"meta": {"workload": "w", "repeats": 3, "command": "c"},
            "runs": {"prefix_affinity": [row(1.0)] * 3, "power_of_two": [row(2.0)] * 3}}
    runs, meta, schedule = prefix_routing.added_repeats(
        kept, {"workload": "w", "command": "c2 --repeats 3 --users 4", "repeats": 3}, list(prefix_routing.ROUTERS), 2)
    # repeat 3 turns round (default first), repeat 4 turns back, as a five-repeat run would have run them
    assert schedule == [(3, "power_of_two"), (3, "prefix_affinity"), (4, "prefix_affinity"), (4, "power_of_two")]
    assert runs is kept["runs"] and meta["repeats"] == 5 and meta["command"] == "c"
    assert meta["added"] == ["c2 --users 4 --add-repeats 2"]


def _refusal(kept: dict, meta: dict, routers: list[str]) -> str:
    try:
        prefix_routing.added_repeats(kept, meta, routers, 1)
    except SystemExit as exc:
        return str(exc)
    raise AssertionError("added repeats to runs they do not belong with")


def test_added_repeats_refuse_other_runs():
    kept = {"meta": {"workload": "w"}, "runs": {"prefix_affinity": [row(1.0)], "power_of_two": [row(2.0)]}}
    meta = {"workload": "w", "command": "c", "repeats": 3}
    routers = list(prefix_routing.ROUTERS)
    assert "another workload" in _refusal(kept, {**meta, "workload": "other"}, routers)
    assert "another workload" in _refusal({**kept, "meta": {}}, meta, routers)  # a summary from before meta.workload
    assert "routers" in _refusal(kept, meta, routers[::-1])
    unpaired = {**kept, "runs": {"prefix_affinity": [row(1.0)] * 2, "power_of_two": [row(2.0)]}}
    assert "different numbers of runs" in _refusal(unpaired, meta, routers)


def test_the_summary_names_the_added_commands(tmp_path):
    runs = {"prefix_affinity": [row(100.0)], "power_of_two": [row(200.0)]}
    prefix_routing.write_summary(runs, tmp_path, {"workload": "w", "command": "first", "added": ["second"]})
    text = (tmp_path / "summary.md").read_text()
    assert "Command: `.venv/bin/python first`" in text and "More repeats: `.venv/bin/python second`." in text


def record(turn: int, ttft_s: float, status_code: int = 200) -> RequestRecord:
    return RequestRecord(request_id=0, job_id=0, turn=turn, worker_id=0, scheduled_s=None, send_s=10.0,
                         first_text_s=10.0 + ttft_s, done_s=10.0 + ttft_s + 0.5, status_code=status_code,
                         error_kind=None if status_code == 200 else "http")


def test_ttft_p50_per_turn_counts_only_answered_requests():
    records = [record(0, 3.0), record(0, 5.0), record(0, 0.1, status_code=503), record(1, 1.0), record(2, 2.0)]
    assert prefix_routing.ttft_p50_by_turn(records) == [4000.0, 1000.0, 2000.0]


def test_per_turn_ratios_pair_the_usable_repeats_and_show_in_the_table():
    affinity = [{**row(100.0), "ttft_mean_ms": 150.0, "ttft_p50_by_turn_ms": [200.0, 90.0]} for _ in range(3)]
    default = [{**row(120.0), "ttft_mean_ms": 200.0, "ttft_p50_by_turn_ms": [400.0, 90.0]} for _ in range(3)]
    estimate = prefix_routing.estimates({"prefix_affinity": affinity, "power_of_two": default})
    assert [round(turn["value"], 2) for turn in estimate["ttft_p50_by_turn"]] == [0.5, 1.0]
    assert round(estimate["ttft_mean"]["value"], 2) == 0.75
    text = render(affinity, default)
    assert "| 1 | 100 | 200 / 90 | 150 | p99 900 |" in text and "TTFT mean 0.75x" in text
    assert "TTFT p50 by turn (first, second, ...): 0.50x" in text


def test_runs_recorded_before_the_per_turn_figure_get_it_from_their_records(tmp_path):
    folder = tmp_path / "prefix_affinity" / "r1" / "loadtest"
    folder.mkdir(parents=True)
    (folder / "result.json").write_text(json.dumps({"summary": {"latency_ms": {"ttft": {"mean": 1250.0}}},
                                                    "records": [r.to_dict(keep_text=False)
                                                                for r in (record(0, 2.0), record(1, 0.5))]}))
    runs = {"prefix_affinity": [row(100.0), row(100.0)], "power_of_two": [{"error": "boom"}]}
    prefix_routing.with_ttft_detail(runs, tmp_path)
    assert "ttft_p50_by_turn_ms" not in runs["prefix_affinity"][0]  # no records kept for r0
    assert runs["prefix_affinity"][1]["ttft_p50_by_turn_ms"] == [2000.0, 500.0]
    assert runs["prefix_affinity"][1]["ttft_mean_ms"] == 1250.0
    assert runs["power_of_two"] == [{"error": "boom"}]


def test_a_result_without_records_gives_no_per_turn_figure():
    detail = prefix_routing.ttft_detail({"summary": {"latency_ms": {"ttft": {"mean": 900.0}}}})
    assert detail == {"ttft_mean_ms": 900.0, "ttft_p50_by_turn_ms": []}


def test_no_per_turn_ratio_where_a_pair_lacks_the_turn():
    affinity = [{**row(100.0), "ttft_p50_by_turn_ms": [200.0, 90.0]}, {**row(100.0), "ttft_p50_by_turn_ms": [200.0]}]
    default = [{**row(120.0), "ttft_p50_by_turn_ms": [400.0, 90.0]}, {**row(120.0), "ttft_p50_by_turn_ms": [400.0]}]
    estimate = prefix_routing.estimates({"prefix_affinity": affinity, "power_of_two": default})
    assert [round(turn["value"], 2) for turn in estimate["ttft_p50_by_turn"]] == [0.5]  # the second turn: one pair
    assert "ttft_mean" not in estimate  # no mean recorded


def test_a_results_folder_is_shown_relative_to_the_repository_where_inside_it(tmp_path):
    inside = (prefix_routing.REPO / "results" / "prefix_routing" / "shared_prompts").resolve()
    assert prefix_routing._shown(inside) == "results/prefix_routing/shared_prompts"
    assert prefix_routing._shown(tmp_path) == str(tmp_path)
