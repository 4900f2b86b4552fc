"""The n-gram draft governor: pure decisions, the config that reaches the engine, and the runner patch's wrapper."""

from __future__ import annotations

import types

from serve_app.config import AppConfig
from serve_app.server.draft_governor import DRAFT_GOVERNOR_ENV, DraftGovernor, step_acceptance
from serve_app.server.engine_args import engine_environment


def test_a_request_probes_with_short_drafts_until_its_own_drafts_are_accepted():
    governor = DraftGovernor(min_acceptance=0.1, window_tokens=16, probe_tokens=2)
    assert governor.cap("r") == 2  # nothing known yet: a probe
    governor.record("r", 2, 0)
    assert governor.cap("r") == 2
    governor.record("r", 2, 1)  # accepted: the schedule's full drafts
    assert governor.cap("r") is None
    for _ in range(2):
        governor.record("r", 8, 0)  # 16 rejected tokens fill the window: back to probes
    assert governor.cap("r") == 2 and governor.acceptance("r") == 0.0


def test_drafts_that_pay_keep_their_length_and_one_request_never_costs_another_its_drafts():
    governor = DraftGovernor(min_acceptance=0.1, window_tokens=16, probe_tokens=2)
    governor.record("copy", 2, 2)
    for _ in range(50):
        governor.record("copy", 8, 1)  # 1 of 8 accepted: 0.125, over the floor
        governor.record("random", 2, 0)
    assert governor.cap("copy") is None and governor.acceptance("copy") == 0.125
    assert governor.cap("random") == 2
    assert governor.limit([[1] * 8, [1] * 8, [1]], ["copy", "random", "new"]) == [[1] * 8, [1, 1], [1]]


def test_requests_that_finished_are_forgotten():
    governor = DraftGovernor()
    for req_id in ("a", "b", "c", "d"):
        governor.record(req_id, 2, 1)
    governor.record("e", 0, 0)  # no drafts verified: nothing to keep
    governor.forget({"a", "x"})
    assert governor.tracked == 3
    governor.forget_all_but(["b"])
    assert governor.tracked == 1 and governor.cap("b") is None and governor.cap("a") == 2


def test_one_accepted_probe_after_a_run_of_rejected_ones_is_not_yet_enough():
    governor = DraftGovernor(min_acceptance=0.1, window_tokens=16, probe_tokens=2)
    for _ in range(8):
        governor.record("r", 2, 0)
    governor.record("r", 2, 1)  # 1 of the window's 16 tokens: under 0.1
    assert governor.cap("r") == 2
    governor.record("r", 2, 2)
    assert governor.cap("r") is None


def test_step_acceptance_counts_each_requests_verified_drafts():
    scheduled = {"a": [1, 2, 3], "c": [4, 5]}
    sampled = [[1, 2, 9], [7], [6]]  # a: 2 of 3 accepted plus its own; b: no drafts; c: none accepted
    assert step_acceptance(scheduled, ["a", "b", "c"], sampled) == [("a", 3, 2), ("c", 2, 0)]
    assert step_acceptance({}, ["a"], [[1]]) == []
    # vLLM's -1 placeholders (fixed-k n-gram, a request needing one new token) are not drafts
    assert step_acceptance({"a": [-1, -1, -1]}, ["a"], [[4]]) == []
    assert step_acceptance({"a": [3, -1]}, ["a"], [[3, 4]]) == [("a", 1, 1)]


def test_config_reaches_the_engine_only_for_ngram_speculation():
    default = AppConfig.model_validate({})
    governor = DraftGovernor.from_env(engine_environment(default.engine)[DRAFT_GOVERNOR_ENV])
    assert (governor.min_acceptance, governor.window_tokens, governor.probe_tokens) == (0.1, 16, 2)
    tuned = AppConfig.model_validate({"engine": {"speculation": {"draft_governor": {"probe_tokens": 1}}}})
    assert DraftGovernor.from_env(engine_environment(tuned.engine)[DRAFT_GOVERNOR_ENV]).probe_tokens == 1
    for speculation in ({"mode": "off"}, {"draft_governor": {"enabled": False}}):
        config = AppConfig.model_validate({"engine": {"speculation": speculation}})
        assert DRAFT_GOVERNOR_ENV not in engine_environment(config.engine)
    assert DraftGovernor.from_env(None) is None


def fake_runner(governor: DraftGovernor | None, req_ids: list[str], method: str = "ngram"):
    return types.SimpleNamespace(speculative_config=types.SimpleNamespace(method=method),
                                 input_batch=types.SimpleNamespace(req_ids=req_ids),
                                 _serve_app_draft_governor=governor)


def step(scheduled: dict, k: int = 8, finished: frozenset = frozenset()):
    return types.SimpleNamespace(scheduled_spec_decode_tokens=scheduled, num_spec_tokens_to_schedule=k,
                                 finished_req_ids=set(finished))


def test_the_runner_wrapper_skips_the_proposer_where_it_cannot_draft_and_cuts_unaccepted_drafts():
    from serve_app.server.vllm_patches.ngram_draft_governor import governed

    calls = []

    def proposer(runner, scheduler_output, sampled, *args):
        calls.append(len(sampled))
        return [[5, 6, 7, 8] for _ in sampled]

    propose = governed(proposer)
    governor = DraftGovernor(min_acceptance=0.1, window_tokens=4, probe_tokens=2)
    runner = fake_runner(governor, ["a", "b"])
    assert propose(runner, step({}, k=0), [[1], [2]]) == [[], []]  # the schedule gives 0 draft tokens
    assert calls == []
    assert propose(runner, step({}), [[1], [2]]) == [[5, 6], [5, 6]]  # probes
    # a accepted both of its probe's tokens, b none: a gets the full draft, b another probe
    assert propose(runner, step({"a": [5, 6], "b": [5, 6]}), [[5, 6, 9], [4]]) == [[5, 6, 7, 8], [5, 6]]
    assert calls == [2, 2]
    assert propose(runner, step({}, k=0, finished={"a"}), [[1], [2]]) == [[], []]
    assert governor.tracked == 1  # a finished: its state is gone, b's kept
    # not governed (speculation settings without a governor) or another method: the proposer as it was
    assert propose(fake_runner(None, ["a"]), step({}), [[1]]) == [[5, 6, 7, 8]]
    assert propose(fake_runner(governor, ["a"], method="eagle"), step({}, k=0), [[1]]) == [[5, 6, 7, 8]]
