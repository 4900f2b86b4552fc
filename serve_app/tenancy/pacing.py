"""Prefill pacing: when a flooding tenant may start its next request, so a quiet tenant's prefill is not batched
with a burst of the flood's. Pure (an injected clock, no asyncio); `FairGate` asks it before granting a slot.

An engine step runs every new request's prefill together, so a quiet tenant's request that starts beside a batch
of the flood's new requests waits for all their prefills (measured: 230 ms alone, 1.5 s beside 7 flood prefills).
The rule, only while another tenant is present (holding or waiting for a slot now, or within `linger_s`: a
closed-loop client is away for milliseconds between requests):

- a request of a tenant under its weighted share of the slots and holding no other is *protected* (a quiet
  tenant's), and never waits for another's;
- a tenant over its share waits while a protected prefill of another tenant is before its first token (at most
  `hold_s`);
- requests of tenants that already hold a slot (floods, under their share or over it) start evenly, all such
  tenants together and after any other start: one per `spacing_s` (about one engine step, with one prefill, per
  model replica behind the gate, kept current by the caller from measured rates), or as often as requests ended
  over the last `rate_window_s` when that is more often (many rows and short requests: 64 rows of 16-token
  requests end four per step). Which flood's request starts at each turn is the fair queue's order, so weights
  hold. A tenant holding no slot starts at once: a quiet tenant's request is never spaced.

So a quiet tenant's prefill shares an engine step with as few of the floods' as their own rate needs (one where
requests end at most one per step), and the floods still start requests as fast as they end on average: the
engines stay full (work-conserving, unlike waiting for each of the flood's own first tokens, which left slots
empty for a round trip each). The spacing holds under the share too: a closed-loop flood's requests end together
(they started together), and refilling them all at once put a quiet request's prefill in one step with 3-7 of the
flood's (noisy-neighbour run of 93aa7b8: 0.5-1.1 s against 0.1 s alone); spread at the average rate, the bunch is
refilled over a few steps. One clock for all floods, not one per tenant: per-tenant spacing gave every flood the
same start rate whatever its weight (weights 2:1 came out 1:1 when the spacing was the limit). A tenant alone is
never paced.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class _Prefill:
    tenant: str
    started_s: float
    protected: bool  # started while its tenant was under its share


class PrefillPacer:
    """Which started requests are before their first token, and when a flood may start its next one."""

    def __init__(self, spacing_s: float = 0.05, hold_s: float = 2.0, linger_s: float = 1.0,
                 rate_window_s: float = 2.0, clock: Callable[[], float] = time.monotonic):
        if spacing_s < 0 or hold_s <= 0 or linger_s < 0 or rate_window_s <= 0:
            raise ValueError("spacing_s and linger_s must be >= 0, hold_s and rate_window_s > 0")
        self.spacing_s = spacing_s
        self.hold_s = hold_s
        self.linger_s = linger_s
        self.rate_window_s = rate_window_s
        self._clock = clock
        self._prefills: dict[int, _Prefill] = {}
        self._last_spaced_start_s: float | None = None  # the last start beside other tenants
        self._last_seen_s: dict[str, float] = {}
        self._ends: deque[float] = deque()  # when requests ended, over the last rate_window_s

    def wait_s(self, tenant: str, over_share: bool, others_present: bool, holding: bool) -> float:
        """0.0 when `tenant` may start a request now, else the seconds after which to ask again (an earlier
        `first_token` or `ended` may free it sooner). `over_share` and `others_present` count the tenants holding
        or waiting for a slot and those `lingering`; `holding`: `tenant` holds a slot now."""
        if not others_present or not (over_share or holding):
            return 0.0
        now_s = self._clock()
        wait_s = 0.0
        for grant, prefill in list(self._prefills.items()):
            if now_s - prefill.started_s >= self.hold_s:
                del self._prefills[grant]  # never reported its first token (e.g. not streamed): stop holding
            elif over_share and prefill.protected and prefill.tenant != tenant:
                wait_s = max(wait_s, prefill.started_s + self.hold_s - now_s)
        last_s = self._last_spaced_start_s
        interval_s = self._interval_s(now_s)
        if last_s is not None and now_s - last_s < interval_s:
            wait_s = max(wait_s, last_s + interval_s - now_s)
        return wait_s

    def _interval_s(self, now_s: float) -> float:
        """Between two spaced starts: `spacing_s`, or shorter when requests ended more often lately."""
        while self._ends and now_s - self._ends[0] > self.rate_window_s:
            self._ends.popleft()
        return min(self.spacing_s, self.rate_window_s / len(self._ends)) if self._ends else self.spacing_s

    def started(self, grant: int, tenant: str, protected: bool, beside_others: bool) -> None:
        """A request of `tenant` got its slot (`protected`: its tenant was under its share). A start beside other
        tenants, a quiet one's too, begins the next spacing: its prefill is in the next engine step."""
        now_s = self._clock()
        self._prefills[grant] = _Prefill(tenant, now_s, protected)
        if beside_others:
            self._last_spaced_start_s = now_s

    def first_token(self, grant: int) -> bool:
        """The request's first token came; True when it was still counted as prefilling."""
        return self._prefills.pop(grant, None) is not None

    def ended(self, grant: int, tenant: str) -> None:
        """The request left its slot (its tenant lingers as present for `linger_s`)."""
        self._prefills.pop(grant, None)
        now_s = self._clock()
        self._last_seen_s[tenant] = now_s
        self._ends.append(now_s)

    def lingering(self, tenant: str) -> list[str]:
        """Other tenants whose last request ended less than `linger_s` ago (present for pacing)."""
        now_s = self._clock()
        for name, seen_s in list(self._last_seen_s.items()):
            if now_s - seen_s >= self.linger_s:
                del self._last_seen_s[name]
        self._interval_s(now_s)  # drops ends older than rate_window_s: bounded memory
        return [name for name in self._last_seen_s if name != tenant]
