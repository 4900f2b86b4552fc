"""FairGate: slots handed out in fair order; fast path without suspending; no slot leaks on cancel or timeout."""

import asyncio
from collections import Counter
from contextlib import asynccontextmanager

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serve_app.tenancy.fair_queue import FairGate, QueueTimeout
from serve_app.tenancy.pacing import PrefillPacer


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


@asynccontextmanager
async def slot(gate: FairGate, tenant: str, cost_tokens: int, **kwargs):
    """What the ingress does around a request: acquire, hold, release (also when cancelled inside)."""
    grant = await gate.acquire(tenant, cost_tokens, **kwargs)
    try:
        yield grant
    finally:
        gate.release(tenant, grant)


def held_by(gate: FairGate, tenant: str) -> int:
    return gate._held.get(tenant, 0)


def test_fast_path_does_not_suspend():
    gate = FairGate(2)
    entering = gate.acquire("A", 100)
    with pytest.raises(StopIteration) as done:  # ran to completion on the first step: no await suspended it
        entering.send(None)
    assert gate.num_in_use == 1 and gate.num_waiting == 0
    gate.release("A", done.value.value)
    assert gate.num_in_use == 0 and gate.stats().num_in_use == 0


async def test_quiet_tenant_gets_the_next_free_slot_despite_a_flood():
    gate = FairGate(4)
    order: list[str] = []
    release = asyncio.Event()

    async def request(tenant: str, tag: str) -> None:
        async with slot(gate, tenant, 200):
            order.append(tag)
            await release.wait()

    flood = [asyncio.create_task(request("flood", f"flood-{i}")) for i in range(100)]
    await settle()
    assert gate.num_in_use == 4 and gate.num_waiting == 96
    quiet = asyncio.create_task(request("quiet", "quiet"))
    await settle()
    release.set()  # every holder finishes; slots are handed on in fair order
    await asyncio.gather(*flood, quiet)
    assert order[4] == "quiet"  # first request served after the four already running
    assert gate.num_in_use == 0 and gate.num_waiting == 0


async def test_weights_share_slots_two_to_one_under_saturation():
    gate = FairGate(1)
    served: list[str] = []

    async def request(tenant: str, weight: float) -> None:
        async with slot(gate, tenant, 100, weight=weight):
            served.append(tenant)
            await asyncio.sleep(0)

    warm_up = await gate.acquire("warm-up", 1)  # saturate, so every request below queues
    tasks = [asyncio.create_task(request(t, w)) for _ in range(60) for t, w in (("A", 2.0), ("B", 1.0))]
    await settle()
    gate.release("warm-up", warm_up)
    await asyncio.gather(*tasks)
    first = served[:60]
    assert first.count("A") == pytest.approx(40, abs=2)


async def test_priority_within_a_tenant():
    gate = FairGate(1)
    served: list[str] = []
    first = await gate.acquire("A", 10)

    async def request(tag: str, priority: int) -> None:
        async with slot(gate, "A", 10, priority=priority):
            served.append(tag)

    tasks = [asyncio.create_task(request("low", 5)), asyncio.create_task(request("high", 0))]
    await settle()
    gate.release("A", first)
    await asyncio.gather(*tasks)
    assert served == ["high", "low"]


async def test_cancelled_waiter_leaves_the_queue_and_holder_releases():
    gate = FairGate(1)
    a = await gate.acquire("A", 10)
    waiter = asyncio.create_task(gate.acquire("B", 10))
    await settle()
    assert gate.num_waiting == 1
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert gate.num_waiting == 0 and gate.num_in_use == 1
    gate.release("A", a)
    assert gate.num_in_use == 0


async def test_holder_cancelled_inside_the_slot_releases_it():
    gate = FairGate(1)
    entered = asyncio.Event()

    async def hold() -> None:
        async with slot(gate, "A", 10):
            entered.set()
            await asyncio.sleep(3600)

    task = asyncio.create_task(hold())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert gate.num_in_use == 0


