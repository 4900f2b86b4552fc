"""The performance model run without a clock: a list of arrivals in, every request's token times out.

The same scheduler and step cost the simulated replica uses, with simulated time advanced by each step's cost
instead of slept. For fitting and checking profiles, and for lower bounds that need a replica's latency at a
given load without starting one. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass

from serve_app.server.simulated.profile import EngineProfile
from serve_app.server.simulated.scheduler import Scheduler, Sequence


@dataclass(frozen=True, slots=True)
class Arrival:
    arrival_s: float
    num_prompt_tokens: int
    num_output_tokens: int
    block_hashes: tuple[int, ...] = ()


def new_scheduler(profile: EngineProfile, enable_prefix_caching: bool = True) -> Scheduler:
    return Scheduler(profile.max_num_seqs, profile.max_num_batched_tokens, profile.num_kv_blocks,
                     profile.block_size_tokens, profile.max_model_len, enable_prefix_caching)


def simulate(profile: EngineProfile, arrivals: list[Arrival], enable_prefix_caching: bool = True,
             step_time_scale: float = 1.0) -> list[Sequence]:
    """Every arrival's finished sequence (its first_scheduled_s, first_token_s, last_token_s), in arrival order.

    A sequence's `arrival_s` is when it reaches the scheduler: the request's arrival plus the profile's
    `frontend_ms`; its TTFT from the request's arrival is `first_token_s - arrival_s + frontend_ms / 1000`.
    """
    scheduler = new_scheduler(profile, enable_prefix_caching)
    frontend_s = profile.frontend_ms / 1000.0
    seqs = [Sequence(str(i), a.num_prompt_tokens, a.num_output_tokens, a.block_hashes, a.arrival_s + frontend_s)
            for i, a in enumerate(arrivals)]
    pending = sorted(seqs, key=lambda s: s.arrival_s)
    now_s = 0.0
    next_index = 0
    while next_index < len(pending) or scheduler.has_work:
        while next_index < len(pending) and pending[next_index].arrival_s <= now_s:
            scheduler.add(pending[next_index])
            next_index += 1
        if not scheduler.has_work:
            now_s = pending[next_index].arrival_s
            continue
        plan = scheduler.schedule(now_s)
        if plan.is_empty:
            raise RuntimeError("the scheduler made no progress")
        now_s += profile.cost.step_ms(plan.num_decode_seqs, plan.num_prefill_tokens,
                                      plan.num_context_tokens) * step_time_scale / 1000.0
        scheduler.postprocess(plan, now_s)
    return seqs
