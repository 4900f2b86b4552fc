"""benchmarks/side_by_side.py's statistics: ratios only from interleaved repeat pairs where both runs were valid,
a verdict only from three such pairs and an interval wholly on one side of the target, repeats in A, B, A, B order."""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import side_by_side  # noqa: E402
import tables  # noqa: E402


def _cell(ttft_ms: float, tok_s: float, valid: bool | None = True, num_ttft: int = 16) -> dict:
    return {"ttft_p50_ms": ttft_ms, "ttft_tail_ms": ttft_ms * 1.2, "itl_tail_ms": 70.0, "tpot_p50_ms": 35.0,
            "output_tok_s": tok_s, "error_rate": 0.0, "num_ttft": num_ttft, "num_itl": 1000, "valid": valid,
            "invalid_reasons": [] if valid is not False else ["client event-loop lag"], "attempts": 1}


def _units(serve_app_ttft: list[float], invalid_repeat: int | None = None) -> dict:
    units = {}
    for repeat, ttft_ms in enumerate(serve_app_ttft, start=1):
        units[(repeat, "vllm")] = {"cells": {"loadtest_c1": _cell(200.0 + repeat, 30.0)}}
        units[(repeat, "serve_app")] = {"cells": {"loadtest_c1": _cell(ttft_ms + repeat, 30.0 * 1.01,
                                                                       valid=repeat != invalid_repeat)}}
    return units


def _row(summary: dict) -> dict:
    [row] = [r for r in summary["comparisons"] if r["server"] == "serve_app"]
    return row


def test_repeats_are_interleaved():
    assert side_by_side.plan(["vllm", "serve_app"], 3) == [(1, "vllm"), (1, "serve_app"), (2, "vllm"),
                                                          (2, "serve_app"), (3, "vllm"), (3, "serve_app")]


def test_three_valid_pairs_give_a_ratio_with_an_interval_and_a_verdict():
    summary = side_by_side.summarise(_units([203.0, 204.0, 202.0]), ["vllm", "serve_app"], [1], ["loadtest"], 3)
    row = _row(summary)
    assert row["num_valid_pairs"] == 3 and row["tail_label"].startswith("max of 16")
    ttft = row["estimates"]["ttft_p50_ms"]
    assert ttft["value"] == 3.0 and ttft["ci_low"] < 3.0 < ttft["ci_high"]
    assert abs(row["estimates"]["output_tok_s"]["value"] - 1.01) < 1e-9
    [target] = [t for t in summary["targets"] if t["target"].startswith("1 user TTFT p50")]
    assert target["verdict"] in ("met", "undecided (CI spans the target)")


def test_an_invalid_run_is_left_out_and_too_few_pairs_are_not_judged():
    summary = side_by_side.summarise(_units([203.0, 900.0, 202.0], invalid_repeat=2), ["vllm", "serve_app"], [1],
                                     ["loadtest"], 3)
    row = _row(summary)
    assert row["num_valid_pairs"] == 2
    assert row["estimates"]["ttft_p50_ms"]["value"] == 2.5  # the invalid repeat's 900 ms is not in it
    assert all(t["verdict"].startswith("not judged") for t in summary["targets"])
    invalid = [r for r in summary["runs"] if r["valid"] is False]
    assert len(invalid) == 1 and invalid[0]["repeat"] == 2  # still on file, as invalid


def test_verdicts_need_the_whole_interval_on_one_side():
    estimate = {"value": 1.02, "ci_low": 0.99, "ci_high": 1.04, "num_pairs": 3}
    assert tables.verdict(estimate, "at_most", 1.05) == "met"
    assert tables.verdict({**estimate, "ci_high": 1.08}, "at_most", 1.05).startswith("undecided")
    assert tables.verdict({**estimate, "value": 0.9, "ci_low": 0.85, "ci_high": 0.95}, "at_least", 1.0) == "NOT met"


def test_the_first_server_is_the_baseline_and_only_bare_vllm_is_judged_against_the_issues_targets():
    units = {key: unit for key, unit in _units([203.0, 204.0, 202.0]).items()}
    units = {(repeat, "vllm_worker_in_core" if name == "vllm" else name): unit for (repeat, name), unit in units.items()}
    summary = side_by_side.summarise(units, ["vllm_worker_in_core", "serve_app"], [1], ["loadtest"], 3)
    row = _row(summary)
    assert row["num_valid_pairs"] == 3 and abs(row["estimates"]["output_tok_s"]["value"] - 1.01) < 1e-9
    assert summary["targets"] == []  # the issue's targets are against bare vLLM
    meta = {"cpu": "2-core X", "cpu_flags": [], "date": "2026-12-06", "commit": "0" * 40, "num_repeats": 3,
            "baseline": "vllm_worker_in_core"}
    table = tables.side_by_side({"meta": meta, **summary}, "loadtest")
    assert "ratio or difference to `vllm_worker_in_core`" in table and "bare `vllm serve`" not in table


def test_engine_profile_shares_count_each_sample_once_per_stage_and_the_summary_averages_the_repeats(tmp_path):
    """--profile-engine: py-spy's collapsed stacks -> the share of samples inside each stage (a sample counts once
    per stage however deep the stage recurs in its stack), and the summary's table averages the repeats."""
    import harness

    folded = tmp_path / "engine.folded"
    root = "EngineCore.step (core.py:1);GPUModelRunner.execute_model (gpu_model_runner.py:2)"
    folded.write_text(f"{root};GPUModelRunner._model_forward (g.py:3);LlamaModel.forward (llama.py:4) 6\n"
                      f"{root};GPUModelRunner.sample_tokens (g.py:5);RejectionSampler.forward (r.py:6);"
                      "Sampler.forward (s.py:7);Sampler.forward (s.py:8) 3\n"
                      "EngineCoreProc.run_busy_loop (core.py:9) 1\n")
    profile = harness.engine_profile(folded)
    assert profile["samples"] == 10
    shares = profile["shares"]
    assert shares["model forward"] == 0.6 and shares["sampling, all"] == 0.3
    assert shares["rejection sampler"] == 0.3 and shares["plain sampler"] == 0.3 and shares["drafting (n-gram)"] == 0
    assert harness.engine_profile(tmp_path / "missing.folded") is None

    other = {"samples": 20, "shares": {stage: 0.1 for stage in shares}}
    summary = {"runs": [{"server": "serve_app_default", "run": "loadtest_c128", "engine_profile": profile},
                        {"server": "serve_app_default", "run": "loadtest_c128", "engine_profile": other},
                        {"server": "vllm", "run": "loadtest_c128"}]}
    table = tables.engine_profiles(summary)
    [row] = [line for line in table.splitlines() if line.startswith("| serve_app_default")]
    assert row.startswith("| serve_app_default | 128 | 2 | 10 | 35.0% | 20.0% | 20.0% |")
    assert "| vllm" not in table and tables.engine_profiles({"runs": [summary["runs"][2]]}) == ""
