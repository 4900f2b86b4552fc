"""Minimal checkpoint folders for unit tests of the dtype decision: only the `config.json` it reads."""

from __future__ import annotations

import json
from pathlib import Path

INT8 = {"num_bits": 8, "type": "int"}


def write_w8a8_checkpoint(root: Path) -> Path:
    """An llm-compressor W8A8 (INT8 weights and activations) checkpoint's config, stored in float32."""
    root.mkdir(exist_ok=True)
    (root / "config.json").write_text(json.dumps({"torch_dtype": "float32", "quantization_config": {
        "quant_method": "compressed-tensors",
        "config_groups": {"group_0": {"weights": INT8, "input_activations": INT8, "targets": ["Linear"]}}}}))
    return root
