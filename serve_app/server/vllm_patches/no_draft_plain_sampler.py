"""A step in which no request has a draft samples with vLLM's plain sampler, not the rejection sampler.

With speculation configured, vLLM 0.32's model runner builds speculative metadata for every step and samples
every step with the rejection sampler, drafts or none (`GPUModelRunner._prepare_inputs`, `_sample`). With none,
the rejection sampler's work is all overhead: on top of sampling each request's one token (the "bonus" token,
with the plain sampler) it draws a batch x vocabulary matrix of exponential noise for the recovered-token kernel
(`sample_recovered_tokens`), softmaxes and copies logits. Under load the `auto` schedule drafts nothing
(batch > 4), so every step paid it: profiled at 128 users on the 2-core Xeon (py-spy on the engine core, 60 s), the
rejection sampler took 19% of the engine core's time against the plain sampler's 4% with speculation off.

Fix, for the n-gram method (serve_app's `auto` and `ngram`): when the step's metadata says no request has a draft
(`max_spec_len == 0`), sample with the plain sampler exactly as the rejection sampler samples its bonus tokens
(`predict_bonus_token=True`, the step's sampling metadata; every logit row is a bonus row). Same tokens, same
per-request generators (seeded requests draw the same numbers), logprobs computed from the same raw logits; the
rejection sampler's output for a step without drafts is its bonus tokens, so the parsed output is the same.
Steps with a draft keep the rejection sampler.

Upstream: not a bug; vLLM 0.32.0 always takes the speculative path once speculation is configured.
"""

from __future__ import annotations

from serve_app.server.vllm_patches import install, is_ngram, is_patched, require

UPSTREAM = "vLLM 0.32.0: the rejection sampler runs in steps without drafts (a cost, not an upstream bug)"
VLLM_VERSIONS = ("0.32.0",)
PROCESSES = ("engine",)


def check() -> None:
    from vllm.v1.sample import rejection_sampler
    from vllm.v1.worker import gpu_model_runner

    require(__name__, VLLM_VERSIONS, gpu_model_runner.GPUModelRunner._sample,
            "if spec_decode_metadata is None:", "self.input_batch.update_async_output_token_ids()",
            "sampler_output = self.rejection_sampler(")
    require(__name__, VLLM_VERSIONS, rejection_sampler.RejectionSampler.forward,
            "bonus_logits = logits[bonus_logits_indices]", "predict_bonus_token=True")


def plain_when_no_drafts(original):
    """`original` (GPUModelRunner._sample), but a step with speculative metadata and no draft in it samples its
    bonus tokens with the plain sampler."""

    def _sample(self, logits, spec_decode_metadata):
        if (spec_decode_metadata is None or spec_decode_metadata.max_spec_len > 0
                or not is_ngram(self.speculative_config)):
            return original(self, logits, spec_decode_metadata)
        self.input_batch.update_async_output_token_ids()
        return self.sampler(logits=logits, sampling_metadata=self.input_batch.sampling_metadata,
                            predict_bonus_token=True)

    return _sample


def apply(process: str = "engine") -> bool:
    from vllm.v1.worker import gpu_model_runner

    runner_class = gpu_model_runner.GPUModelRunner
    original = runner_class.__dict__["_sample"]
    if not is_patched(original):
        install(plain_when_no_drafts(original), original, runner_class)
    return True
