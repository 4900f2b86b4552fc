"""Pure parts of serve_app.compress: rank selection, pruning masks, windows, metrics, CLI validation."""

from __future__ import annotations

import argparse
import math

import pytest
import torch

from serve_app.compress import calibration, cli, evaluate, lowrank, magnitude, metrics, report
from serve_app.compress.prompts import FACT_PROMPTS, is_correct


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="serve-app")
    cli.add_subcommands(parser.add_subparsers(dest="command", required=True))
    return parser


def _spec(argv: list[str]):
    return cli.spec_from_args(_parser().parse_args(["compress", "--model", "m", "--out", "o", *argv]))


# --- low-rank -------------------------------------------------------------------------------------


def test_rank_for_energy_picks_smallest_rank_reaching_threshold():
    s = torch.tensor([3.0, 2.0, 1.0, 0.0])  # energies 9, 4, 1 of 14
    assert lowrank.rank_for_energy(s, 9 / 14) == 1
    assert lowrank.rank_for_energy(s, 9 / 14 + 1e-6) == 2
    assert lowrank.rank_for_energy(s, 0.99) == 3
    assert lowrank.rank_for_energy(s, 1.0) == 3


def test_rank_for_energy_rejects_bad_threshold():
    with pytest.raises(ValueError):
        lowrank.rank_for_energy(torch.ones(3), 0.0)


def test_factorize_exact_for_low_rank_matrix():
    torch.manual_seed(0)
    w = torch.randn(32, 3) @ torch.randn(3, 24)
    fact = lowrank.factorize(w, energy=0.999999)
    assert fact.rank == 3
    assert fact.a.shape == (32, 3) and fact.b.shape == (3, 24)
    assert torch.allclose(fact.dense(), w, atol=1e-4)


def test_factorize_fixed_rank_and_activation_aware_keeps_scaled_columns():
    torch.manual_seed(0)
    w = torch.randn(16, 16)
    scale = torch.ones(16)
    scale[0] = 100.0  # column 0 meets large inputs: activation-aware SVD should reconstruct it best
    plain = lowrank.factorize(w, rank=4)
    aware = lowrank.factorize(w, rank=4, input_scale=scale)
    assert plain.rank == aware.rank == 4
    err_plain = (plain.dense()[:, 0] - w[:, 0]).norm()
    err_aware = (aware.dense()[:, 0] - w[:, 0]).norm()
    assert err_aware < err_plain


def test_factorize_model_replaces_targets_only():
    torch.manual_seed(0)
    model = torch.nn.ModuleDict({"mlp": torch.nn.ModuleDict({"up_proj": torch.nn.Linear(8, 12, bias=False)}),
                                 "attn": torch.nn.Linear(8, 8, bias=False)})
    attn_before = model["attn"].weight.clone()
    factors, rows = lowrank.factorize_model(model, r"mlp\.up_proj$", rank=2)
    assert set(factors) == {"mlp.up_proj.lowrank_a", "mlp.up_proj.lowrank_b"}
    assert torch.linalg.matrix_rank(model["mlp"]["up_proj"].weight).item() == 2
    assert torch.equal(model["attn"].weight, attn_before)
    assert rows[0]["factor_params"] == 2 * (8 + 12) and rows[0]["break_even_rank"] == 4


def test_break_even_rank():
    assert lowrank.break_even_rank(1536, 576) == 418  # 1536*576 / 2112 = 418.9
    assert 418 * (1536 + 576) < 1536 * 576 < 419 * (1536 + 576)


# --- magnitude pruning ----------------------------------------------------------------------------


def test_unstructured_mask_hits_target_sparsity_and_drops_smallest():
    torch.manual_seed(0)
    w = torch.randn(64, 64)
    mask = magnitude.magnitude_mask(w, 0.75, "unstructured")
    assert mask.float().mean().item() == pytest.approx(0.25, abs=1e-3)
    assert w.abs()[mask].min() >= w.abs()[~mask].max()


def test_two_four_mask_keeps_two_largest_of_every_four():
    w = torch.tensor([[0.1, -5.0, 3.0, 0.2, 1.0, 2.0, -3.0, 4.0]])
    mask = magnitude.magnitude_mask(w, 0.5, "2:4")
    assert mask.tolist() == [[False, True, True, False, False, False, True, True]]
    torch.manual_seed(0)
    big = magnitude.magnitude_mask(torch.randn(16, 32), 0.5, "2:4")
    assert (big.reshape(16, 8, 4).sum(-1) == 2).all()


def test_two_four_mask_needs_columns_divisible_by_four():
    with pytest.raises(ValueError):
        magnitude.magnitude_mask(torch.randn(4, 6), 0.5, "2:4")


