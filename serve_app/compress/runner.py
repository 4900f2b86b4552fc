"""Runs one `CompressSpec`: loads the model, applies the method, saves a checkpoint vLLM can load.

Runs inside .venv-compress (llm-compressor, torch, transformers). Quantization, Wanda and SparseGPT
go through llm-compressor's `oneshot`; magnitude pruning and SVD are plain torch (magnitude.py, lowrank.py).
Every output directory gets a `compression.json` describing what was done, how long it took, and how
vLLM should load it (`serve_dtype`).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import torch
from tqdm import tqdm

from serve_app.compress import calibration, lowrank, magnitude
from serve_app.compress.spec import SERVE_DTYPE, SERVING_NOTES, CompressSpec

logger = logging.getLogger(__name__)

def _load(model_path: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    model.eval()
    return model, tokenizer


def calibration_windows(spec: CompressSpec, tokenizer) -> list[list[int]]:
    path = spec.calibration or calibration.CALIBRATION_FILE
    docs = calibration.read_documents(path)
    if spec.calibration_format == "chat" and tokenizer.chat_template:
        # The template closes every message itself (SmolLM2: <|im_end|>): no extra end-of-sequence token.
        docs = [tokenizer.apply_chat_template(calibration.chat_messages(doc, i), tokenize=False)
                for i, doc in enumerate(docs)]
        end = []
    else:
        end = [tokenizer.eos_token_id]
    doc_ids = [tokenizer(doc, add_special_tokens=False)["input_ids"] + end for doc in docs]
    windows = calibration.pack_windows(doc_ids, spec.max_seq_len, spec.num_samples)
    if len(windows) < spec.num_samples:
        logger.warning("calibration text gives %d windows of %d tokens (asked for %d)",
                       len(windows), spec.max_seq_len, spec.num_samples)
    return windows


def _calibration_dataset(windows: list[list[int]]):
    from datasets import Dataset

    return Dataset.from_dict({"input_ids": windows, "attention_mask": [[1] * len(w) for w in windows]})


def _recipe(spec: CompressSpec):
    from llmcompressor.modifiers.gptq import GPTQModifier
    from llmcompressor.modifiers.quantization import QuantizationModifier

    # lm_head is tied to the embeddings in SmolLM2; quantizing or pruning it hurts most for least gain.
    ignore = ["lm_head"]
    if spec.method == "w8a8":
        from llmcompressor.modifiers.transform.smoothquant import SmoothQuantModifier

        return [
            SmoothQuantModifier(smoothing_strength=spec.smoothing_strength),
            GPTQModifier(targets="Linear", scheme="W8A8", ignore=ignore),
        ]
    if spec.method == "w4a16":
        weights = {"num_bits": 4, "type": "int", "symmetric": True, "strategy": "group", "group_size": spec.group_size}
        return [GPTQModifier(config_groups={"group_0": {"targets": ["Linear"], "weights": weights}}, ignore=ignore)]
    if spec.method == "fp8":
        return [QuantizationModifier(targets="Linear", scheme="FP8_DYNAMIC", ignore=ignore)]
    # Sparsity modifiers match ignore names against "<layer>.<sub-module>", so the tied lm_head (which would
    # also zero half of the embeddings) needs a regex, not its plain name.
    ignore = ["re:.*lm_head"]
    mask_structure = "2:4" if spec.structure == "2:4" else "0:0"
    if spec.method == "wanda":
        from llmcompressor.modifiers.pruning import WandaPruningModifier

        return [WandaPruningModifier(sparsity=spec.sparsity, mask_structure=mask_structure, ignore=ignore)]
    if spec.method == "sparsegpt":
        from llmcompressor.modifiers.pruning import SparseGPTModifier

        return [SparseGPTModifier(sparsity=spec.sparsity, mask_structure=mask_structure, ignore=ignore)]
    raise ValueError(f"{spec.method} does not go through llm-compressor")


def _run_oneshot(spec: CompressSpec, model, tokenizer) -> dict:
    from llmcompressor import oneshot

    kwargs = {}
    if spec.needs_calibration:
        windows = calibration_windows(spec, tokenizer)
        kwargs = dict(
            dataset=_calibration_dataset(windows),
            num_calibration_samples=len(windows),
            max_seq_length=spec.max_seq_len,
        )
    oneshot(model=model, recipe=_recipe(spec), **kwargs)
    return {"num_calibration_samples": kwargs.get("num_calibration_samples", 0)}


def _mean_abs_inputs(model, tokenizer, spec: CompressSpec) -> dict[str, torch.Tensor]:
    """Mean |x| per input channel of each targeted linear layer over the calibration windows."""
    import re

    target_re = re.compile(spec.svd_targets)
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    hooks = []

    def make_hook(name):
        def hook(_module, inputs, _output):
            x = inputs[0].detach().float().reshape(-1, inputs[0].shape[-1])
            sums[name] = sums.get(name, 0) + x.abs().sum(0)
            counts[name] = counts.get(name, 0) + x.shape[0]
        return hook

    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and target_re.search(name):
            hooks.append(module.register_forward_hook(make_hook(name)))
    try:
        with torch.no_grad():
            for window in tqdm(calibration_windows(spec, tokenizer), desc="activation statistics"):
                model(torch.tensor([window]))
    finally:
        for h in hooks:
            h.remove()
    return {name: sums[name] / counts[name] for name in sums}


def run(spec: CompressSpec) -> dict:
    """Compresses `spec.model` into `spec.out` and returns the metadata written to compression.json."""
    out = Path(spec.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    started = time.perf_counter()
    model, tokenizer = _load(spec.model)
    details: dict = {}
    save_compressed = False
    if spec.method in ("w8a8", "w4a16", "fp8", "wanda", "sparsegpt"):
        details.update(_run_oneshot(spec, model, tokenizer))
        # Quantized weights are packed (compressed-tensors); pruned weights stay dense (no sparse format
        # that vLLM still runs faster), which llm-compressor's save does by default.
        save_compressed = spec.method in ("w8a8", "w4a16", "fp8")
    elif spec.method == "magnitude":
        achieved = magnitude.prune_linear_layers(model, spec.sparsity, spec.structure)
        details["mean_layer_sparsity"] = round(sum(achieved.values()) / len(achieved), 4)
        details["num_pruned_layers"] = len(achieved)
    elif spec.method == "svd":
        scales = _mean_abs_inputs(model, tokenizer, spec) if spec.activation_aware else None
        factors, rows = lowrank.factorize_model(model, spec.svd_targets, spec.rank, spec.energy, scales)
        from safetensors.torch import save_file

        # In a sub-folder: vLLM loads every *.safetensors at the checkpoint's top level.
        (out / "lowrank").mkdir()
        save_file(factors, str(out / "lowrank" / "factors.safetensors"))
        details["layers"] = rows
        details["dense_params"] = sum(r["dense_params"] for r in rows)
        details["factor_params"] = sum(r["factor_params"] for r in rows)
        details["mean_rank"] = round(sum(r["rank"] for r in rows) / len(rows), 1)
    if spec.method in ("wanda", "sparsegpt", "magnitude"):
        # The tied embedding / lm_head must come out unpruned (a check on the ignore list above).
        details["lm_head_zero_fraction"] = round((model.lm_head.weight == 0).float().mean().item(), 4)
    compress_s = time.perf_counter() - started
    if save_compressed:
        model.save_pretrained(out, save_compressed=True)
    else:
        model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    meta = {
        "spec": spec.model_dump(),
        "compress_s": round(compress_s, 1),
        "serve_dtype": SERVE_DTYPE.get(spec.method, "float32"),
        "serving_note": SERVING_NOTES[spec.method],
        **details,
    }
    (out / "compression.json").write_text(json.dumps(meta, indent=2))
    return meta
