"""The activation dtype a model replica's engine runs in when the config says `dtype: auto`.

Rule: `auto` never lowers precision below what the checkpoint stores. Lower precision is an explicit setting
(`engine.dtype: bfloat16`), because it can change answers: on an Intel Xeon with AMX, vLLM's bf16 CPU kernels
flipped the default model's first greedy token ("L'Étoile ..." instead of "The capital of France is Paris.";
the float32 logit margin there is 0.09).

On CPUs:

- a float32 (or float16, or unknown) checkpoint runs in float32 (bf16 has fewer mantissa bits than fp16);
- a bfloat16 checkpoint runs in bfloat16 where the CPU has bf16 instructions (avx512_bf16 or AMX) and in float32
  where it has none (bf16 without them was 0.75x of float32 on the guide's CPUs);
- a compressed checkpoint runs in the activation dtype its kernels need on the CPU at hand: INT8 W8A8 in
  bfloat16 where the CPU has bf16 instructions (vLLM's int8 kernel on the AMX Xeon says
  `int8_scaled_mm_with_quant: expect A to be bfloat16 or half` for float32), float32 elsewhere (the only path
  that CPU has, and it worked on AMD EPYC without bf16); W4A16 (int4 weights) always bfloat16 (the CPU int4
  kernel refuses float32), also when compression.json's `serve_dtype` says so.

On GPUs `auto` is left to vLLM. An explicit dtype in the config always wins, except the one that cannot run: float32
for an INT8 W8A8 checkpoint on a CPU with AMX is refused here, at replica start, instead of killing the engine at
its first request (results/compression/speed_pair_w8a8_fp32_amx_failed.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
AMX_TILE_FLAG = "amx_tile"  # vLLM 0.32 picks its AMX int8 kernel for W8A8 wherever the CPU has AMX tiles


@dataclass(frozen=True)
class CheckpointDtype:
    """What a checkpoint says about its numbers: the dtype its weights are stored in, and how they are quantized."""

    stored: str | None = None  # "float32" | "bfloat16" | "float16" | None (unknown)
    weight_bits: int | None = None  # 8 (W8A8), 4 (W4A16), None (dense)
    int8_activations: bool = False
    required: str | None = None  # compression.json's serve_dtype, when it is not float32


def choose_dtype(requested: str, *, on_gpu: bool, cpu_flags: frozenset[str],
                 checkpoint: CheckpointDtype = CheckpointDtype()) -> str:
    """Pure decision: the dtype to hand vLLM for a replica."""
    if requested != "auto":
        if requested == "float32" and not on_gpu and checkpoint.int8_activations and AMX_TILE_FLAG in cpu_flags:
            raise ValueError(
                "engine.dtype float32 cannot serve this INT8 W8A8 checkpoint on a CPU with AMX: vLLM's AMX int8 "
                "kernel takes only bfloat16 or float16 activations and its engine dies at the first request "
                "(int8_scaled_mm_with_quant: expect A to be bfloat16 or half). Use engine.dtype auto or bfloat16.")
        return requested
    if on_gpu:
        return "auto"
    has_bf16 = bool(cpu_flags & BF16_CPU_FLAGS)
    if checkpoint.required:
        return checkpoint.required
    if checkpoint.weight_bits is not None and checkpoint.weight_bits < 8:
        return "bfloat16"
    if checkpoint.int8_activations:
        return "bfloat16" if has_bf16 else "float32"
    if checkpoint.stored == "bfloat16":
        return "bfloat16" if has_bf16 else "float32"
    return "float32"


def read_cpuinfo(path: str = "/proc/cpuinfo") -> tuple[str, frozenset[str]]:
    """(model name, instruction-set flags) of this machine's first CPU; ("", empty) where unreadable."""
    model, flags = "", frozenset()
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith("model name") and not model:
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return model, flags


def read_checkpoint_dtype(checkpoint: str) -> CheckpointDtype:
    """A local checkpoint's stored dtype and quantization, from its config.json and compression.json."""
    root = Path(checkpoint)
    config = _read_json(root / "config.json")
    stored = config.get("dtype") or config.get("torch_dtype")
    bits, int8_acts = _quantization(config.get("quantization_config") or {})
    required = _read_json(root / "compression.json").get("serve_dtype")
    return CheckpointDtype(stored=stored if isinstance(stored, str) else None, weight_bits=bits,
                           int8_activations=int8_acts,
                           required=required if required and required != "float32" else None)


def _quantization(quant: dict) -> tuple[int | None, bool]:
    """(weight bits, int8 activations) of a quantization_config (compressed-tensors, GPTQ, AWQ)."""
    if not quant:
        return None, False
    groups = (quant.get("config_groups") or {}).values()
    weight_bits = [g.get("weights", {}).get("num_bits") for g in groups if isinstance(g, dict) and g.get("weights")]
    int8_acts = any(isinstance(g, dict) and (g.get("input_activations") or {}).get("type") == "int"
                    and (g.get("input_activations") or {}).get("num_bits") == 8 for g in groups)
    bits = min((b for b in weight_bits if isinstance(b, int)), default=quant.get("bits"))
    return (bits if isinstance(bits, int) else None), int8_acts


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