def test_prune_linear_layers_skips_lm_head():
    torch.manual_seed(0)
    model = torch.nn.ModuleDict({"proj": torch.nn.Linear(16, 16), "lm_head": torch.nn.Linear(16, 16)})
    achieved = magnitude.prune_linear_layers(model, 0.5, "2:4")
    assert list(achieved) == ["proj"] and achieved["proj"] == pytest.approx(0.5)
    assert (model["lm_head"].weight != 0).all()


# --- calibration windows and metrics --------------------------------------------------------------


def test_read_documents_splits_paragraphs_and_skips_comments(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("# comment\nfirst line\ncontinued\n\n\nsecond\n")
    assert calibration.read_documents(path) == ["first line continued", "second"]


def test_pack_windows_full_windows_only():
    assert calibration.pack_windows([[1, 2, 3], [4, 5]], 2) == [[1, 2], [3, 4]]
    assert calibration.pack_windows([[1, 2, 3]], 8) == [[1, 2, 3]]
    assert calibration.pack_windows([[1, 2, 3, 4, 5, 6]], 2, max_windows=2) == [[1, 2], [3, 4]]


def test_chat_calibration_wraps_paragraphs_as_replies_to_generic_instructions():
    first, seventh = calibration.chat_messages("para", 0), calibration.chat_messages("para", 6)
    assert first[1] == {"role": "assistant", "content": "para"} and first[0]["role"] == "user"
    assert first[0] == seventh[0]  # instructions cycle
    # None of the instructions asks an evaluation question (that would leak answers into calibration).
    questions = {p.question for p in FACT_PROMPTS}
    assert not questions & set(calibration.CHAT_INSTRUCTIONS)


def test_shipped_texts_are_disjoint_and_large_enough():
    cal = calibration.read_documents(calibration.CALIBRATION_FILE)
    held = calibration.read_documents(calibration.HELDOUT_FILE)
    assert len(" ".join(cal).split()) > 2000 and len(" ".join(held).split()) > 1000
    assert not set(cal) & set(held)


def test_perplexity_and_agreement():
    assert metrics.perplexity([math.log(0.5)] * 4) == pytest.approx(2.0)
    assert metrics.prefix_agreement([1, 2, 3, 4], [1, 2, 9, 4]) == 0.5
    assert metrics.prefix_agreement([1, 2], [1, 2]) == 1.0


def test_answer_check_and_report_rows():
    assert FACT_PROMPTS[0].question == "What is the capital of France?"
    assert is_correct("The capital of France is Paris.", FACT_PROMPTS[0])
    by_question = {p.question: p for p in FACT_PROMPTS}
    freezing = by_question["What is the freezing point of water in degrees Celsius?"]
    assert is_correct("Water freezes at 0 degrees Celsius.", freezing)
    assert not is_correct("It is 100 degrees.", freezing) and not is_correct("It is -18.0°C.", freezing)
    assert is_correct("Egypt lies on the African continent.", by_question["On which continent is Egypt?"])
    assert not is_correct("a million cats", by_question["Which animal is known as the king of the jungle?"])
    answers = [{"question": p.question, "output_ids": [1, 2], "text": p.expected[0]} for p in FACT_PROMPTS]
    speed = [{"concurrency": 16, "output_tokens_per_s": 100.0, "ttft_p50_ms": 5.0}]
    base = {"name": "base", "method": "base", "size_mb": 538.0,
            "result": {"perplexity": 10.0, "answers": answers, "speed": speed}}
    fast = {"name": "w8a8", "method": "w8a8", "size_mb": 200.0,
            "result": {"perplexity": 10.2, "answers": answers, "speed": [dict(speed[0], output_tokens_per_s=150.0)]}}
    broken = {"name": "fp8", "method": "fp8", "size_mb": 180.0, "result": {"error": "ValueError: no fp8 on CPU"}}
    rows = report.build_rows(base, [fast, broken])
    assert rows[1]["speedup_c16"] == 1.5 and rows[1]["ppl_change_pct"] == 2.0
    assert rows[1]["num_correct"] == f"{len(FACT_PROMPTS)}/{len(FACT_PROMPTS)}" and rows[1]["agreement"] == 1.0
    assert "not served" in rows[2]["note"]
    slow = {"name": "fp8", "method": "fp8", "size_mb": 180.0,
            "result": {"perplexity": 10.1, "answers": answers, "incomplete": "stopped at the 900-s limit"}}
    partial = report.build_rows(base, [slow])[1]
    assert partial["perplexity"] == 10.1 and "tok_s_c16" not in partial and "900-s limit" in partial["note"]
    assert report.markdown_table(rows).count("\n") == 4
    assert rows[0]["dtype"] == "float32"  # entries without a dtype are the fp32 default


def test_evaluate_dtype_override_names_the_row(tmp_path):
    assert evaluate.split_dtype("/m/w8a8") == ("/m/w8a8", None)
    assert evaluate.split_dtype("/m/w8a8@bfloat16") == ("/m/w8a8", "bfloat16")
    with pytest.raises(ValueError, match="must be one of"):
        evaluate.split_dtype("/m/w8a8@int3")
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "model.safetensors").write_bytes(b"x" * 10)
    plain, bf16 = evaluate.describe(str(tmp_path / "base")), evaluate.describe(f"{tmp_path / 'base'}@bfloat16")
    assert (plain["name"], plain["dtype"]) == ("base", "float32")
    # The same checkpoint at two dtypes gets two rows (and two raw/ files) in one report.
    assert (bf16["name"], bf16["dtype"], bf16["path"]) == ("base@bfloat16", "bfloat16", str(tmp_path / "base"))
    (tmp_path / "base" / "compression.json").write_text(
        '{"spec": {"method": "w8a8", "smoothing_strength": 0.5, "calibration_format": "chat"}, "serve_dtype": "float32"}')
    assert evaluate.describe(str(tmp_path / "base"))["method"] == "w8a8 sq 0.5, chat calibration"


