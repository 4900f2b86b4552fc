"""The offline lower bound on replicas: the fewest per interval that could meet the TTFT / TPOT targets.

Pure (no Ray, no I/O). Given the whole trace in advance, the profile's timing and no start delay, each
interval gets just enough replicas for the sequences it keeps in flight:

- A replica may run at most `max_batch_within_tpot` sequences at once: the largest batch whose decode step
  stays within the TPOT target (the profile's step time grows with the batch).
- A request is in flight from its arrival for its prefill plus `output_tokens` decode steps at that batch
  size (no queueing: the bound assumes perfect placement).
- Interval i needs ceil(mean in-flight sequences over the interval / max_batch_within_tpot) replicas, and at
  least one while any request is in flight; zero when none is.

It is a bound, not a schedule: it ignores the queueing a real batch sees inside an interval and every start
delay, so no online policy can beat its GPU-seconds while meeting the targets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence


@dataclass(frozen=True)
class ReplicaTiming:
    """What the bound needs from a performance profile (seconds)."""

    # Decode step time of one replica running `batch_size` sequences.
    decode_step_s: Callable[[int], float]
    # Prefill time of one prompt of `prompt_tokens` alone.
    prefill_s: Callable[[int], float]
    # The profile's batch limit (max_num_seqs).
    max_num_seqs: int


@dataclass(frozen=True)
class BoundRequest:
    t_s: float
    prompt_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class LowerBound:
    interval_s: float
    # Replicas needed in each interval [i * interval_s, (i + 1) * interval_s).
    replicas: tuple[int, ...]
    max_batch_within_tpot: int
    gpus_per_replica: float

    @property
    def gpu_seconds(self) -> float:
        return sum(self.replicas) * self.interval_s * self.gpus_per_replica


def max_batch_within_tpot(timing: ReplicaTiming, tpot_target_ms: float) -> int:
    """The largest batch (1..max_num_seqs) whose decode step meets the TPOT target; at least 1."""
    best = 1
    for batch in range(1, timing.max_num_seqs + 1):
        if timing.decode_step_s(batch) * 1000.0 <= tpot_target_ms:
            best = batch
    return best


def lower_bound_replicas(
    requests: Sequence[BoundRequest],
    duration_s: float,
    timing: ReplicaTiming,
    *,
    tpot_target_ms: float,
    interval_s: float = 10.0,
    gpus_per_replica: float = 1.0,
) -> LowerBound:
    """Replicas per interval over [0, duration_s + the last request's service time) (see the module docstring)."""
    if interval_s <= 0:
        raise ValueError("interval_s must be positive")
    batch = max_batch_within_tpot(timing, tpot_target_ms)
    step_s = timing.decode_step_s(batch)
    spans = [(r.t_s, r.t_s + timing.prefill_s(r.prompt_tokens) + r.output_tokens * step_s) for r in requests]
    end_s = max([duration_s] + [end for _, end in spans])
    num_intervals = max(1, math.ceil(end_s / interval_s - 1e-9))
    busy_s = [0.0] * num_intervals
    for start, end in spans:
        first, last = int(start // interval_s), min(num_intervals - 1, int(end // interval_s))
        for i in range(first, last + 1):
            lo, hi = i * interval_s, (i + 1) * interval_s
            busy_s[i] += max(0.0, min(end, hi) - max(start, lo))
    replicas = []
    for busy in busy_s:
        mean_in_flight = busy / interval_s
        replicas.append(0 if busy <= 0 else max(1, math.ceil(mean_in_flight / batch - 1e-9)))
    return LowerBound(interval_s, tuple(replicas), batch, gpus_per_replica)
