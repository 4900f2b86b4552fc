"""Magnitude pruning: the data-free baseline that Wanda and SparseGPT are measured against."""

from __future__ import annotations

import re

import torch


def magnitude_mask(weight: torch.Tensor, sparsity: float, structure: str = "unstructured") -> torch.Tensor:
    """Boolean keep-mask for a [out, in] weight: True where the weight survives.

    unstructured: the `sparsity` fraction of smallest |w| in the whole matrix is dropped (ties may keep a few more).
    2:4: in every run of 4 consecutive input columns of a row, the 2 largest |w| are kept.
    """
    if weight.dim() != 2:
        raise ValueError(f"expected a 2-D weight, got shape {tuple(weight.shape)}")
    magnitude = weight.detach().abs().float()
    if structure == "2:4":
        num_out, num_in = magnitude.shape
        if num_in % 4:
            raise ValueError(f"2:4 needs input columns divisible by 4, got {num_in}")
        groups = magnitude.reshape(num_out, num_in // 4, 4)
        keep_idx = groups.topk(2, dim=-1).indices
        mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, keep_idx, True)
        return mask.reshape(num_out, num_in)
    if structure != "unstructured":
        raise ValueError(f"unknown structure {structure!r}")
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    num_pruned = int(round(sparsity * magnitude.numel()))
    if num_pruned == 0:
        return torch.ones_like(magnitude, dtype=torch.bool)
    threshold = magnitude.flatten().kthvalue(num_pruned).values
    return magnitude > threshold


def prune_linear_layers(
    model: torch.nn.Module, sparsity: float, structure: str, ignore: str = r"lm_head"
) -> dict[str, float]:
    """Zeroes weights of every nn.Linear whose name does not match `ignore`; returns achieved sparsity per layer."""
    achieved = {}
    ignore_re = re.compile(ignore)
    with torch.no_grad():
        for name, module in model.named_modules():
            if not isinstance(module, torch.nn.Linear) or ignore_re.search(name):
                continue
            mask = magnitude_mask(module.weight, sparsity, structure)
            module.weight.mul_(mask.to(module.weight.dtype))
            achieved[name] = 1.0 - mask.float().mean().item()
    return achieved
