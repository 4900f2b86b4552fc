"""Speculative decoding: the config's choice -> vLLM's `speculative_config`, and the `auto` batch-size schedule.

`auto` is n-gram speculation (prompt lookup: drafts copied from the request's own earlier tokens, no draft model)
with a batch-size schedule that vLLM's scheduler applies every step (`num_speculative_tokens_per_batch_size`):
k draft tokens per request while the running batch is small, none once it is past the size where verifying
drafts costs more than it saves. The schedule is measured, not guessed: `benchmarks/speculation_schedule.py`
runs the engine offline at several batch sizes and draft lengths on three prompt sets and `choose_schedule`
(pure) picks, per batch size, the draft length with the best mean speed-up among those that slow no prompt set
below `floor` of speculation off. Within what the schedule gives, each request drafts only a short probe until
its own drafts are accepted (draft_governor.py, applied in the engine by vllm_patches/ngram_draft_governor.py).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

Schedule = list[tuple[int, int, int]]  # (first batch size, last batch size, draft tokens), inclusive


def choose_schedule(tokens_per_s: Mapping[tuple[str, int, int], float], floor: float = 0.97) -> Schedule:
    """`tokens_per_s[(prompt_set, batch_size, k)]` (k = 0 is speculation off) -> a batch-size schedule.

    Per measured batch size: the k > 0 with the highest geometric-mean speed-up over the prompt sets among those
    whose every prompt set keeps at least `floor` of k = 0's speed; 0 when none does. Between two measured sizes
    the smaller of their two choices holds (nothing measured says more); past the largest measured size, 0.
    """
    sets = sorted({s for s, _, _ in tokens_per_s})
    sizes = sorted({b for _, b, _ in tokens_per_s})
    ks = sorted({k for _, _, k in tokens_per_s if k > 0})
    chosen: dict[int, int] = {}
    for size in sizes:
        best_k, best_gain = 0, 1.0
        for k in ks:
            ratios = [tokens_per_s[(s, size, k)] / tokens_per_s[(s, size, 0)] for s in sets
                      if (s, size, k) in tokens_per_s and tokens_per_s.get((s, size, 0))]
            if len(ratios) < len(sets) or min(ratios) < floor:
                continue
            gain = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
            if gain > best_gain:
                best_k, best_gain = k, gain
        chosen[size] = best_k
    points: list[tuple[int, int, int]] = []
    for index, size in enumerate(sizes):
        points.append((size, size, chosen[size]))
        if index + 1 < len(sizes) and sizes[index + 1] > size + 1:
            points.append((size + 1, sizes[index + 1] - 1, min(chosen[size], chosen[sizes[index + 1]])))
    if points and points[0][0] > 1:
        points.insert(0, (1, points[0][0] - 1, points[0][2]))
    points.append((sizes[-1] + 1, 1 << 20, 0) if sizes else (1, 1 << 20, 0))
    merged: Schedule = []
    for start, end, k in points:
        if merged and merged[-1][2] == k:
            merged[-1] = (merged[-1][0], end, k)
        else:
            merged.append((start, end, k))
    return merged


def schedule_k_at(schedule: Schedule, batch_size: int) -> int:
    """Draft tokens the schedule gives a batch of this size (0 outside every range)."""
    return next((k for start, end, k in schedule if start <= batch_size <= end), 0)


def speculative_config(speculation: Any) -> dict[str, Any] | None:
    """The config's `engine.speculation` section -> vLLM's `speculative_config` (None: off)."""
    mode = speculation.mode
    if mode == "off":
        return None
    if mode in ("auto", "ngram"):
        config: dict[str, Any] = {"method": "ngram", "prompt_lookup_min": speculation.prompt_lookup_min,
                                  "prompt_lookup_max": speculation.prompt_lookup_max}
        if mode == "ngram":
            return config | {"num_speculative_tokens": speculation.num_speculative_tokens}
        schedule = [tuple(entry) for entry in speculation.auto_schedule]
        most = max(k for _, _, k in schedule)
        if most == 0:
            return None  # measured never to pay on this kind of machine
        return config | {"num_speculative_tokens": most, "num_speculative_tokens_per_batch_size": schedule}
    # draft_model / eagle / eagle3: a second, small model proposes the drafts.
    return {"method": mode, "model": speculation.draft_model,
            "num_speculative_tokens": speculation.num_speculative_tokens}
