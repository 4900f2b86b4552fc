"""FairQueue: weighted fair order by tokens across tenants, no banked credit, priority within a tenant."""

import random

import pytest

from serve_app.tenancy.fair_queue import FairQueue


def drain(queue: FairQueue, n: int | None = None) -> list:
    served = []
    while n is None or len(served) < n:
        item = queue.pop()
        if item is None:
            break
        served.append(item)
    return served


def test_empty_queue():
    queue = FairQueue()
    assert queue.pop() is None and len(queue) == 0 and queue.queued_tokens() == 0


def test_quiet_tenant_is_not_queued_behind_a_flood():
    queue = FairQueue()
    for i in range(100):
        queue.push(("flood", i), "flood", cost_tokens=200)
    queue.push(("quiet", 0), "quiet", cost_tokens=200)
    # Both start at the same virtual time; the flood's first request came first, then the quiet one is next.
    assert drain(queue, 2) == [("flood", 0), ("quiet", 0)]


def test_quiet_tenant_goes_first_when_the_flood_is_already_being_served():
    queue = FairQueue()
    for _ in range(4):
        queue.charge("flood", 200)  # in service (admitted on the fast path)
    for i in range(100):
        queue.push(("flood", i), "flood", cost_tokens=200)
    queue.push(("quiet", 0), "quiet", cost_tokens=200)
    assert queue.pop() == ("quiet", 0)


def test_weights_give_proportional_token_shares_under_saturation():
    rng = random.Random(7)
    queue = FairQueue()
    costs = {}
    for i in range(2000):
        for tenant, weight in (("A", 2.0), ("B", 1.0)):
            cost = rng.randint(50, 400)
            costs[(tenant, i)] = cost
            queue.push((tenant, i), tenant, cost, weight=weight)
    served = drain(queue, 1500)
    tokens = {"A": 0, "B": 0}
    for tenant, i in served:
        tokens[tenant] += costs[(tenant, i)]
    assert tokens["A"] / tokens["B"] == pytest.approx(2.0, rel=0.03)


def test_request_count_does_not_buy_share_tokens_do():
    # A sends many small requests, B few large ones, equal weights: equal tokens, not equal requests.
    queue = FairQueue()
    for i in range(1000):
        queue.push(("A", i), "A", 10)
    for i in range(100):
        queue.push(("B", i), "B", 100)
    served = drain(queue, 220)
    tokens_a = 10 * sum(1 for t, _ in served if t == "A")
    tokens_b = 100 * sum(1 for t, _ in served if t == "B")
    assert tokens_a == pytest.approx(tokens_b, rel=0.1)


def test_idle_tenant_banks_no_credit():
    queue = FairQueue()
    for i in range(100):
        queue.push(("A", i), "A", 100)
    drain(queue, 100)  # A alone for a long time; B was idle
    for i in range(100, 200):
        queue.push(("A", i), "A", 100)
    for i in range(50):
        queue.push(("B", i), "B", 100)
    served = drain(queue, 20)
    num_b = sum(1 for tenant, _ in served if tenant == "B")
    assert 9 <= num_b <= 11  # alternating, not a run of 20 B requests catching up


def test_tenant_that_used_an_idle_engine_carries_no_debt_beyond_its_last_request():
    queue = FairQueue()
    for _ in range(10):
        queue.charge("A", 100)  # A used 1000 tokens while nobody else wanted any
    queue.push("a0", "A", 100)
    queue.push("b0", "B", 100)
    queue.push("b1", "B", 100)
    # B (under its share) goes first; then they alternate: A is not punished for using spare capacity.
    assert drain(queue) == ["b0", "a0", "b1"]


def test_priority_orders_within_a_tenant_not_across():
    queue = FairQueue()
    queue.push("a-low-1", "A", 100, priority=5)
    queue.push("a-low-2", "A", 100, priority=5)
    queue.push("b-1", "B", 100)
    queue.push("a-high", "A", 100, priority=0)  # arrives last, served first within A
    assert drain(queue) == ["a-high", "b-1", "a-low-1", "a-low-2"]


def test_remove_drops_without_charging():
    queue = FairQueue()
    queue.push("a0", "A", 100)
    queue.push("a1", "A", 300)
    queue.push("b0", "B", 50)
    assert queue.queued_tokens() == 450 and queue.queued_tokens_by_tenant() == {"A": 400, "B": 50}
    assert queue.remove("a0") and not queue.remove("a0") and "a0" not in queue
    assert queue.queued_tokens_by_tenant() == {"A": 300, "B": 50}
    assert queue.remove("a1")
    assert queue.queued_tokens_by_tenant() == {"B": 50}
    assert drain(queue) == ["b0"] and len(queue) == 0
    queue.push("a0", "A", 100)  # an id may be reused once it left the queue
    assert queue.pop() == "a0"


