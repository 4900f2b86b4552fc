"""Requests for a model that scales from zero while none of its replicas runs (placement `separate`).

The first `max_waiting` requests of a cold start wait for it: they are the demand that makes Ray Serve start a
replica (its autoscaler counts the requests queued at the handle), and they are served first once it runs. Every
later request gets a fast 429 instead of waiting out the cold start (a minute or more on a GPU node), with a
Retry-After of the time the cold start still needs: the length of the last one this ingress timed, or the
config's estimate before any. Pure: the caller passes the clock and the controller's running-replica count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# A cold start is timed only when this ingress saw the model at zero this recently before it saw a replica run
# (an ingress that heard nothing for minutes would time its own silence, not the start).
MAX_OBSERVATION_GAP_S = 5.0
MIN_RETRY_AFTER_S = 1


@dataclass
class ColdStart:
    expected_s: float  # how long a cold start takes: the last one timed, else the config's estimate
    max_waiting: int  # requests that wait for it; later ones are refused until a replica runs
    began_at_s: float | None = None  # when this ingress first saw a request while no replica ran
    last_seen_at_zero_s: float | None = None
    num_waiting: int = 0

    def on_request(self, num_running: int, now_s: float) -> int | None:
        """A request arrives and the controller reports `num_running` replicas. None: it goes on (a replica runs,
        or it is one of the first `max_waiting` of this cold start); else the Retry-After (s) of a fast 429."""
        if num_running > 0:
            self._replica_up(now_s)
            return None
        if self.began_at_s is None:
            self.began_at_s, self.num_waiting = now_s, 0
        self.last_seen_at_zero_s = now_s
        if self.num_waiting < self.max_waiting:
            self.num_waiting += 1
            return None
        return self.retry_after_s(now_s)

    def retry_after_s(self, now_s: float) -> int:
        """Whole seconds until the cold start should be over (at least 1)."""
        elapsed_s = 0.0 if self.began_at_s is None else now_s - self.began_at_s
        return max(MIN_RETRY_AFTER_S, math.ceil(self.expected_s - elapsed_s))

    def _replica_up(self, now_s: float) -> None:
        if self.began_at_s is None:
            return
        if self.last_seen_at_zero_s is not None and now_s - self.last_seen_at_zero_s <= MAX_OBSERVATION_GAP_S:
            self.expected_s = now_s - self.began_at_s
        self.began_at_s = self.last_seen_at_zero_s = None
        self.num_waiting = 0
