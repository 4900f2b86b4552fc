"""Weighted fair order of waiting requests across tenants, by tokens, and an asyncio gate that admits in it.

`FairQueue` is start-time fair queuing (SFQ, Goyal et al. 1996) with one tag per tenant rather than per request:

- Each tenant has a finish tag F (virtual time at which the work it was given so far is paid for). The queue's
  virtual time V is the start tag of the last request served (never decreasing).
- When a tenant gets its first waiting request, its head tag is S = max(V, F): a tenant that was idle starts at
  the current virtual time, so idleness banks no credit; a tenant that was served more than its share recently
  (F > V) waits until the others catch up.
- `pop` serves the tenant with the smallest head tag (ties: the earlier request), takes its request with the
  smallest (priority, arrival), and charges it: F = S + cost_tokens / weight, and the tenant's next head tag is F.

Cost is charged when a request is served, so the order inside a tenant (priority, then arrival) can change as
requests arrive without touching the tenant's place among the others. A request of a tenant below its share has
a tag of at most V, and a tenant over it has a tag above V, so the former is never queued behind the latter.
Over a saturated period each backlogged tenant gets tokens in proportion to its weight (within one request's
cost). `charge` counts a request admitted without waiting, so the share is measured over all admitted work.

`FairGate` holds `capacity` slots (requests sent on to the engines) and hands a freed slot to the next waiter in
fair order. Pure asyncio, one event loop, no locks.

With a `pacer` (serve_app/tenancy/pacing.py), beside other tenants a tenant over its share also waits for a
quiet tenant's prefill, and tenants already holding a slot start about one request per engine step between
them. The gate's `stats` (slots in use, requests waiting) are what the ingress reports for autoscaling.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Hashable
from dataclasses import dataclass, field

from serve_app.tenancy.pacing import PrefillPacer


@dataclass
class _Item:
    tenant: str
    cost_tokens: int
    priority: int
    seq: int


@dataclass
class _Tenant:
    weight: float
    finish_tag: float
    # Start tag of the tenant's next request while it has requests waiting; None when it has none.
    head_tag: float | None = None
    # Heap of (priority, seq, item_id); entries of removed items are skipped when they surface.
    heap: list = field(default_factory=list)
    num_items: int = 0
    queued_tokens: int = 0
    # Waiting tokens per priority, for `tokens_ahead`.
    tokens_by_priority: dict[int, int] = field(default_factory=dict)
    # Bumped whenever the head tag changes, so stale entries in the queue's head heap are skipped.
    version: int = 0


class FairQueue:
    """Waiting requests of all tenants in weighted fair order by tokens (see the module docstring)."""

    def __init__(self) -> None:
        self.virtual_time = 0.0
        self._tenants: dict[str, _Tenant] = {}
        self._items: dict[Hashable, _Item] = {}
        # (head tag, seq of the head request, tenant, tenant version): the tenants with waiting requests.
        self._heads: list[tuple[float, int, str, int]] = []
        self._seqs = itertools.count()
        # Versions of head entries, unique across the queue: a tenant forgotten and seen again must not find an
        # entry of its earlier life current (per-tenant counters restarted at 0 and matched old entries).
        self._versions = itertools.count(1)
        self._num_queued_tokens = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, item_id: Hashable) -> bool:
        return item_id in self._items

    def push(self, item_id: Hashable, tenant: str, cost_tokens: int, weight: float = 1.0, priority: int = 0) -> None:
        """Queue a request; `weight` (> 0) is the tenant's current weight, `priority` orders it within the tenant."""
        if item_id in self._items:
            raise KeyError(f"item {item_id!r} is already queued")
        if weight <= 0:
            raise ValueError(f"weight must be > 0, got {weight}")
        cost_tokens = max(1, int(cost_tokens))
        state = self._tenant(tenant, weight)
        seq = next(self._seqs)
        self._items[item_id] = _Item(tenant, cost_tokens, priority, seq)
        heapq.heappush(state.heap, (priority, seq, item_id))
        state.num_items += 1
        state.queued_tokens += cost_tokens
        state.tokens_by_priority[priority] = state.tokens_by_priority.get(priority, 0) + cost_tokens
        self._num_queued_tokens += cost_tokens
        if state.head_tag is None:
            state.head_tag = max(self.virtual_time, state.finish_tag)
            self._push_head(tenant, state, seq)

    def pop(self, tenant: str | None = None) -> Hashable | None:
        """The next request in fair order, or `tenant`'s next (removed from the queue); None when none waits."""
        if tenant is not None:
            state = self._tenants.get(tenant)
            return None if state is None or state.head_tag is None else self._pop_head(tenant, state)
        while self._heads:
            entry = heapq.heappop(self._heads)
            if self._is_current(entry):
                return self._pop_head(entry[2], self._tenants[entry[2]])
        return None

    def waiting_tenants(self) -> list[str]:
        """The tenants with waiting requests, in the order `pop` would serve their next ones."""
        return [entry[2] for entry in sorted(self._heads) if self._is_current(entry)]

    def _pop_head(self, name: str, state: _Tenant) -> Hashable:
        tag = state.head_tag
        item_id, item = self._pop_tenant_head(state)
        self.virtual_time = max(self.virtual_time, tag)
        state.finish_tag = tag + item.cost_tokens / state.weight
        if state.num_items:
            state.head_tag = state.finish_tag
            self._push_head(name, state, state.heap[0][1])  # the old entry in the head heap is now stale
        else:
            self._idle(name, state)
        return item_id

    def remove(self, item_id: Hashable) -> bool:
        """Drop a waiting request (its client went away); it is not charged. False when it was not queued."""
        item = self._items.pop(item_id, None)
        if item is None:
            return False
        state = self._tenants[item.tenant]
        self._forget(state, item)
        if not state.num_items:
            self._idle(item.tenant, state)
        return True

    def charge(self, tenant: str, cost_tokens: int, weight: float = 1.0) -> None:
        """Count a request admitted without queuing (as if pushed and popped at once). Only for a tenant with
        nothing waiting: a waiting tenant is charged when its requests are popped."""
        state = self._tenant(tenant, weight)
        if state.num_items:
            raise ValueError(f"tenant {tenant!r} has requests waiting; they are charged when popped")
        start_tag = max(self.virtual_time, state.finish_tag)
        self.virtual_time = start_tag
        state.finish_tag = start_tag + max(1, int(cost_tokens)) / weight

    def adjust(self, tenant: str, delta_tokens: int, weight: float = 1.0) -> None:
        """Correct a tenant's charge by what its served requests really cost (`delta_tokens` = used - charged, of
        either sign), so the share is measured in tokens served, not estimated. A refund never moves the tenant
        before virtual time (idleness banks no credit) nor forward: to a tenant already behind virtual time it is
        dropped, while a surcharge always counts."""
        if not delta_tokens:
            return
        state = self._tenant(tenant, weight)
        shift = delta_tokens / state.weight
        finish_tag = state.finish_tag + shift
        if shift < 0:
            # A refund moves the tenant back by what it was over-charged, not before virtual time, and never
            # forward: a waiting tenant whose tag is behind virtual time (others were served past it) keeps its
            # place. Clamped to virtual time, a refund of 10 tokens moved such a tenant thousands of tokens back
            # in line (weights 2:1 gave the heavier tenant 0.24-0.33 of the tokens).
            finish_tag = max(finish_tag, min(state.finish_tag, self.virtual_time))
        shift, state.finish_tag = finish_tag - state.finish_tag, finish_tag
        if state.head_tag is not None and shift:
            state.head_tag += shift
            self._push_head(tenant, state, state.heap[0][1])
        elif not state.num_items and state.finish_tag <= self.virtual_time:
            del self._tenants[tenant]

    def queued_tokens(self) -> int:
        """Tokens (cost) of all waiting requests."""
        return self._num_queued_tokens

    def queued_tokens_by_tenant(self) -> dict[str, int]:
        return {name: state.queued_tokens for name, state in self._tenants.items() if state.num_items}

    def tokens_ahead(self, tenant: str, weight: float = 1.0, priority: int = 0) -> int:
        """Estimated waiting tokens served before a request of `tenant` queued now with `priority`.

        Its own tenant's waiting tokens of priority <= `priority`, plus, of each other waiting tenant, the
        tokens whose start tags fall before the new request's tag (a continuous estimate: the tenant's tag
        advances by cost / weight per request). A quiet tenant sees little ahead even behind a flood.
        """
        state = self._tenants.get(tenant)
        own_ahead = 0
        if state is not None and state.num_items:
            own_ahead = sum(tokens for p, tokens in state.tokens_by_priority.items() if p <= priority)
            own_tag = state.head_tag + own_ahead / state.weight
        else:
            own_tag = max(self.virtual_time, state.finish_tag if state is not None else 0.0)
        ahead = own_ahead
        for name, other in self._tenants.items():
            if name == tenant or not other.num_items or other.head_tag >= own_tag:
                continue
            ahead += min(other.queued_tokens, round((own_tag - other.head_tag) * other.weight))
        return ahead

    def _tenant(self, name: str, weight: float) -> _Tenant:
        state = self._tenants.get(name)
        if state is None:
            state = self._tenants[name] = _Tenant(weight=weight, finish_tag=self.virtual_time)
        else:
            state.weight = weight
        return state

    def _push_head(self, name: str, state: _Tenant, seq: int) -> None:
        state.version = next(self._versions)
        heapq.heappush(self._heads, (state.head_tag, seq, name, state.version))
        if len(self._heads) > 2 * len(self._tenants) + 32:
            # `pop(tenant)` and `adjust` leave the old entry behind; only `pop()` skips them from the top. The
            # gate pops by tenant, so without this the heap grew by one entry per request served, for ever.
            self._heads = [entry for entry in self._heads if self._is_current(entry)]
            heapq.heapify(self._heads)

    def _is_current(self, entry: tuple[float, int, str, int]) -> bool:
        state = self._tenants.get(entry[2])
        return state is not None and state.version == entry[3] and state.head_tag is not None

    def _pop_tenant_head(self, state: _Tenant) -> tuple[Hashable, _Item]:
        while True:
            _, seq, item_id = heapq.heappop(state.heap)
            item = self._items.get(item_id)
            if item is not None and item.seq == seq:
                del self._items[item_id]
                self._forget(state, item)
                return item_id, item

    def _forget(self, state: _Tenant, item: _Item) -> None:
        state.num_items -= 1
        state.queued_tokens -= item.cost_tokens
        left = state.tokens_by_priority[item.priority] - item.cost_tokens
        if left:
            state.tokens_by_priority[item.priority] = left
        else:
            del state.tokens_by_priority[item.priority]
        self._num_queued_tokens -= item.cost_tokens

    def _idle(self, name: str, state: _Tenant) -> None:
        state.head_tag = None
        state.version = next(self._versions)
        state.heap.clear()
        # A tenant whose finish tag is behind virtual time would restart at V anyway: forget it (bounded memory).
        if state.finish_tag <= self.virtual_time:
            del self._tenants[name]


