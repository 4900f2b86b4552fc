"""Every table between `<!-- table:NAME -->` and `<!-- /table -->` in README.md and docs/performance.md is what
benchmarks/tables.py renders from its results file: a figure without its file, or a file changed without its table,
fails here."""

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import readme_tables  # noqa: E402
import tables  # noqa: E402

README_TABLES = [(name, body) for document in readme_tables.DOCUMENTS
                 for name, body in readme_tables.marked_tables(document.read_text())]


@pytest.mark.parametrize("name, body", README_TABLES, ids=[name for name, _ in README_TABLES] or None)
def test_readme_table_equals_its_rendering_from_its_file(name, body):
    assert name in tables.TABLES, f"README table {name!r} names no results file in benchmarks/tables.py"
    path = REPO / tables.TABLES[name][0]
    assert path.exists(), f"README table {name!r}: its file {path} is missing"
    assert body == readme_tables.render(name), f"README table {name!r} differs from {path}: run readme_tables.py --write"


def _summary(num_pairs_valid: int = 3) -> dict:
    estimate = {"value": 1.02, "ci_low": 0.98, "ci_high": 1.06, "num_pairs": 3, "confidence": 0.95}
    return {"meta": {"cpu": "2-core Test CPU", "cpu_flags": ["avx512_bf16"], "date": "2026-12-04",
                     "commit": "0123456789abcdef", "num_repeats": 3},
            "comparisons": [{"server": "serve_app", "client": "loadtest", "users": 1, "num_repeats": 3,
                             "num_valid_pairs": num_pairs_valid, "tail_label": "max of 16 TTFT / p99 ITL",
                             "estimates": {"ttft_p50_ms": {**estimate, "value": 3.0, "ci_low": -1.0, "ci_high": 7.0},
                                           "ttft_tail_ms": estimate, "itl_tail_ms": estimate,
                                           "output_tok_s": estimate}}],
            "baselines": [{"client": "loadtest", "users": 1, "ttft_p50_ms": 220.0, "output_tok_s": 15.7}],
            "targets": []}


def test_a_changed_figure_in_the_readme_is_caught(tmp_path):
    (tmp_path / "results/side_by_side").mkdir(parents=True)
    (tmp_path / "results/side_by_side/summary.json").write_text(json.dumps(_summary()))
    readme = f"intro\n<!-- table:side_by_side -->\n{readme_tables.render('side_by_side', tmp_path)}\n<!-- /table -->\n"
    [(name, body)] = readme_tables.marked_tables(readme)
    assert body == readme_tables.render(name, tmp_path)
    edited = readme.replace("1.02x [0.98, 1.06]", "0.95x [0.90, 1.00]", 1)
    [(_, edited_body)] = readme_tables.marked_tables(edited)
    assert edited_body != readme_tables.render(name, tmp_path)
    assert readme_tables.rewrite(edited, tmp_path) == readme


def test_side_by_side_table_names_tail_sample_floor_valid_pairs_and_interval():
    table = tables.side_by_side(_summary(num_pairs_valid=2), "loadtest")
    assert "max of 16 TTFT" in table
    assert "2 of 3" in table
    assert "+3.0 ms [-1.0, +7.0]" in table and "1.02x [0.98, 1.06]" in table
    assert "commit 0123456789" in table and "avx512_bf16" in table


def test_targets_at_a_glance_names_each_runs_machine_and_every_verdict(tmp_path):
    amx = _summary()
    amx["meta"] |= {"cpu": "2-core Intel(R) Xeon(R) Processor", "cpu_flags": ["avx512f", "avx512_bf16", "amx_bf16"]}
    amx["targets"] = [{"target": "32 users tok/s >= 1.0x", "server": "serve_app", "client": "loadtest",
                       "measured": "1.21x [1.07, 1.37]", "verdict": "met"}]
    plain = _summary()
    plain["meta"] |= {"uncommitted": True, "commits": ["0123456789abcdef", "fedcba9876543210"]}
    plain["targets"] = [{"target": "1 user ITL tail <= 1.05x", "server": "serve_app_default", "client": "vllm_bench",
                         "measured": "1.15x [0.85, 1.57]", "verdict": "undecided (CI spans the target)"}]
    for name, summary in (("c32", amx), ("c1", plain)):
        (tmp_path / f"results/{name}").mkdir(parents=True)
        (tmp_path / f"results/{name}/summary.json").write_text(json.dumps(summary))
    index = {"summaries": ["results/c32/summary.json", "results/c1/summary.json"]}
    table = tables.side_by_side_targets(index, tmp_path)
    assert "[c32](results/c32/summary.md): 2-core Intel Xeon (AMX), 2026-12-04, commit 0123456789" in table
    assert ("[c1](results/c1/summary.md): 2-core Test CPU (avx512_bf16, no AMX), 2026-12-04, commit 0123456789 "
            "(uncommitted changes in serve_app/, loadtest/ or benchmarks/) (other cells at fedcba9876)") in table
    assert "| c32 | 32 users tok/s >= 1.0x | serve_app | loadtest | 1.21x [1.07, 1.37] | met |" in table
    assert "| c1 | 1 user ITL tail <= 1.05x | serve_app_default | vllm_bench | 1.15x [0.85, 1.57] | undecided" in table