async def test_timeout_raises_queue_timeout_and_frees_the_place():
    gate = FairGate(1)
    await gate.acquire("A", 10)
    with pytest.raises(QueueTimeout):
        await gate.acquire("B", 10, timeout_s=0.01)
    assert gate.num_waiting == 0 and gate.num_in_use == 1
    assert isinstance(QueueTimeout(), TimeoutError)


async def test_slot_granted_to_a_waiter_cancelled_in_the_same_instant_is_passed_on():
    gate = FairGate(1)
    a = await gate.acquire("A", 10)
    b = asyncio.create_task(gate.acquire("B", 10))
    c = asyncio.create_task(gate.acquire("C", 10))
    await settle()
    gate.release("A", a)  # hands the slot to B (its future is set) ...
    b.cancel()      # ... but B is cancelled before it runs again
    with pytest.raises(asyncio.CancelledError):
        await b
    c_grant = await c  # B's slot went on to C
    assert gate.num_in_use == 1 and gate.num_waiting == 0
    gate.release("C", c_grant)
    assert gate.num_in_use == 0


async def test_set_capacity_wakes_waiters():
    gate = FairGate(1)
    await gate.acquire("A", 10)
    waiters = [asyncio.create_task(gate.acquire("B", 10)) for _ in range(3)]
    await settle()
    gate.set_capacity(3)
    await asyncio.gather(*waiters[:2])
    assert gate.num_in_use == 3 and gate.num_waiting == 1
    waiters[2].cancel()
    await asyncio.gather(waiters[2], return_exceptions=True)
    with pytest.raises(ValueError):
        gate.set_capacity(0)
    assert gate.stats().capacity == 3


def test_release_without_slot_is_an_error():
    with pytest.raises(RuntimeError):
        FairGate(1).release("A", 1)


