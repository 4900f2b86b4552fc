"""Truncated SVD of linear layers: W [out, in] ~= A [out, r] @ B [r, in].

Serving engines (vLLM included) have no low-rank linear layer, so the factors are saved for study and
re-multiplied into a dense checkpoint that vLLM can serve: that checkpoint measures the quality cost of
the rank cut, and gives no speed or memory gain. Speed needs a model class that runs two thin matmuls.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch


def rank_for_energy(singular_values: torch.Tensor, energy: float) -> int:
    """Smallest rank r whose top-r singular values keep `energy` of sum(s^2)."""
    if not 0.0 < energy <= 1.0:
        raise ValueError(f"energy must be in (0, 1], got {energy}")
    squared = singular_values.double() ** 2
    total = squared.sum()
    if total == 0:
        return 1
    kept = torch.cumsum(squared, 0) / total
    # Tolerance so energy=1.0 does not demand more than the full rank through rounding.
    rank = int(torch.searchsorted(kept, torch.tensor(energy - 1e-12, dtype=kept.dtype)).item()) + 1
    return min(rank, singular_values.numel())


def break_even_rank(num_out: int, num_in: int) -> int:
    """Largest rank at which A and B together hold fewer parameters than W."""
    return max(1, math.ceil(num_out * num_in / (num_out + num_in)) - 1)


@dataclass
class Factorization:
    a: torch.Tensor  # [out, r]
    b: torch.Tensor  # [r, in]
    rank: int
    kept_energy: float  # fraction of sum(s^2) of the (scaled) matrix kept

    def dense(self) -> torch.Tensor:
        return self.a @ self.b


def factorize(
    weight: torch.Tensor,
    rank: int | None = None,
    energy: float | None = None,
    input_scale: torch.Tensor | None = None,
) -> Factorization:
    """Truncated SVD of `weight` at a fixed rank or kept-energy threshold.

    input_scale [in]: activation-aware variant (as in ASVD): factorize W @ diag(s) so that the cut spares the
    columns that meet large inputs, then fold diag(s)^-1 back into B. s is typically the mean |x| per input channel.
    """
    if (rank is None) == (energy is None):
        raise ValueError("give exactly one of rank or energy")
    w = weight.detach().float()
    if input_scale is not None:
        scale = input_scale.detach().float().clamp_min(1e-6)
        w = w * scale[None, :]
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    r = rank_for_energy(s, energy) if energy is not None else min(rank, s.numel())
    squared = s.double() ** 2
    kept_energy = float(squared[:r].sum() / squared.sum()) if squared.sum() > 0 else 1.0
    a = u[:, :r] * s[:r][None, :]
    b = vh[:r, :]
    if input_scale is not None:
        b = b / scale[None, :]
    return Factorization(a=a.to(weight.dtype), b=b.to(weight.dtype), rank=r, kept_energy=kept_energy)


def factorize_model(
    model: torch.nn.Module,
    targets: str,
    rank: int | None = None,
    energy: float | None = None,
    input_scales: dict[str, torch.Tensor] | None = None,
) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """Replaces each matching nn.Linear weight by its rank-r reconstruction, in place.

    Returns the factors ({"<name>.lowrank_a": A, "<name>.lowrank_b": B}) and one report row per layer.
    """
    target_re = re.compile(targets)
    factors, rows = {}, []
    with torch.no_grad():
        for name, module in model.named_modules():
            if not isinstance(module, torch.nn.Linear) or not target_re.search(name):
                continue
            scale = input_scales.get(name) if input_scales else None
            fact = factorize(module.weight, rank=rank, energy=energy, input_scale=scale)
            num_out, num_in = module.weight.shape
            module.weight.copy_(fact.dense())
            factors[f"{name}.lowrank_a"] = fact.a.contiguous()
            factors[f"{name}.lowrank_b"] = fact.b.contiguous()
            rows.append(
                {
                    "layer": name,
                    "shape": [num_out, num_in],
                    "rank": fact.rank,
                    "kept_energy": round(fact.kept_energy, 5),
                    "dense_params": num_out * num_in,
                    "factor_params": fact.rank * (num_out + num_in),
                    "break_even_rank": break_even_rank(num_out, num_in),
                }
            )
    if not rows:
        raise ValueError(f"no nn.Linear module matches {targets!r}")
    return factors, rows
