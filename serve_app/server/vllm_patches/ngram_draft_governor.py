"""Govern n-gram drafting by its recent acceptance, and skip the proposer where the schedule drafts nothing.

vLLM 0.32's prompt-lookup proposer drafts wherever a request's last tokens recur in it, accepted or not: on text
unlike its prompt every draft is rejected and its step is wider than a plain one (serve_app/server/
draft_governor.py). It also runs its search in every step, including those whose batch-size schedule
(`num_speculative_tokens_per_batch_size`) gives 0 draft tokens, and throws the result away.

`GPUModelRunner.propose_draft_token_ids` (the CPU runner inherits it), for the n-gram method only:
- a step whose schedule gives 0 draft tokens returns no drafts without running the proposer (same output);
- each request's verified draft tokens and how many were accepted go to the engine's DraftGovernor (settings
  from the model server, `SERVE_APP_DRAFT_GOVERNOR`), which cuts each request's next draft to a short probe
  until its own drafts are being accepted.
Drafts only change how many tokens a step verifies, never which tokens come out (vLLM verifies every draft with
the target model), so the output is the same either way.

Upstream: not a bug; vLLM 0.32.0 has no acceptance-based control for prompt lookup.
"""

from __future__ import annotations

import os

from serve_app.server.draft_governor import DRAFT_GOVERNOR_ENV, DraftGovernor, step_acceptance
from serve_app.server.vllm_patches import install, is_ngram, require

UPSTREAM = "vLLM 0.32.0: no acceptance-based control of n-gram drafting (a feature, not an upstream bug)"
VLLM_VERSIONS = ("0.32.0",)
PROCESSES = ("engine",)

_UNSET = object()
MAX_TRACKED = 4096  # requests' states kept: past it, all but the batch's are dropped (finished ids are dropped anyway)


def check() -> None:
    from vllm.v1.core.sched.output import SchedulerOutput
    from vllm.v1.worker import gpu_model_runner

    require(__name__, VLLM_VERSIONS, gpu_model_runner.GPUModelRunner.propose_draft_token_ids,
            "num_spec_tokens_to_schedule = scheduler_output.num_spec_tokens_to_schedule",
            'if spec_config.method == "ngram":')
    require(__name__, VLLM_VERSIONS, SchedulerOutput, "scheduled_spec_decode_tokens: dict[str, list[int]]",
            "finished_req_ids: set[str]")


def governor_of(runner) -> DraftGovernor | None:
    """The runner's governor, made on first use from the model server's settings (None: not governed)."""
    governor = getattr(runner, "_serve_app_draft_governor", _UNSET)
    if governor is _UNSET:
        governor = DraftGovernor.from_env(os.environ.get(DRAFT_GOVERNOR_ENV))
        runner._serve_app_draft_governor = governor
    return governor


def governed(original):
    """`original` (GPUModelRunner.propose_draft_token_ids) for the n-gram method: not run where the schedule gives
    0 draft tokens, and each request's drafts cut to what the governor allows it, from what its last steps
    verified."""

    def propose_draft_token_ids(self, scheduler_output, sampled_token_ids, *args, **kwargs):
        spec_config = self.speculative_config
        if not is_ngram(spec_config) or not isinstance(sampled_token_ids, list):
            return original(self, scheduler_output, sampled_token_ids, *args, **kwargs)
        governor = governor_of(self)
        req_ids = self.input_batch.req_ids
        if governor is not None:
            for req_id, proposed, accepted in step_acceptance(scheduler_output.scheduled_spec_decode_tokens,
                                                              req_ids, sampled_token_ids):
                governor.record(req_id, proposed, accepted)
            governor.forget(scheduler_output.finished_req_ids)
            if governor.tracked > MAX_TRACKED:
                governor.forget_all_but(req_ids)
        if scheduler_output.num_spec_tokens_to_schedule == 0:
            return [[] for _ in sampled_token_ids]
        drafts = original(self, scheduler_output, sampled_token_ids, *args, **kwargs)
        if governor is not None and isinstance(drafts, list):
            governor.limit(drafts, req_ids)
        return drafts

    propose_draft_token_ids._serve_app_draft_governor = True
    return propose_draft_token_ids


def apply(process: str) -> bool:
    from vllm.v1.worker import gpu_model_runner

    runner_class = gpu_model_runner.GPUModelRunner
    original = runner_class.propose_draft_token_ids
    if not getattr(original, "_serve_app_draft_governor", False):
        install(governed(original), original, runner_class)
    return True
