"""FairGate: slots handed out in fair order; fast path without suspending; no slot leaks on cancel or timeout."""

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serve_app.tenancy.fair_queue import FairGate, QueueTimeout


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_fast_path_does_not_suspend():
    gate = FairGate(2)
    entering = gate.slot("A", 100).__aenter__()
    with pytest.raises(StopIteration):  # ran to completion on the first step: no await suspended it
        entering.send(None)
    assert gate.num_in_use == 1 and gate.num_waiting == 0
    gate.release()
    assert gate.num_in_use == 0


async def test_quiet_tenant_gets_the_next_free_slot_despite_a_flood():
    gate = FairGate(4)
    order: list[str] = []
    release = asyncio.Event()

    async def request(tenant: str, tag: str) -> None:
        async with gate.slot(tenant, 200):
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
        async with gate.slot(tenant, 100, weight=weight):
            served.append(tenant)
            await asyncio.sleep(0)

    await gate.acquire("warm-up", 1)  # saturate, so every request below queues
    tasks = [asyncio.create_task(request(t, w)) for _ in range(60) for t, w in (("A", 2.0), ("B", 1.0))]
    await settle()
    gate.release()
    await asyncio.gather(*tasks)
    first = served[:60]
    assert first.count("A") == pytest.approx(40, abs=2)


async def test_priority_within_a_tenant():
    gate = FairGate(1)
    served: list[str] = []
    await gate.acquire("A", 10)

    async def request(tag: str, priority: int) -> None:
        async with gate.slot("A", 10, priority=priority):
            served.append(tag)

    tasks = [asyncio.create_task(request("low", 5)), asyncio.create_task(request("high", 0))]
    await settle()
    gate.release()
    await asyncio.gather(*tasks)
    assert served == ["high", "low"]


async def test_cancelled_waiter_leaves_the_queue_and_holder_releases():
    gate = FairGate(1)
    await gate.acquire("A", 10)
    waiter = asyncio.create_task(gate.acquire("B", 10))
    await settle()
    assert gate.num_waiting == 1
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert gate.num_waiting == 0 and gate.num_in_use == 1
    gate.release()
    assert gate.num_in_use == 0


async def test_holder_cancelled_inside_the_slot_releases_it():
    gate = FairGate(1)
    entered = asyncio.Event()

    async def hold() -> None:
        async with gate.slot("A", 10):
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
    await gate.acquire("A", 10)
    b = asyncio.create_task(gate.acquire("B", 10))
    c = asyncio.create_task(gate.acquire("C", 10))
    await settle()
    gate.release()  # hands the slot to B (its future is set) ...
    b.cancel()      # ... but B is cancelled before it runs again
    with pytest.raises(asyncio.CancelledError):
        await b
    await c  # B's slot went on to C
    assert gate.num_in_use == 1 and gate.num_waiting == 0
    gate.release()
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


def test_release_without_slot_is_an_error():
    with pytest.raises(RuntimeError):
        FairGate(1).release()


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
            async with gate.slot(tenant, cost, priority=priority, timeout_s=timeout_s):
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
        async with gate.slot(tenant, 200):
            started.append(tenant)
            await release.wait()

    flood = [asyncio.create_task(request("flood")) for _ in range(32)]
    await settle()
    # The flood alone is over its share once it holds capacity - reserved slots.
    assert gate.held_by("flood") == 7 and gate.num_waiting == 25
    quiet = asyncio.create_task(request("quiet"))
    await settle()
    assert started[-1] == "quiet" and gate.held_by("quiet") == 1 and gate.num_in_use == 8
    release.set()
    await asyncio.gather(*flood, quiet)
    assert gate.num_in_use == 0 and gate.held_by("flood") == 0


def test_reserved_must_leave_a_shared_slot():
    with pytest.raises(ValueError):
        FairGate(2, reserved=2)


# ---------------------------------------------------------------- prefill pacing


async def test_a_tenant_alone_is_never_paced():
    gate = FairGate(8, reserved=1, pace_prefills=True)
    grants = [await gate.acquire("A", 100) for _ in range(7)]
    assert gate.held_by("A") == 7 and gate.num_prefilling() == 7 and len(set(grants)) == 7


async def test_beside_another_tenant_a_flood_starts_one_prefill_at_a_time_and_waits_for_the_quiet_ones():
    gate = FairGate(8, pace_prefills=True, clock=lambda: 0.0)  # no prefill expires while the test runs
    b1 = await gate.acquire("B", 100)
    gate.prefill_done(b1)  # B's request is decoding
    flood = [asyncio.create_task(gate.acquire("A", 100)) for _ in range(20)]
    await settle()
    assert gate.held_by("A") == 1  # the flood's requests start one at a time, not all at once
    for expected in (2, 3, 4, 5):
        (started,) = [t for t in flood if t.done() and not getattr(t, "reported", False)]
        started.reported = True
        gate.prefill_done(started.result())  # its first token: the next may start
        await settle()
        assert gate.held_by("A") == expected
    # A now holds 5 of 8, over its share (4). B's next request starts at once, though A is prefilling ...
    b2 = await gate.acquire("B", 100)
    assert gate.held_by("B") == 2
    (started,) = [t for t in flood if t.done() and not getattr(t, "reported", False)]
    started.reported = True
    gate.prefill_done(started.result())
    await settle()
    assert gate.held_by("A") == 5  # ... and the over-share flood waits for B's prefill
    gate.prefill_done(b2)
    await settle()
    assert gate.held_by("A") == 6
    for task in flood:
        task.cancel()
    await asyncio.gather(*flood, return_exceptions=True)


async def test_a_prefill_that_never_reports_holds_the_flood_back_only_for_prefill_hold_s():
    now = [0.0]  # the gate's clock; its recheck timer still runs on the loop (after ~prefill_hold_s)
    gate = FairGate(4, pace_prefills=True, prefill_hold_s=0.05, clock=lambda: now[0])
    await gate.acquire("B", 100)
    first = await gate.acquire("A", 100)  # never reports its first token
    second = asyncio.create_task(gate.acquire("A", 100))
    await settle()
    assert not second.done()
    now[0] = 0.06
    assert await asyncio.wait_for(second, timeout=2) != first  # started by the gate's own recheck, no event needed
    gate.release("A", first)
    assert gate.held_by("A") == 1


async def test_a_quiet_tenant_between_two_requests_still_holds_the_flood_to_one_prefill():
    """Closed-loop clients end their requests together: the quiet tenant is away for milliseconds exactly when
    the flood refills its slots. Within `linger_s` of its last request it still counts as present."""
    now = [0.0]
    gate = FairGate(8, pace_prefills=True, linger_s=1.0, clock=lambda: now[0])
    b = await gate.acquire("B", 100)
    gate.prefill_done(b)
    gate.release("B", b)  # B's request ended; its client sends the next one in a moment
    flood = [asyncio.create_task(gate.acquire("A", 100)) for _ in range(7)]
    await settle()
    assert gate.held_by("A") == 1  # paced although B holds and waits for nothing right now
    now[0] = 1.5  # B did not come back
    (started,) = [t for t in flood if t.done()]
    gate.prefill_done(started.result())
    await settle()
    assert gate.held_by("A") == 7  # B gone for longer than linger_s: A alone, not paced
