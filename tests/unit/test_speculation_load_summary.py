"""benchmarks/speculation_load.py's summary: auto's ratios are paired over interleaved repeats, a cell with errors or
an invalid load tester run is in no pair, and the table's verdicts follow the interval."""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import speculation_load  # noqa: E402
import tables  # noqa: E402


def cell(tok_s: float, valid: bool = True, error_rate: float = 0.0) -> dict:
    return {"output_tok_s": tok_s, "error_rate": error_rate, "load_tester_valid": valid, "acceptance_rate": 0.5,
            "tokens_per_step": 3.0}


def runs(auto: list[dict], off: list[dict], vllm: list[dict]) -> dict:
    return {"serve_app_auto": [{"copy_c1": c} for c in auto], "serve_app_off": [{"copy_c1": c} for c in off],
            "vllm": [{"copy_c1": c} for c in vllm]}


def test_ratios_pair_repeats_and_skip_invalid_or_failed_cells():
    data = runs([cell(60), cell(62), cell(10, valid=False)], [cell(20), cell(21), cell(20)],
                [cell(15), cell(16), cell(15, error_rate=0.1)])
    row = speculation_load.estimates(data, ["copy"], [1])[0]
    assert row["auto_vs_serve_app_off"]["num_pairs"] == 2 and 2.9 < row["auto_vs_serve_app_off"]["value"] < 3.0
    assert row["auto_vs_vllm"]["num_pairs"] == 2
    assert row["mean_tok_s"]["serve_app_auto"] == 61.0  # the invalid repeat is not in the mean either


def test_three_valid_pairs_give_verdicts_in_the_table():
    data = runs([cell(60), cell(62), cell(61)], [cell(20), cell(21), cell(20)], [cell(15), cell(16), cell(15)])
    summary = {"meta": {"cpu": "2-core X", "cpu_flags": [], "date": "d", "commit": "0" * 40, "repeats": 3},
               "loads": [1], "runs": data, "estimates": speculation_load.estimates(data, ["copy"], [1])}
    text = tables.speculation_load(summary)
    assert "auto >= 0.97x off: met" in text and "auto >= 2x vLLM: met" in text


def test_a_run_of_one_prompt_set_has_rows_for_it_alone_and_names_its_order():
    data = {"serve_app_auto": [{"chat_c8": cell(60)}], "serve_app_off": [{"chat_c8": cell(62)}]}
    rows = speculation_load.estimates(data, ["chat"], [8])
    assert [(r["prompt_set"], r["users"]) for r in rows] == [("chat", 8)]
    summary = {"meta": {"cpu": "2-core X", "cpu_flags": [], "date": "d", "commit": "0" * 40, "repeats": 1,
                        "order": "turned round every other repeat"}, "loads": [8], "runs": data, "estimates": rows}
    assert "order turned round every other repeat" in tables.speculation_load(summary)


def test_a_profiled_run_shows_where_each_servers_engine_spent_its_time():
    shares = {"model forward": 0.85, "sampling, all": 0.01}
    data = {"serve_app_auto": [{"chat_c8": {**cell(60), "engine_profile": {"samples": 1000, "shares": shares}}}],
            "serve_app_off": [{"chat_c8": cell(62)}]}
    summary = {"meta": {"cpu": "2-core X", "cpu_flags": [], "date": "d", "commit": "0" * 40, "repeats": 1,
                        "profile_engine": "10,20"}, "loads": [8], "runs": data,
               "estimates": speculation_load.estimates(data, ["chat"], [8])}
    text = tables.speculation_load_profiled(summary)
    assert "over 20 s from 10 s into each cell" in text
    assert "chat:\n\n| server |" in text
    assert "| serve_app_auto | 8 | 1 | 1000 | 85.0% | 1.0% |" in text and "| serve_app_off |" not in text
    unprofiled = {**summary, "runs": {name: [{"chat_c8": cell(60)}] for name in data}}
    assert tables.speculation_load_profiled(unprofiled) == tables.speculation_load(unprofiled)


def test_the_order_turns_round_every_other_repeat_so_no_server_always_runs_first():
    import harness

    assert harness.turned_round(["auto", "off", "vllm"], 3) == [
        (0, "auto"), (0, "off"), (0, "vllm"), (1, "vllm"), (1, "off"), (1, "auto"), (2, "auto"), (2, "off"), (2, "vllm")]
