"""The activation dtype a model replica's engine runs in when the config says `dtype: auto`.

vLLM's own "auto" downcasts float32 checkpoints to bfloat16 on every x86 CPU. That is right only where the CPU
has bf16 instructions. Measured with SmolLM2-135M (`benchmarks/offline_engine_speed.py`, batch 16, eager):

- AMD EPYC with avx512_bf16: bfloat16 282 tok/s vs float32 170 (1.66x);
- the guide's CPUs without avx512_bf16: bfloat16 20.5 tok/s vs float32 27.5 at batch 2 (0.75x).

So on CPUs, "auto" means bfloat16 where the CPU has bf16 instructions (avx512_bf16 or AMX) and float32
elsewhere, unless the checkpoint needs one (compression.json's `serve_dtype`: vLLM's CPU int4 kernel refuses
float32 activations). On GPUs "auto" is left to vLLM. An explicit dtype in the config always wins.
"""

from __future__ import annotations

import json
from pathlib import Path

BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def choose_dtype(requested: str, *, on_gpu: bool, cpu_flags: frozenset[str], required: str | None = None) -> str:
    """Pure decision: the dtype to hand vLLM for a replica."""
    if requested != "auto":
        return requested
    if on_gpu:
        return "auto"
    if required:
        return required
    return "bfloat16" if cpu_flags & BF16_CPU_FLAGS else "float32"


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


def required_dtype(checkpoint: str) -> str | None:
    """The dtype a compressed checkpoint must be served with (W4A16: bfloat16), from its compression.json."""
    meta = Path(checkpoint) / "compression.json"
    try:
        dtype = json.loads(meta.read_text()).get("serve_dtype")
    except (OSError, ValueError):
        return None
    return dtype if dtype and dtype != "float32" else None
