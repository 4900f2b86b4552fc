"""Arrival schedules for open-loop load and start offsets for closed loop (pure).

Open loop: inter-arrival gaps at unit rate are 1 (constant), Exp(1)
(Poisson, burstiness 1) or Gamma(k, 1/k) (burstiness k: k < 1 burstier than
Poisson, k > 1 smoother); all have mean 1. Cumulative unit-rate times u are
mapped to wall time through the inverse of the cumulative rate Lambda(t), so a
linear ramp from 0 to `rate_rps` over `ramp_up_s` is exact rather than
approximated step by step.
"""

import math
import random

# Hard bound on one schedule, so a typo cannot allocate without limit.
MAX_SCHEDULED_REQUESTS = 1_000_000


def _unit_gap(rng: random.Random, burstiness: float | None) -> float:
    if burstiness is None:
        return 1.0
    return rng.gammavariate(burstiness, 1.0 / burstiness)


def _time_for_cumulative(u: float, rate_rps: float, ramp_up_s: float) -> float:
    """Inverse of Lambda(t) = integral of the rate, with a linear ramp."""
    if ramp_up_s <= 0:
        return u / rate_rps
    ramp_area = rate_rps * ramp_up_s / 2.0
    if u <= ramp_area:
        # Lambda(t) = rate * t^2 / (2 * ramp) inside the ramp.
        return math.sqrt(2.0 * ramp_up_s * u / rate_rps)
    return ramp_up_s + (u - ramp_area) / rate_rps


def open_loop_arrivals_s(
    rate_rps: float,
    *,
    burstiness: float | None = 1.0,
    num_requests: int | None = None,
    duration_s: float | None = None,
    ramp_up_s: float = 0.0,
    seed: int = 0,
) -> list[float]:
    """Arrival offsets in seconds from the run start, ascending.

    Stops at `num_requests` arrivals or at the first arrival at or after
    `duration_s`, whichever comes first. burstiness None means a constant rate.
    """
    if rate_rps <= 0:
        raise ValueError("rate_rps must be positive")
    if num_requests is None and duration_s is None:
        raise ValueError("give num_requests, duration_s or both")
    if burstiness is not None and burstiness <= 0:
        raise ValueError("burstiness must be positive")
    limit = min(num_requests or MAX_SCHEDULED_REQUESTS, MAX_SCHEDULED_REQUESTS)
    rng = random.Random(seed)
    arrivals: list[float] = []
    # The first arrival goes at t=0 for a constant rate; random gaps start at 0 too.
    cumulative = 0.0
    while len(arrivals) < limit:
        t = _time_for_cumulative(cumulative, rate_rps, ramp_up_s)
        if duration_s is not None and t >= duration_s:
            break
        arrivals.append(t)
        cumulative += _unit_gap(rng, burstiness)
    return arrivals


def closed_loop_start_offsets_s(num_users: int, ramp_up_s: float = 0.0) -> list[float]:
    """User i starts at ramp_up_s * i / num_users (all at 0 without ramp)."""
    if num_users <= 0:
        raise ValueError("num_users must be positive")
    return [ramp_up_s * i / num_users for i in range(num_users)]