def test_push_validation_and_charge_guard():
    queue = FairQueue()
    queue.push("x", "A", 10)
    with pytest.raises(KeyError):
        queue.push("x", "A", 10)
    with pytest.raises(ValueError):
        queue.push("y", "A", 10, weight=0)
    with pytest.raises(ValueError, match="waiting"):
        queue.charge("A", 10)


def test_tokens_ahead_sees_little_behind_a_flood():
    queue = FairQueue()
    for _ in range(4):
        queue.charge("flood", 500)
    for i in range(100):
        queue.push(i, "flood", 500)
    assert queue.tokens_ahead("quiet") == 0
    assert queue.tokens_ahead("flood") == 100 * 500
    queue.push("q", "quiet", 500)
    # A second quiet request waits for the first and for about as many flood tokens.
    assert 500 <= queue.tokens_ahead("quiet") <= 500 + 2 * 500
    # Priority: a high-priority flood request skips the flood's own lower-priority backlog (not the quiet one).
    queue.push("urgent", "flood", 500, priority=-1)
    assert queue.tokens_ahead("flood", priority=-1) == 500 + 500


def test_queue_state_stays_bounded():
    queue = FairQueue()
    for round_ in range(50):
        for tenant in range(20):
            queue.push((round_, tenant), f"t{tenant}", 10)
        drain(queue)
    assert len(queue._tenants) <= 20
    for round_ in range(200):  # served by tenant, as the gate does, and adjusted: the head heap stays bounded too
        for tenant in range(3):
            queue.push((round_, tenant, "x"), f"t{tenant}", 10)
            queue.push((round_, tenant, "y"), f"t{tenant}", 10)
        for tenant in range(3):
            queue.adjust(f"t{tenant}", 5)
            assert queue.pop(f"t{tenant}") is not None
    assert len(queue._heads) <= 2 * len(queue._tenants) + 33


def test_a_request_that_used_more_than_charged_pushes_its_tenant_back_and_one_that_used_less_does_not_bank():
    queue = FairQueue()
    queue.charge("A", 100)
    queue.charge("B", 100)
    queue.adjust("A", 400)  # A's request used 500 tokens, not 100
    queue.push("a", "A", 100)
    queue.push("b1", "B", 100)
    queue.push("b2", "B", 100)
    queue.push("b3", "B", 100)
    assert [queue.pop() for _ in range(4)] == ["b1", "b2", "b3", "a"]  # B catches up on A's extra 400 first
    queue.adjust("B", -10_000)  # a refund never moves B before virtual time
    queue.push("a2", "A", 100)
    queue.push("b4", "B", 100)
    assert queue.pop() == "b4" and queue.virtual_time >= 0


def test_a_refund_never_moves_a_waiting_tenant_forward_after_others_were_served_past_it():
    """The gate serves a tenant past one whose turn must wait (pacing), so virtual time can pass the waiting
    tenant's tags. A small refund (its earlier request used a few tokens fewer than charged) must move it back,
    never forward to virtual time, which took its place in line."""
    queue = FairQueue()
    for i in range(4):
        queue.push(("c", i), "C", 200, weight=2.0)  # tags 0, 100, 200, 300
    for i in range(4):
        queue.push(("a", i), "A", 150)
    assert [queue.pop("A") for _ in range(3)] == [("a", 0), ("a", 1), ("a", 2)]  # past C: virtual time 300
    queue.adjust("C", -20, weight=2.0)
    assert [queue.pop() for _ in range(4)] == [("c", 0), ("c", 1), ("c", 2), ("c", 3)]
    assert queue.pop() == ("a", 3)


def test_a_tenant_forgotten_and_seen_again_has_one_current_head():
    """Served by tenant, a tenant's old head entries stay in the heap; after it is forgotten (idle, nothing owed)
    and comes back, none of them may count as its current head (per-tenant versions restarted at 0 and did)."""
    queue = FairQueue()
    queue.push("a1", "A", 100)
    queue.push("a2", "A", 100)
    assert queue.pop("A") == "a1" and queue.pop("A") == "a2"
    queue.adjust("A", -100)  # its requests used less than charged: nothing owed, A is forgotten
    assert "A" not in queue._tenants
    queue.push("b1", "B", 100)
    queue.push("a3", "A", 100)
    assert queue.waiting_tenants() == ["B", "A"]
    assert [queue.pop(), queue.pop(), queue.pop()] == ["b1", "a3", None]
