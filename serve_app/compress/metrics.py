"""Pure evaluation math: perplexity, greedy agreement, percentiles, file sizes."""

from __future__ import annotations

import math
from pathlib import Path


def perplexity(token_logprobs: list[float]) -> float:
    """exp of the mean negative log-likelihood (natural log) of the predicted tokens."""
    if not token_logprobs:
        raise ValueError("no token logprobs")
    return math.exp(-sum(token_logprobs) / len(token_logprobs))


def prefix_agreement(base_ids: list[int], other_ids: list[int]) -> float:
    """Fraction of the base's greedy tokens that `other` reproduces before the first divergence.

    1.0 means identical output; a single early flip scores low even if the rest reads fine, which is
    what a user sees: greedy decoding diverges for good after one different token.
    """
    if not base_ids:
        return 1.0 if not other_ids else 0.0
    num_same = 0
    for base_id, other_id in zip(base_ids, other_ids):
        if base_id != other_id:
            break
        num_same += 1
    return num_same / len(base_ids)


def checkpoint_size_mb(path: str | Path) -> float:
    """MB (10^6 bytes) of the weight files vLLM loads: *.safetensors / *.bin at the top level."""
    root = Path(path)
    num_bytes = sum(p.stat().st_size for p in root.iterdir() if p.suffix in (".safetensors", ".bin") and p.is_file())
    return num_bytes / 1e6
