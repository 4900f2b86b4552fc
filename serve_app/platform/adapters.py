"""LoRA adapters built locally, offline, for tests and demos.

`prepare_test_adapter` builds a peft LoRA adapter on a local base checkpoint (the tiny or the default model):
no training, just seeded random low-rank weights on every attention and MLP projection, of a size that
moves greedy output away from the base model's without turning it into noise. It is saved the way a real
fine-tune would be (`adapter_config.json` + `adapter_model.safetensors`), so vLLM and peft load it as is.

Preparation is idempotent and guarded by a file lock, like the model checkpoints (`models.py`). `peft` is a
test dependency (the `test` extra), imported only when an adapter is built.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

from serve_app.platform.models import _is_ready, _locked, _publish

logger = logging.getLogger(__name__)

# Llama-style projection names: vLLM packs q/k/v into qkv_proj and gate/up into gate_up_proj, so covering
# all of them exercises its packed LoRA layers as well as the plain ones.
DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# Standard deviation of lora_B's entries (lora_A keeps peft's Kaiming-uniform init, scaling alpha / rank = 2).
DEFAULT_INIT_SCALE = 0.05
_PARAMS_FILE = "serve_app_adapter.json"


def _params(base_model_path: str, rank: int, seed: int, init_scale: float, target_modules) -> dict:
    return {
        "base_model_path": str(Path(base_model_path).expanduser().resolve()),
        "rank": rank,
        "seed": seed,
        "init_scale": init_scale,
        "target_modules": list(target_modules),
    }


def _is_current(target: Path, params: dict) -> bool:
    if not _is_ready(target):
        return False
    try:
        return json.loads((target / _PARAMS_FILE).read_text()) == params
    except (OSError, ValueError):
        return False


def prepare_test_adapter(
    base_model_path: str,
    out_dir: Path,
    rank: int = 8,
    seed: int = 0,
    *,
    init_scale: float = DEFAULT_INIT_SCALE,
    target_modules=DEFAULT_TARGET_MODULES,
) -> Path:
    """Build a LoRA adapter for `base_model_path` in `out_dir` (once) and return `out_dir`.

    The same arguments give the same weights. An `out_dir` built with other arguments is rebuilt.
    """
    target = Path(out_dir).expanduser()
    params = _params(base_model_path, rank, seed, init_scale, target_modules)
    if _is_current(target, params):
        return target
    with _locked(target):
        if not _is_current(target, params):
            tmp_dir = Path(tempfile.mkdtemp(prefix=".prepare-", dir=target.parent))
            _build_adapter(tmp_dir, params)
            _publish(tmp_dir, target)
    return target


def _build_adapter(tmp_dir: Path, params: dict) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    logger.info("Building a rank-%d LoRA adapter for %s (once)", params["rank"], params["base_model_path"])
    base = AutoModelForCausalLM.from_pretrained(params["base_model_path"], dtype=torch.float32)
    config = LoraConfig(
        r=params["rank"],
        lora_alpha=2 * params["rank"],
        lora_dropout=0.0,
        bias="none",
        target_modules=list(params["target_modules"]),
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(params["seed"])  # lora_A's Kaiming init
    model = get_peft_model(base, config)
    generator = torch.Generator().manual_seed(params["seed"] + 1)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * params["init_scale"])
    model.save_pretrained(tmp_dir, safe_serialization=True)
    (tmp_dir / _PARAMS_FILE).write_text(json.dumps(params, indent=2) + "\n")