# --- CLI validation -------------------------------------------------------------------------------


def test_cli_defaults_and_pruning_sparsity():
    assert _spec(["--method", "w8a8"]).num_samples == 32
    assert _spec(["--method", "wanda"]).sparsity == 0.5
    assert _spec(["--method", "sparsegpt", "--structure", "2:4"]).sparsity == 0.5
    assert _spec(["--method", "magnitude", "--sparsity", "0.3"]).sparsity == 0.3


@pytest.mark.parametrize(
    "argv",
    [
        ["--method", "w8a8", "--sparsity", "0.5"],  # sparsity on a quantization method
        ["--method", "wanda", "--structure", "2:4", "--sparsity", "0.7"],  # 2:4 is 50%
        ["--method", "magnitude", "--sparsity", "1.5"],
        ["--method", "svd"],  # needs --rank or --energy
        ["--method", "w4a16", "--rank", "8"],
        ["--method", "wanda", "--smoothing-strength", "0.5"],  # SmoothQuant is part of w8a8 only
        ["--method", "svd", "--energy", "0"],
        ["--method", "w8a8", "--num-samples", "0"],
    ],
)
def test_cli_rejects_invalid_combinations(argv):
    with pytest.raises(Exception):
        _spec(argv)


def test_cli_rejects_rank_and_energy_together():
    with pytest.raises(SystemExit):
        _parser().parse_args(["compress", "--model", "m", "--out", "o", "--method", "svd", "--rank", "4",
                              "--energy", "0.9"])


def test_spec_round_trips_through_argv():
    spec = _spec(["--method", "svd", "--energy", "0.9", "--activation-aware", "--num-samples", "8"])
    w8a8 = _spec(["--method", "w8a8", "--smoothing-strength", "0.8"])  # not the default: must survive the trip
    assert cli.spec_from_args(_parser().parse_args(cli.spec_to_argv(w8a8))).smoothing_strength == 0.8
    again = cli.spec_from_args(_parser().parse_args(cli.spec_to_argv(spec)))
    assert again == spec
    assert spec.calibration_format == "chat"  # calibrate on what served requests look like, by default
    text = _spec(["--method", "w8a8", "--calibration-format", "text"])
    assert cli.spec_from_args(_parser().parse_args(cli.spec_to_argv(text))).calibration_format == "text"


def test_compress_without_venv_says_how_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "in_compress_env", lambda: False)
    args = _parser().parse_args(["compress", "--model", str(tmp_path), "--out", str(tmp_path / "o"), "--method",
                                 "w8a8", "--compress-python", str(tmp_path / "missing" / "python")])
    assert args.func(args) == 2
    assert "install_compress.sh" in capsys.readouterr().err


def test_the_compression_venv_is_found_outside_a_checkout(tmp_path, monkeypatch):
    from serve_app.compress import cli

    monkeypatch.setattr(cli, "REPO_ROOT", tmp_path / "site-packages")  # an installed wheel: no venv beside it
    assert cli.find_compress_python(None, environ={}, cwd=tmp_path) is None
    python = tmp_path / ".venv-compress" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.touch()
    assert cli.find_compress_python(None, environ={}, cwd=tmp_path) == python  # ./.venv-compress
    other = tmp_path / "elsewhere-python"
    other.touch()
    assert cli.find_compress_python(None, environ={cli.COMPRESS_PYTHON_ENV: str(other)}, cwd=tmp_path) == other
    assert cli.find_compress_python(str(tmp_path / "missing"), environ={}, cwd=tmp_path) is None  # no fallback
