"""What one load-test job is: a conversation of turns, each with its token budget (pure data).

Both job builders (`loadtest/workload.py`, which dispatches to `loadtest/shared_prefix.py` for that prompt set) and
the runner that sends the jobs take these types from here; `shared_prefix` needs nothing from `workload`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Turn:
    """One request: the new user text (or raw prompt) and its token budget."""

    text: str
    max_tokens: int
    expected_input_tokens: int | None = None


@dataclass(frozen=True)
class Job:
    """A conversation of one or more turns, sent one after another.

    `history` holds chat messages that precede the first turn (from JSONL).
    """

    job_id: int
    turns: tuple[Turn, ...]
    history: tuple[dict, ...] = field(default_factory=tuple)


def spread(center: int, range_fraction: float, rng: random.Random) -> int:
    """A length drawn uniformly from center x (1 +- range_fraction), at least 1; `center` when the range is 0."""
    if range_fraction <= 0:
        return center
    low = max(1, round(center * (1 - range_fraction)))
    high = max(low, round(center * (1 + range_fraction)))
    return rng.randint(low, high)