operation = st.one_of(
    st.tuples(st.just("start"), st.sampled_from(["A", "B", "C"]), st.integers(1, 500), st.integers(0, 2),
              st.sampled_from([None, 0.0, 0.001])),
    st.tuples(st.just("cancel"), st.integers(0, 1000)),
    st.tuples(st.just("finish"), st.integers(0, 1000)),
    st.tuples(st.just("tick")),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(capacity=st.integers(1, 4), operations=st.lists(operation, max_size=60))
def test_no_slot_leaks_under_random_cancellation(capacity, operations):
    async def scenario() -> None:
        gate = FairGate(capacity)
        holding: set[int] = set()
        tasks: list[asyncio.Task] = []
        finish_events: list[asyncio.Event] = []

        async def request(index: int, tenant: str, cost: int, priority: int, timeout_s) -> None:
            async with slot(gate, tenant, cost, priority=priority, timeout_s=timeout_s):
                holding.add(index)
                try:
                    await finish_events[index].wait()
                finally:
                    holding.discard(index)

        for op in operations:
            if op[0] == "start":
                finish_events.append(asyncio.Event())
                tasks.append(asyncio.create_task(request(len(tasks), *op[1:])))
            elif op[0] == "cancel" and tasks:
                tasks[op[1] % len(tasks)].cancel()
            elif op[0] == "finish" and tasks:
                finish_events[op[1] % len(tasks)].set()
            await asyncio.sleep(0)
            # A request granted a slot holds it from that instant, before its task runs again.
            assert len(holding) <= gate.num_in_use <= capacity
            if op[0] == "tick":
                await asyncio.sleep(0.002)
                await settle()
                assert gate.num_in_use == len(holding)
            # Never a free slot while a live request waits.
            live_waiters = sum(1 for f in gate._waiters.values() if not f.done())
            assert not (live_waiters and gate.num_in_use < capacity)
        for event in finish_events:
            event.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert gate.num_in_use == 0 and gate.num_waiting == 0 and not gate._waiters

    asyncio.run(scenario())


async def test_reserved_slots_let_a_quiet_tenant_start_at_once_beside_a_flood():
    gate = FairGate(8, reserved=1)
    release = asyncio.Event()
    started: list[str] = []

    async def request(tenant: str) -> None:
        async with slot(gate, tenant, 200):
            started.append(tenant)
            await release.wait()

    flood = [asyncio.create_task(request("flood")) for _ in range(32)]
    await settle()
    # The flood alone is over its share once it holds capacity - reserved slots.
    assert held_by(gate, "flood") == 7 and gate.num_waiting == 25
    quiet = asyncio.create_task(request("quiet"))
    await settle()
    assert started[-1] == "quiet" and held_by(gate, "quiet") == 1 and gate.num_in_use == 8
    release.set()
    await asyncio.gather(*flood, quiet)
    assert gate.num_in_use == 0 and held_by(gate, "flood") == 0


def test_reserved_must_leave_a_shared_slot():
    with pytest.raises(ValueError):
        FairGate(2, reserved=2)


# ---------------------------------------------------------------- prefill pacing


def paced_gate(now: list[float], capacity: int = 9, reserved: int = 1, spacing_s: float = 0.1,
               hold_s: float = 2.0, linger_s: float = 1.0) -> FairGate:
    return FairGate(capacity, reserved=reserved,
                    pacer=PrefillPacer(spacing_s, hold_s, linger_s, clock=lambda: now[0]))


async def test_a_tenant_alone_is_never_paced_and_fills_every_shared_slot():
    gate = paced_gate([0.0])
    grants = [await gate.acquire("A", 100) for _ in range(8)]  # no clock advance: spacing would hold them
    assert held_by(gate, "A") == 8 and len(set(grants)) == 8 and gate.num_waiting == 0


async def test_beside_a_quiet_tenant_the_flood_waits_for_its_prefill_then_starts_one_per_spacing():
    now = [0.0]
    gate = paced_gate(now)
    b = await gate.acquire("B", 100)  # quiet tenant, under its share: never paced, its prefill protected
    flood = [asyncio.create_task(gate.acquire("A", 100)) for _ in range(20)]
    await settle()
    assert held_by(gate, "A") == 1  # holding none: its first at once; then one per spacing_s, under its share too
    for expected, at_s in ((2, 0.11), (3, 0.22), (4, 0.33), (5, 0.44)):
        now[0] = at_s
        await asyncio.sleep(0.15)  # the gate rechecks on its own timer
        assert held_by(gate, "A") == expected
    now[0] = 0.6
    await asyncio.sleep(0.15)
    assert held_by(gate, "A") == 5  # over its share (4.5 of 9) it waits for B's first token, past spacing_s too
    gate.first_token(b)
    await settle()
    assert held_by(gate, "A") == 6  # B's prefill done: one more start at once
    await asyncio.sleep(0.15)
    assert held_by(gate, "A") == 6  # the next only spacing_s later
    now[0] = 0.71
    await asyncio.sleep(0.15)
    assert held_by(gate, "A") == 7
    now[0] = 0.82
    await asyncio.sleep(0.15)
    assert held_by(gate, "A") == 8  # all 8 shared slots: B's slot counts as the reserve, whichever it took
    now[0] = 5.0
    await asyncio.sleep(0.15)
    assert held_by(gate, "A") == 8 and gate.num_in_use == 9
    for task in flood:
        task.cancel()
    await asyncio.gather(*flood, return_exceptions=True)


async def test_a_flood_whose_requests_end_together_refills_one_per_spacing_beside_a_quiet_tenant():
    """Closed-loop clients that started together end together: the flood drops under its share at once. Refilled
    at once, its prefills would share one engine step with the quiet tenant's next (measured 0.5-1.1 s against
    0.1 s alone); the spacing holds under the share too, and the quiet tenant, holding nothing, is never spaced."""
    now = [0.0]
    gate = paced_gate(now)
    flood = [await gate.acquire("A", 100) for _ in range(8)]  # alone: all 8 shared slots at once
    b = await gate.acquire("B", 100)
    gate.first_token(b)
    now[0] = 1.0
    for grant in flood[1:]:
        gate.release("A", grant)  # seven end in the same step
    refill = [asyncio.create_task(gate.acquire("A", 100)) for _ in range(7)]
    await settle()
    assert held_by(gate, "A") == 2  # one of the seven at once (A's last start was long ago), the rest wait ...
    now[0] = 1.001
    gate.release("B", b)
    b2 = await asyncio.wait_for(gate.acquire("B", 100), timeout=1)  # ... and B's next goes at once
    assert held_by(gate, "B") == 1 and b2 is not None
    await settle()
    assert held_by(gate, "A") == 2
    now[0] = 1.2
    await asyncio.sleep(0.15)
    assert held_by(gate, "A") == 3  # one start per spacing_s
    for task in refill:
        task.cancel()
    await asyncio.gather(*refill, return_exceptions=True)


async def test_a_prefill_that_never_reports_holds_the_flood_back_only_for_hold_s():
    now = [0.0]  # the gate's clock; its recheck timer still runs on the loop (after ~hold_s)
    gate = paced_gate(now, capacity=4, reserved=0, spacing_s=0.0, hold_s=0.05)
    await gate.acquire("B", 100)  # never reports its first token
    a1 = [await gate.acquire("A", 100) for _ in range(2)]  # A under its share (2 of 4) starts at once
    a2 = asyncio.create_task(gate.acquire("A", 100))  # over its share: waits for B's first token
    await settle()
    assert held_by(gate, "A") == 2
    now[0] = 0.06
    assert await asyncio.wait_for(a2, timeout=2) not in a1  # started by the gate's own recheck, no event needed
    assert held_by(gate, "A") == 3


async def test_a_quiet_tenant_between_two_requests_still_paces_the_flood():
    """Closed-loop clients end their requests together: the quiet tenant is away for milliseconds exactly when
    the flood refills its slots. Within `linger_s` of its last request it still counts as present."""
    now = [0.0]
    gate = paced_gate(now, spacing_s=0.5)
    b = await gate.acquire("B", 100)
    gate.first_token(b)
    gate.release("B", b)  # B's request ended; its client sends the next one in a moment
    flood = [asyncio.create_task(gate.acquire("A", 100)) for _ in range(8)]
    await settle()
    assert held_by(gate, "A") == 1  # beside B: holding none, its first at once, then one per spacing_s
    now[0] = 1.5  # B did not come back: A alone, not paced
    await asyncio.sleep(0.6)
    assert held_by(gate, "A") == 8
    for task in flood:
        task.cancel()
    await asyncio.gather(*flood, return_exceptions=True)


async def run_stepped_engine(gate: FairGate, now: list[float], step_s: float, clients: dict[str, tuple[int, float]],
                             num_steps: int, recheck_each_step: bool = False) -> list[Counter]:
    """Closed-loop clients ({tenant: (count, weight)}) through `gate` into an engine that steps every `step_s` on
    the fake clock `now`: a request gives its first token after 1 step and ends after 16, and its client sends the
    next at once. Returns, per step, the rows each tenant ran (one output token each). `recheck_each_step`: do
    what the gate's own recheck timer does on the loop's clock, here on the fake one."""
    running: dict[int, tuple[str, int]] = {}  # grant -> (tenant, steps left)
    waiting: list[asyncio.Task] = []

    def start(tenant: str) -> None:
        task = asyncio.create_task(gate.acquire(tenant, 144, weight=clients[tenant][1]))
        task.tenant = tenant
        waiting.append(task)

    for tenant, (count, _) in clients.items():
        for _ in range(count):
            start(tenant)
    rows: list[Counter] = []
    for _ in range(num_steps):
        if recheck_each_step:
            gate._dispatch()
        await asyncio.sleep(0)
        await settle()
        for task in [t for t in waiting if t.done()]:
            waiting.remove(task)
            running[task.result()] = (task.tenant, 16)
        rows.append(Counter(tenant for tenant, _ in running.values()))
        now[0] += step_s
        for grant, (tenant, left) in list(running.items()):
            if left == 16:
                gate.first_token(grant)
            if left == 1:
                del running[grant]
                gate.release(tenant, grant)
                start(tenant)  # closed loop: the client sends its next request at once
            else:
                running[grant] = (tenant, left - 1)
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
    return rows


async def test_with_pacing_a_flood_beside_a_quiet_tenant_keeps_the_engine_rows_full():
    """Work-conserving: an engine of 8 rows (+1 reserved) steps every 50 ms; every request takes 1 step to its
    first token and 16 steps in all. The flood (32 clients) beside a quiet tenant (one at a time) must keep the 8
    shared rows busy, as it would alone: pacing delays a start by at most about one step."""
    now = [0.0]
    step_s = 0.05
    gate = paced_gate(now, spacing_s=step_s)
    rows = await run_stepped_engine(gate, now, step_s, {"A": (32, 1.0), "B": (1, 1.0)}, num_steps=400)
    busy_rows = [step_rows["A"] for step_rows in rows]
    mean_a_rows = sum(busy_rows[20:]) / len(busy_rows[20:])
    assert mean_a_rows >= 7.5, mean_a_rows  # of 8 shared rows; B runs in the reserved row


async def test_a_paced_tenant_first_in_fair_order_does_not_hold_back_a_tenant_after_it():
    now = [0.0]
    gate = paced_gate(now, spacing_s=0.1)
    big = await gate.acquire("B", 5000)  # B's last request was large: its next one comes after A's in fair order
    gate.first_token(big)
    gate.release("B", big)
    flood = [asyncio.create_task(gate.acquire("A", 100)) for _ in range(6)]
    await settle()
    assert held_by(gate, "A") == 1 and gate.num_waiting == 5  # A holds one: the rest one per spacing_s
    quiet = asyncio.create_task(gate.acquire("B", 100))
    await settle()  # no clock advance: A is still spaced
    assert quiet.done() and held_by(gate, "B") == 1  # B holds nothing, so it is never spaced: it goes past A
    assert held_by(gate, "A") == 1
    for task in flood:
        task.cancel()
    await asyncio.gather(*flood, return_exceptions=True)


def test_a_tenant_whose_requests_end_often_starts_as_often():
    """Many rows and short requests (64 rows of 16-token requests end ~4 per step): one start per step would
    leave rows empty; the spacing shortens to the tenant's own recent rate of ends."""
    now = [0.0]
    pacer = PrefillPacer(spacing_s=0.1, rate_window_s=1.0, clock=lambda: now[0])
    for i in range(20):
        pacer.started(i, "A", protected=False, beside_others=True)
        now[0] = 0.5 + i * 0.02
        pacer.ended(i, "A")  # 20 ends within the last second: 0.05 s apart on average
    pacer.started(100, "A", protected=False, beside_others=True)
    assert abs(pacer.wait_s("A", over_share=True, others_present=True, holding=True) - 0.05) < 1e-9
    now[0] += 2.0  # the window holds no end any more: back to spacing_s
    pacer.started(101, "A", protected=False, beside_others=True)
    assert abs(pacer.wait_s("A", over_share=True, others_present=True, holding=True) - 0.1) < 1e-9


async def test_with_pacing_two_floods_keep_their_weights_and_the_rows_full():
    """A (weight 1) and C (weight 2), 16 closed-loop clients each, on 8 rows (+1 reserved) stepping every 50 ms,
    requests of 16 steps. Both are paced; the one whose turn it is in fair order but is spaced must not lose its
    turn to the other flood, or the weights no longer hold."""
    now = [0.0]
    step_s = 0.05
    gate = FairGate(9, reserved=1, pacer=PrefillPacer(2 * step_s, 2.0, 1.0, clock=lambda: now[0]))
    rows = await run_stepped_engine(gate, now, step_s, {"A": (16, 1.0), "C": (16, 2.0)}, num_steps=600,
                                    recheck_each_step=True)
    tokens = {tenant: sum(step_rows[tenant] for step_rows in rows[100:]) for tenant in ("A", "C")}
    busy_rows = [sum(step_rows.values()) for step_rows in rows]
    share_c = tokens["C"] / (tokens["A"] + tokens["C"])
    assert 0.62 <= share_c <= 0.72, share_c  # 2/3 within the gate's granularity
    assert sum(busy_rows[100:]) / len(busy_rows[100:]) >= 7.5  # work-conserving: the shared rows stay full
