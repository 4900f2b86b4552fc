"""Test LoRA adapters built locally with peft (no vLLM): they load in peft, change greedy output, build once.

Also vLLM's CPU LoRA ops with serve_app's fix: a base-model token (slot index -1) gets no adapter delta.
"""

from __future__ import annotations

import json
import threading

import pytest

pytest.importorskip("peft")

from serve_app.platform.adapters import prepare_test_adapter  # noqa: E402
from serve_app.platform.models import prepare_tiny_model  # noqa: E402
from tests.support_lora import greedy_token_ids  # noqa: E402

PROMPT = [1, 72, 101, 108, 108, 111, 32, 119, 111, 114, 108, 100]  # token ids of the tiny model's vocabulary
NEW_TOKENS = 16


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    return str(prepare_tiny_model(tmp_path_factory.mktemp("models")))


@pytest.fixture(scope="module")
def adapter_dir(tiny_model, tmp_path_factory):
    return prepare_test_adapter(tiny_model, tmp_path_factory.mktemp("adapters") / "tiny-lora")


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(path / "adapter_model.safetensors"))


def test_adapter_is_a_peft_lora_checkpoint_for_its_base_model(adapter_dir, tiny_model):
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 8
    assert config["base_model_name_or_path"] == tiny_model
    assert set(config["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    weights = _weights(adapter_dir)
    # 4 layers x 7 projections x (A, B), all float32 and lora_B non-zero (peft's default init leaves B at zero).
    assert len(weights) == 4 * 7 * 2
    assert all(str(t.dtype) == "torch.float32" for t in weights.values())
    assert all(t.abs().sum() > 0 for name, t in weights.items() if "lora_B" in name)


def test_adapter_changes_greedy_output(adapter_dir, tiny_model):
    base = greedy_token_ids(tiny_model, PROMPT, NEW_TOKENS)
    adapted = greedy_token_ids(tiny_model, PROMPT, NEW_TOKENS, adapter_path=str(adapter_dir))
    assert len(base) == len(adapted) == NEW_TOKENS
    assert adapted != base


def test_reference_decoding_is_greedy_continuation(tiny_model):
    """Each step's token is the argmax of a full forward pass over prompt + tokens so far (no KV-cache drift)."""
    import torch
    from transformers import AutoModelForCausalLM

    ids = greedy_token_ids(tiny_model, PROMPT, 6)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([PROMPT + ids])).logits[0]
    assert [int(t) for t in logits[len(PROMPT) - 1 : -1].argmax(-1)] == ids


def test_reference_decoding_stops_after_a_stop_token(tiny_model):
    first = greedy_token_ids(tiny_model, PROMPT, 1)[0]
    assert greedy_token_ids(tiny_model, PROMPT, NEW_TOKENS, stop_token_ids=(first,)) == [first]


def test_preparation_is_idempotent_and_deterministic(adapter_dir, tiny_model, tmp_path):
    before = (adapter_dir / "adapter_model.safetensors").stat().st_mtime_ns
    assert prepare_test_adapter(tiny_model, adapter_dir) == adapter_dir
    assert (adapter_dir / "adapter_model.safetensors").stat().st_mtime_ns == before  # not rebuilt
    # The same arguments elsewhere give the same weights; another seed gives other weights.
    again = _weights(prepare_test_adapter(tiny_model, tmp_path / "again"))
    other = _weights(prepare_test_adapter(tiny_model, tmp_path / "other", seed=1))
    original = _weights(adapter_dir)
    assert all(again[name].equal(original[name]) for name in original)
    assert any(not other[name].equal(original[name]) for name in original)


def test_other_arguments_rebuild_the_folder(tiny_model, tmp_path):
    target = tmp_path / "lora"
    prepare_test_adapter(tiny_model, target, rank=8)
    prepare_test_adapter(tiny_model, target, rank=4)
    assert json.loads((target / "adapter_config.json").read_text())["r"] == 4
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".prepare-")]  # no temporary folder left


def test_concurrent_preparation_builds_one_adapter(tiny_model, tmp_path):
    target = tmp_path / "lora"
    results, errors = [], []

    def prepare():
        try:
            results.append(prepare_test_adapter(tiny_model, target))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=prepare) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and results == [target] * 3
    assert (target / "adapter_model.safetensors").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".prepare-")]


def test_cpu_lora_ops_give_base_tokens_no_adapter_delta():
    """vLLM's CPU ops index slot -1 (no adapter) as the last slot; with the fix such tokens get exactly nothing."""
    pytest.importorskip("vllm.lora.ops.torch_ops")
    import torch

    import serve_app.server.vllm_patches.lora_cpu_no_adapter as fix
    import vllm.lora.ops.torch_ops.lora_ops as ops
    from vllm.lora.punica_wrapper import punica_cpu

    fix.apply()
    assert getattr(punica_cpu.bgmv_shrink, "_serve_app_patched", False)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(4, 16, generator=generator)
    lora_a = torch.randn(1, 1, 8, 16, generator=generator)  # one slot (max_loras=1), holding an adapter
    lora_b = torch.randn(1, 1, 32, 8, generator=generator)
    indices = torch.tensor([-1, 0, -1, 0])
    ones = torch.ones(4, dtype=torch.long)
    buffer = torch.zeros(4, 8)
    ops.sgmv_shrink(x, lora_a, buffer, None, ones, indices, 4, 1, 4, 1.0)
    out = torch.zeros(4, 32)
    ops.sgmv_expand(buffer, lora_b, out, None, ones, indices, 4, 1, 4, True)
    sliced = torch.zeros(4, 40)
    punica_cpu.bgmv_expand_slice(buffer, lora_b, sliced, indices, 8, 32, True)
    expected = torch.einsum("bi,oi->bo", x @ lora_a[0, 0].T, lora_b[0, 0])
    for row in (0, 2):
        assert out[row].abs().sum() == 0 and sliced[row].abs().sum() == 0
    for row in (1, 3):
        assert torch.allclose(out[row], expected[row]) and torch.allclose(sliced[row, 8:], expected[row])