class QueueTimeout(TimeoutError):
    """A request waited `timeout_s` for its fair turn without getting a slot."""


@dataclass(frozen=True)
class GateStats:
    """What the gate holds now: the number the autoscaler adds to the engines' own queue (`num_waiting`)."""

    capacity: int
    num_in_use: int
    num_waiting: int
    queued_tokens: int


class FairGate:
    """`capacity` slots handed out in weighted fair order: `grant = await gate.acquire(...)`, then
    `gate.first_token(grant)` at the request's first output and `gate.release(tenant, grant)` at its end.

    Fast path: with a slot free and nobody waiting, `acquire` takes the slot without suspending. Otherwise the
    request waits in a `FairQueue`; each freed slot goes to the queue's next request. A waiter that is cancelled
    or times out leaves the queue (a slot granted to it in the same instant is passed on), so slots never leak.

    `reserved` of the slots are kept for tenants holding fewer slots than their weighted share of `capacity`
    among the tenants now holding or waiting, beside at least one other: a tenant that floods the gate alone fills
    `capacity - reserved` slots, and a quiet tenant's request that arrives then starts at once instead of waiting
    for a flood request to finish. The ingress sizes the gate so that `capacity - reserved` is what the engines
    run at once (max_num_seqs) and the reserve is the engines' headroom above it: a tenant alone loses nothing.
    """

    def __init__(self, capacity: int, reserved: int = 0, pacer: PrefillPacer | None = None):
        if not 0 <= reserved < capacity:
            raise ValueError(f"need 0 <= reserved < capacity, got reserved={reserved}, capacity={capacity}")
        self.capacity = capacity
        self.reserved = reserved
        self.pacer = pacer
        self.num_in_use = 0
        self.queue = FairQueue()
        self._waiters: dict[int, asyncio.Future] = {}
        self._ids = itertools.count()
        self._grants = itertools.count(1)
        self._held: dict[str, int] = {}
        self._weights: dict[str, float] = {}
        self._recheck: asyncio.TimerHandle | None = None

    @property
    def num_waiting(self) -> int:
        return len(self.queue)

    def stats(self) -> GateStats:
        return GateStats(self.capacity, self.num_in_use, len(self.queue), self.queue.queued_tokens())

    async def acquire(self, tenant: str, cost_tokens: int, weight: float = 1.0, priority: int = 0,
                      timeout_s: float | None = None) -> int:
        """Wait for a slot and this request's fair turn; returns the grant (for `first_token` and `release`).
        Raises `QueueTimeout` after `timeout_s` of waiting."""
        self._weights[tenant] = weight
        if not self.queue and self._wait_s(tenant, weight) == 0.0:
            self.queue.charge(tenant, cost_tokens, weight)
            return self._take(tenant, weight)
        item_id = next(self._ids)
        granted = asyncio.get_running_loop().create_future()
        self._waiters[item_id] = granted
        self.queue.push(item_id, tenant, cost_tokens, weight, priority)
        self._dispatch()
        try:
            async with asyncio.timeout(timeout_s):
                return await granted
        except BaseException as exc:
            if granted.done() and not granted.cancelled():
                self.release(tenant, granted.result())
            else:
                granted.cancel()
                self._waiters.pop(item_id, None)
                self.queue.remove(item_id)
                self._dispatch()
            if isinstance(exc, TimeoutError):
                raise QueueTimeout(f"no slot within {timeout_s} s") from None
            raise

    def first_token(self, grant: int) -> None:
        """The request granted as `grant` produced its first output (ends its prefill for pacing)."""
        if self.pacer is not None and self.pacer.first_token(grant):
            self._dispatch()

    def adjust(self, tenant: str, delta_tokens: int, weight: float = 1.0) -> None:
        """A request's real cost differed from its charge by `delta_tokens` (FairQueue.adjust)."""
        self.queue.adjust(tenant, delta_tokens, weight)

    def release(self, tenant: str, grant: int) -> None:
        """Free the slot `tenant` got as `grant`; the next waiter gets it."""
        if self.num_in_use <= 0 or not self._held.get(tenant):
            raise RuntimeError(f"release without a held slot (tenant {tenant!r})")
        self.num_in_use -= 1
        self._held[tenant] -= 1
        if not self._held[tenant]:
            del self._held[tenant]
        if self.pacer is not None:
            self.pacer.ended(grant, tenant)
        self._dispatch()

    def set_capacity(self, capacity: int, reserved: int | None = None) -> None:
        """Change the number of slots (the model's live replicas changed); waiters get new slots at once. Slots
        held beyond a lowered capacity are kept until released."""
        reserved = self.reserved if reserved is None else reserved
        if not 0 <= reserved < capacity:
            raise ValueError(f"need 0 <= reserved < capacity, got reserved={reserved}, capacity={capacity}")
        self.capacity, self.reserved = capacity, reserved
        self._dispatch()

    def _present(self, tenant: str, weight: float, lingering: bool) -> dict[str, float]:
        """Weights of the tenants holding or waiting (and, with `lingering`, seen by the pacer lately)."""
        present = {name: self._weights.get(name, 1.0) for name, held in self._held.items() if held}
        present.update({name: self._weights.get(name, 1.0) for name in self.queue.queued_tokens_by_tenant()})
        if lingering and self.pacer is not None:
            present.update({name: self._weights.get(name, 1.0) for name in self.pacer.lingering(tenant)})
        present[tenant] = weight
        return present

    def _under_share(self, tenant: str, present: dict[str, float]) -> bool:
        return self._held.get(tenant, 0) < self.capacity * present[tenant] / sum(present.values())

    def _may_take(self, tenant: str, weight: float) -> bool:
        """A tenant under its share beside others may take any free slot; any other only while the slots not held
        by such tenants (up to `reserved` of theirs count as the reserve, whichever slots they took) leave the
        reserve free, so a tenant alone or over its share never holds more than `capacity - reserved`."""
        if self.num_in_use >= self.capacity:
            return False
        present = self._present(tenant, weight, lingering=False)
        if len(present) > 1 and self._under_share(tenant, present):
            return True
        protected = sum(held for name, held in self._held.items()
                        if name != tenant and name in present and self._under_share(name, present))
        return self.num_in_use - min(self.reserved, protected) < self.capacity - self.reserved

    def _wait_s(self, tenant: str, weight: float) -> float | None:
        """None: no slot for `tenant` now; 0.0: it may take one; > 0: a slot, but its pacing says wait this long."""
        if not self._may_take(tenant, weight):
            return None
        if self.pacer is None:
            return 0.0
        present = self._present(tenant, weight, lingering=True)
        return self.pacer.wait_s(tenant, over_share=not self._under_share(tenant, present),
                                 others_present=len(present) > 1, holding=bool(self._held.get(tenant)))

    def _take(self, tenant: str, weight: float) -> int:
        grant = next(self._grants)
        if self.pacer is not None:
            present = self._present(tenant, weight, lingering=True)
            # Protected: a quiet tenant's request (under its share and holding nothing else), which floods over
            # their share wait for. A flood refilling under its share is not: two floods holding each other back
            # by turns gave weights 2:1 a 0.34 share for the heavier (noisy-neighbour run of 22a995c).
            self.pacer.started(grant, tenant, beside_others=len(present) > 1,
                               protected=self._under_share(tenant, present) and not self._held.get(tenant))
        self.num_in_use += 1
        self._held[tenant] = self._held.get(tenant, 0) + 1
        return grant

    def _dispatch(self) -> None:
        """Grant free slots to the waiting tenants in fair order. One that may not take a slot now (its pacing, or
        the reserve) holds back only tenants over their share: one under it (a quiet tenant) goes past, a flood
        does not take another flood's turn (weights would no longer hold)."""
        while self.queue and self.num_in_use < self.capacity:
            soonest_s, blocked = None, False
            for tenant in self.queue.waiting_tenants():
                weight = self._weights.get(tenant, 1.0)
                wait_s = self._wait_s(tenant, weight)
                if wait_s == 0.0 and (not blocked or self._under_share(
                        tenant, self._present(tenant, weight, lingering=True))):
                    granted = self._waiters.pop(self.queue.pop(tenant))
                    if not granted.done():  # a waiter cancelled a moment ago leaves its turn to the next
                        granted.set_result(self._take(tenant, weight))
                    break
                blocked = True  # a tenant over its share behind this one waits for it
                if wait_s:
                    soonest_s = wait_s if soonest_s is None else min(soonest_s, wait_s)
            else:
                if soonest_s is not None:
                    self._recheck_in(soonest_s)  # a paced tenant's turn comes when its spacing or a hold runs out
                return

    def _recheck_in(self, delay_s: float) -> None:
        loop = asyncio.get_running_loop()
        when = loop.time() + delay_s + 0.001
        if self._recheck is not None and not self._recheck.cancelled() and self._recheck.when() <= when:
            return
        if self._recheck is not None:
            self._recheck.cancel()

        def recheck() -> None:
            self._recheck = None
            self._dispatch()

        self._recheck = loop.call_at(when, recheck)
