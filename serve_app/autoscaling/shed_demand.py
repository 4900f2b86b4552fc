"""Demand that admission refused, as the autoscaler must see it (pure; no Ray, no I/O).

Deadline admission refuses (429) the requests that could not meet their TTFT target, so the engines' queues stay
short while a model is overloaded, and a queue-driven policy would never scale up. `ShedDemand` turns the
refusals of the last `window_s` into the load they would have been: by Little's law, refusals per second times
the time an admitted request holds an engine slot is the number of requests that would be running or waiting
now had they been admitted. The model replica adds it to the waiting count it reports (`num_waiting`), so the
policy sizes the step for the whole demand, refused part included.
"""

from __future__ import annotations

from collections import deque


class ShedDemand:
    """Refusals for want of capacity in the last `window_s`, and the mean slot hold time of admitted requests."""

    def __init__(self, window_s: float = 10.0, prior_hold_s: float = 1.0, smoothing: float = 0.1):
        if window_s <= 0:
            raise ValueError("window_s must be > 0")
        self.window_s = window_s
        self.mean_hold_s = prior_hold_s
        self._has_observed = False
        self._smoothing = smoothing
        self._refused_at: deque[float] = deque()

    def refused(self, now_s: float) -> None:
        self._refused_at.append(now_s)
        self._evict(now_s)

    def held(self, hold_s: float) -> None:
        """An admitted request released its slot after `hold_s` (a moving mean, so the estimate follows the load;
        the first one replaces the prior)."""
        if hold_s < 0:
            return
        if not self._has_observed:
            self.mean_hold_s, self._has_observed = hold_s, True
        else:
            self.mean_hold_s += self._smoothing * (hold_s - self.mean_hold_s)

    def refusals_per_s(self, now_s: float) -> float:
        self._evict(now_s)
        return len(self._refused_at) / self.window_s

    def concurrency(self, now_s: float) -> float:
        """Requests that would be in the engine or its queue now, had the refused ones been admitted."""
        return self.refusals_per_s(now_s) * self.mean_hold_s

    def _evict(self, now_s: float) -> None:
        while self._refused_at and self._refused_at[0] <= now_s - self.window_s:
            self._refused_at.popleft()
