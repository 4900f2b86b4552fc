"""The simulated engine's performance model on plain data: batching, KV budget, preemption, prefix hits, timing."""

from __future__ import annotations

import pytest

from serve_app.server.simulated.offline import Arrival, simulate
from serve_app.server.simulated.profile import EngineProfile, StepCost, load_profile, profile_path
from serve_app.server.simulated.scheduler import Scheduler, SeqStatus, Sequence


def profile(**overrides) -> EngineProfile:
    base = dict(name="t", model="m", device="d", load_time_s=0, max_num_seqs=4, max_num_batched_tokens=64,
                num_kv_cache_tokens=1024, block_size_tokens=16, max_model_len=512,
                cost=StepCost(step_base_ms=10, decode_ms_per_seq=1, prefill_ms_per_token=0.5))
    return EngineProfile(**{**base, **overrides})


def run_steps(scheduler: Scheduler, num_steps: int, start_s: float = 0.0) -> float:
    now_s = start_s
    for _ in range(num_steps):
        plan = scheduler.schedule(now_s)
        now_s += 0.01
        scheduler.postprocess(plan, now_s)
    return now_s


def test_step_cost_is_linear_in_decode_seqs_prefill_tokens_and_context():
    cost = StepCost(step_base_ms=10, decode_ms_per_seq=2, prefill_ms_per_token=0.5,
                    attention_ms_per_1k_context_tokens=4)
    assert cost.step_ms(0, 0, 0) == 0.0
    assert cost.step_ms(3, 0, 0) == 16.0
    assert cost.step_ms(0, 100, 0) == 60.0
    assert cost.step_ms(1, 100, 2000) == 10 + 2 + 50 + 8


def test_a_lone_request_takes_one_prefill_step_then_one_step_per_token():
    p = profile()
    [seq] = simulate(p, [Arrival(0.0, 32, 5)])
    prefill_s = (10 + 0.5 * 32) / 1000
    decode_s = (10 + 1) / 1000
    assert seq.first_token_s == pytest.approx(prefill_s)
    assert seq.last_token_s == pytest.approx(prefill_s + 4 * decode_s)
    assert seq.num_output_tokens == 5 and seq.status is SeqStatus.FINISHED


def test_chunked_prefill_splits_a_long_prompt_by_the_token_budget():
    p = profile(max_num_batched_tokens=64)
    [seq] = simulate(p, [Arrival(0.0, 200, 1)])
    # 64 + 64 + 64 + 8 tokens: four steps, each paying the base cost.
    assert seq.first_token_s == pytest.approx((4 * 10 + 0.5 * 200) / 1000)


def test_max_num_seqs_bounds_the_batch_and_the_rest_wait():
    scheduler = Scheduler(max_num_seqs=2, max_num_batched_tokens=1000, num_kv_blocks=64, block_size_tokens=16,
                          max_model_len=512)
    seqs = [Sequence(str(i), 16, 4) for i in range(3)]
    for seq in seqs:
        scheduler.add(seq)
    plan = scheduler.schedule(0.0)
    assert [s.seq_id for s, _ in plan.scheduled] == ["0", "1"]
    assert len(scheduler.waiting) == 1
    scheduler.postprocess(plan, 0.01)
    run_steps(scheduler, 3, 0.01)  # both finish their 4 tokens
    assert seqs[0].is_finished and seqs[1].is_finished
    plan = scheduler.schedule(1.0)
    assert [s.seq_id for s, _ in plan.scheduled] == ["2"]
    assert seqs[2].first_scheduled_s == 1.0


def test_decoding_sequences_batch_into_one_step():
    scheduler = Scheduler(8, 1000, 64, 16, 512)
    for i in range(3):
        scheduler.add(Sequence(str(i), 10, 10))
    plan = scheduler.schedule(0.0)
    assert plan.num_prefill_tokens == 30 and plan.num_decode_seqs == 0
    scheduler.postprocess(plan, 0.01)
    plan = scheduler.schedule(0.01)
    assert plan.num_decode_seqs == 3 and plan.num_prefill_tokens == 0
    assert plan.num_context_tokens == 3 * 11


def test_a_full_kv_cache_queues_new_requests():
    # 4 blocks of 16 tokens: one 40-token prompt takes 3 blocks, the next cannot start.
    scheduler = Scheduler(8, 1000, 4, 16, 512)
    first, second = Sequence("a", 40, 8), Sequence("b", 40, 8)
    scheduler.add(first)
    scheduler.add(second)
    plan = scheduler.schedule(0.0)
    assert [s.seq_id for s, _ in plan.scheduled] == ["a"]
    assert second.status is SeqStatus.WAITING


