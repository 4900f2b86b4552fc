"""What to compress and how: one validated `CompressSpec`, no I/O, no torch."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

QUANTIZATION_METHODS = ("w8a8", "w4a16", "fp8")
PRUNING_METHODS = ("wanda", "sparsegpt", "magnitude")
LOWRANK_METHODS = ("svd",)
METHODS = QUANTIZATION_METHODS + PRUNING_METHODS + LOWRANK_METHODS

Structure = Literal["unstructured", "2:4"]

# Layers whose input dimension is not a multiple of the group size cannot be group-quantized;
# SmolLM2 has 576 and 1536 input columns, so 64 divides both (llm-compressor's preset uses 128).
DEFAULT_W4A16_GROUP_SIZE = 64


# dtype vLLM's CPU backend should serve each method with. fp32 is fastest on CPUs without bf16 instructions;
# the CPU int4 kernel refuses fp32 activations, so W4A16 needs bfloat16.
SERVE_DTYPE = {"w4a16": "bfloat16"}
# What each method can buy in vLLM today; repeated in the evaluation report.
SERVING_NOTES = {
    "w8a8": "INT8 weights and activations; vLLM CPU runs int8 GEMMs (oneDNN, VNNI).",
    "w4a16": "INT4 weights, bf16 activations; vLLM CPU int4 kernel needs bfloat16.",
    "fp8": "FP8 weights/activations, for GPUs (Hopper and later). vLLM's CPU backend runs it through a generic "
    "torch._scaled_mm path (ChannelWiseTorchFP8ScaledMMLinearKernel): right answers, many times slower.",
    "wanda": "Zeros stored dense: vLLM has no sparse kernels (its 2:4 ones were removed), so no speed or memory gain.",
    "sparsegpt": "Zeros stored dense: vLLM removed its 2:4 sparse kernels, so no speed or memory gain.",
    "magnitude": "Zeros stored dense: baseline for Wanda/SparseGPT; no speed in vLLM.",
    "svd": "Factors saved in lowrank/factors.safetensors; the served checkpoint is A@B re-multiplied "
    "(dense): no speed. Serving factors natively needs a custom model class.",
}


class CompressSpec(BaseModel):
    """A compression job. Validation rejects options that do not apply to the chosen method."""

    model_config = ConfigDict(extra="forbid")

    model: str
    method: Literal["w8a8", "w4a16", "fp8", "wanda", "sparsegpt", "magnitude", "svd"]
    out: str
    # Pruning: fraction of weights set to zero in each pruned layer. 2:4 implies 0.5.
    sparsity: float | None = Field(None, gt=0.0, lt=1.0)
    structure: Structure = "unstructured"
    # Low-rank: keep a fixed rank, or the smallest rank keeping this fraction of singular-value energy.
    rank: int | None = Field(None, ge=1)
    energy: float | None = Field(None, gt=0.0, le=1.0)
    activation_aware: bool = False
    # Regex on module names of the linear layers to factorize.
    svd_targets: str = r"mlp\.(gate|up|down)_proj$"
    group_size: int = Field(DEFAULT_W4A16_GROUP_SIZE, ge=8)
    # Calibration text file (paragraphs separated by blank lines); None uses serve_app/data/calibration.txt.
    calibration: str | None = None
    # "chat": each paragraph is an assistant reply inside the model's chat template (what served requests look
    # like); "text": plain paragraphs.
    calibration_format: Literal["chat", "text"] = "chat"
    num_samples: int = Field(32, ge=1)
    max_seq_len: int = Field(256, ge=16)
    # SmoothQuant's migration strength (the paper's default, 0.5). On SmolLM2-135M, 0.5 and 0.8 (llm-compressor's
    # examples) gave the same perplexity and 0.5 kept more greedy answers (results/compression/README.md).
    smoothing_strength: float = Field(0.5, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _check_method_options(self) -> "CompressSpec":
        is_pruning = self.method in PRUNING_METHODS
        if not is_pruning and (self.sparsity is not None or self.structure != "unstructured"):
            raise ValueError(f"--sparsity/--structure apply to {', '.join(PRUNING_METHODS)}, not {self.method}")
        if is_pruning:
            if self.structure == "2:4":
                if self.sparsity not in (None, 0.5):
                    raise ValueError(f"2:4 structure means sparsity 0.5, got {self.sparsity}")
                self.sparsity = 0.5
            elif self.sparsity is None:
                self.sparsity = 0.5
        if self.method != "w8a8" and "smoothing_strength" in self.model_fields_set:
            raise ValueError(f"--smoothing-strength applies to w8a8, not {self.method}")
        if self.method in LOWRANK_METHODS:
            if (self.rank is None) == (self.energy is None):
                raise ValueError("svd needs exactly one of --rank or --energy")
        elif self.rank is not None or self.energy is not None or self.activation_aware:
            raise ValueError(f"--rank/--energy/--activation-aware apply to svd, not {self.method}")
        return self

    @property
    def needs_calibration(self) -> bool:
        """FP8 dynamic and magnitude pruning use no data; plain SVD neither."""
        if self.method in ("fp8", "magnitude"):
            return False
        if self.method == "svd":
            return self.activation_aware
        return True
