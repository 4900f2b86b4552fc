"""How many n-gram draft tokens each request may propose, from its own recent acceptance (pure).

Prompt lookup proposes a draft wherever a request's last few tokens occurred earlier in it, whether or not the
model will follow the same path again. Verifying a rejected draft costs one wider step and yields one token, as
a plain step would: on a 2-core CPU, the 1-user steps that verified 7-8 rejected draft tokens were the slowest 2%
of the inter-token gaps, which is where a p99 sits (random prompts: 0 of 153 draft tokens accepted in every
1-user run of the side by side).

So a request proposes at most `probe_tokens` draft tokens per step (a probe: a step barely wider than a plain
one) until its own drafts are being accepted, `min_acceptance` or more of its last `window_tokens` draft tokens
and at least one; then as many as the batch-size schedule (`auto_schedule`) gives. A request that copies its
prompt gets its full drafts after its first accepted probe (after a run of rejected probes, once accepted tokens
are `min_acceptance` of its window again); one whose drafts are rejected never verifies more than a probe.
Each request is judged on its own, so one request's text never costs another its drafts.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field

# The engine process reads its governor's settings here (set by the model server before it spawns the engine).
DRAFT_GOVERNOR_ENV = "SERVE_APP_DRAFT_GOVERNOR"


@dataclass
class _RequestDrafts:
    window: deque = field(default_factory=deque)  # (proposed, accepted) per verified step, oldest first
    proposed: int = 0
    accepted: int = 0


@dataclass
class DraftGovernor:
    min_acceptance: float = 0.1
    window_tokens: int = 16
    probe_tokens: int = 2
    _requests: dict[str, _RequestDrafts] = field(default_factory=dict, repr=False)

    def record(self, req_id: str, proposed: int, accepted: int) -> None:
        """What one step verified for `req_id`: `proposed` draft tokens, of which `accepted` were accepted."""
        if proposed <= 0:
            return
        state = self._requests.setdefault(req_id, _RequestDrafts())
        state.window.append((proposed, accepted))
        state.proposed += proposed
        state.accepted += accepted
        while state.window and state.proposed - state.window[0][0] >= self.window_tokens:
            old_proposed, old_accepted = state.window.popleft()
            state.proposed -= old_proposed
            state.accepted -= old_accepted

    def cap(self, req_id: str) -> int | None:
        """Most draft tokens `req_id` may propose next (None: as many as the schedule gives)."""
        state = self._requests.get(req_id)
        if state is not None and state.accepted and state.accepted >= self.min_acceptance * state.proposed:
            return None
        return self.probe_tokens

    def acceptance(self, req_id: str) -> float | None:
        """Accepted / proposed draft tokens over the request's window (None before any draft)."""
        state = self._requests.get(req_id)
        return state.accepted / state.proposed if state and state.proposed else None

    def limit(self, drafts: list[list[int]], req_ids: list[str]) -> list[list[int]]:
        """`drafts[i]` (for `req_ids[i]`) cut to each request's cap (in place, returned)."""
        for index, req_id in enumerate(req_ids[:len(drafts)]):
            cap = self.cap(req_id)
            if cap is not None and len(drafts[index]) > cap:
                drafts[index] = drafts[index][:cap]
        return drafts

    def forget(self, finished_req_ids) -> None:
        """Drop the state of requests that finished (or were aborted)."""
        for req_id in finished_req_ids:
            self._requests.pop(req_id, None)

    def forget_all_but(self, live_req_ids: list[str]) -> None:
        """Drop every request's state but these (a guard against ids never reported finished)."""
        live = set(live_req_ids)
        for req_id in [r for r in self._requests if r not in live]:
            del self._requests[req_id]

    @property
    def tracked(self) -> int:
        return len(self._requests)

    def to_env(self) -> str:
        return json.dumps({"min_acceptance": self.min_acceptance, "window_tokens": self.window_tokens,
                           "probe_tokens": self.probe_tokens})

    @classmethod
    def from_env(cls, value: str | None) -> "DraftGovernor | None":
        """The governor the model server asked for (None: drafts are not governed)."""
        return cls(**json.loads(value)) if value else None


def step_acceptance(scheduled_drafts: dict[str, list[int]], req_ids: list[str],
                    sampled: list[list[int]]) -> list[tuple[str, int, int]]:
    """One verified step's (req_id, proposed, accepted) for each request that verified drafts: request
    `req_ids[i]` verified `scheduled_drafts[req_id]` and emitted `sampled[i]` (its accepted drafts, then one token
    of its own)."""
    verified = []
    for index, req_id in enumerate(req_ids[:len(sampled)]):
        # vLLM schedules -1 placeholders (fixed-k n-gram, a request that needs one new token): not drafts
        proposed = sum(1 for token in scheduled_drafts.get(req_id) or () if token >= 0)
        if proposed:
            verified.append((req_id, proposed, min(proposed, max(0, len(sampled[index]) - 1))))
    return verified