def test_a_running_sequence_that_needs_a_block_preempts_the_latest_admitted():
    # 6 blocks of 16: two 40-token prompts take 3 blocks each; the first to cross 48 tokens needs a 4th.
    scheduler = Scheduler(8, 1000, 6, 16, 512)
    a, b = Sequence("a", 40, 20), Sequence("b", 40, 20)
    scheduler.add(a)
    scheduler.add(b)
    preempted = []
    now_s = 0.0
    for _ in range(12):
        plan = scheduler.schedule(now_s)
        preempted += plan.preempted
        now_s += 0.01
        scheduler.postprocess(plan, now_s)
    assert preempted and preempted[0] is b
    assert b.num_preemptions >= 1 and scheduler.num_preemptions >= 1
    # Recompute: b's outputs so far are kept and prefilled again when it resumes; both finish in the end.
    while scheduler.has_work:
        plan = scheduler.schedule(now_s)
        now_s += 0.01
        scheduler.postprocess(plan, now_s)
    assert a.num_output_tokens == 20 and b.num_output_tokens == 20
    assert scheduler.blocks.num_private == 0 and not scheduler.blocks.refs


def test_a_request_that_can_never_fit_is_refused():
    scheduler = Scheduler(8, 1000, 4, 16, 512)
    assert not scheduler.can_fit(60, 10)
    with pytest.raises(ValueError):
        scheduler.add(Sequence("x", 60, 10))


def test_a_shared_prefix_skips_its_prefill_on_the_second_request():
    p = profile()
    hashes = tuple(range(1, 5))  # 4 full blocks = 64 tokens
    first, second = simulate(p, [Arrival(0.0, 70, 2, hashes), Arrival(1.0, 70, 2, hashes)])
    assert first.num_cached_prompt_tokens == 0
    assert second.num_cached_prompt_tokens == 64
    first_prefill_s = first.first_token_s - first.first_scheduled_s
    second_prefill_s = second.first_token_s - second.first_scheduled_s
    # 70 tokens in two chunks (64 + 6) vs 6 tokens in one step.
    assert first_prefill_s == pytest.approx((2 * 10 + 0.5 * 70) / 1000)
    assert second_prefill_s == pytest.approx((10 + 0.5 * 6) / 1000)


def test_prefix_caching_off_never_hits():
    p = profile()
    hashes = tuple(range(1, 5))
    _, second = simulate(p, [Arrival(0.0, 70, 2, hashes), Arrival(1.0, 70, 2, hashes)], enable_prefix_caching=False)
    assert second.num_cached_prompt_tokens == 0


def test_cached_blocks_are_evicted_when_their_space_is_needed():
    scheduler = Scheduler(8, 1000, 5, 16, 512)
    old = Sequence("old", 64, 1, tuple(range(1, 5)))
    scheduler.add(old)
    run_steps(scheduler, 1)
    assert old.is_finished and len(scheduler.blocks.evictable) == 4
    new = Sequence("new", 64, 1, tuple(range(10, 14)))
    scheduler.add(new)
    run_steps(scheduler, 1, 1.0)
    assert new.is_finished
    assert scheduler.blocks.num_cached_blocks(old.block_hashes, 4) < 4


def test_an_aborted_sequence_frees_its_blocks_and_leaves_the_batch():
    scheduler = Scheduler(8, 1000, 64, 16, 512)
    seq = Sequence("a", 40, 100)
    scheduler.add(seq)
    plan = scheduler.schedule(0.0)
    scheduler.abort(seq)
    assert scheduler.postprocess(plan, 0.01) == []  # the step it was in sampled nothing for it
    assert not scheduler.has_work and scheduler.blocks.num_free_blocks == 64
    waiting = Sequence("b", 40, 1)
    scheduler.add(waiting)
    scheduler.abort(waiting)
    assert not scheduler.has_work and waiting.status is SeqStatus.ABORTED


def test_more_users_mean_slower_tokens_for_each():
    p = profile(max_num_seqs=32, num_kv_cache_tokens=32 * 1024, max_num_batched_tokens=1024)
    alone = simulate(p, [Arrival(0.0, 32, 20)])
    crowd = simulate(p, [Arrival(0.0, 32, 20) for _ in range(16)])

    def tpot_s(seq: Sequence) -> float:
        return (seq.last_token_s - seq.first_token_s) / (seq.num_output_tokens - 1)

    assert tpot_s(alone[0]) == pytest.approx(0.011)
    assert tpot_s(crowd[0]) == pytest.approx((10 + 16) / 1000)


def test_the_committed_profiles_load_and_name_their_sources():
    for path in profile_path("cpu-smollm2-135m").parent.glob("*.yaml"):
        loaded = load_profile(str(path))
        assert loaded.sources, f"{path.name} names no sources"
        assert loaded.num_kv_blocks * loaded.block_size_tokens >= loaded.max_model_len
    with pytest.raises(FileNotFoundError):
        profile_path("no-such-profile")
