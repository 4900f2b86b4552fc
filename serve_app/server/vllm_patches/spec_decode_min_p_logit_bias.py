"""Serve `min_p` and `logit_bias` under n-gram speculation (vLLM 0.32 refuses them with a 400).

vLLM's rejection sampler does not apply the min-p and logit-bias logits processors to the target logits of draft
tokens, so vLLM refuses both options whenever speculation is configured (`SamplingParams._validate_spec_decode`)
and does not even build those processors (`build_logitsprocs`). With speculation `auto` (serve_app's default)
that made the default deployment serve less of the API than speculation `off`.

A request that carries either option is served without drafts instead: its tokens then come only from the
rejection sampler's bonus-token path, which is vLLM's ordinary `Sampler` and applies every logits processor, so
it is sampled exactly as with speculation off; the other requests in the batch keep their drafts. Three pieces,
only for the n-gram method (serve_app's `auto` and `ngram`; draft-model and EAGLE speculation keep the refusal):
- frontend (the replica's request validation): min_p / logit_bias are accepted;
- engine, `build_logitsprocs`: the built-in processors (min-tokens, logit-bias, min-p) are built as without
  speculation;
- engine, `GPUModelRunner.propose_draft_token_ids` (the CPU runner inherits it): drafts of requests with min_p
  or logit_bias are dropped.

Upstream: vLLM's own TODO ("min_p and logit_bias parameters won't work with speculative decoding", vLLM 0.32.0,
`vllm/v1/sample/logits_processor/__init__.py`); no fix released.
"""

from __future__ import annotations

import inspect

from serve_app.server.vllm_patches import VllmPatchMismatch, install, is_ngram, is_patched, require

UPSTREAM = "vLLM 0.32.0: min_p / logit_bias refused under speculative decoding (no upstream fix released)"
VLLM_VERSIONS = ("0.32.0",)
PROCESSES = ("frontend", "engine")

_SAMPLING_EPS = 1e-5


def needs_no_drafts(sampling_params) -> bool:
    """A request whose sampling the rejection sampler would get wrong: it gets no drafts."""
    return sampling_params is not None and (sampling_params.min_p > _SAMPLING_EPS or bool(sampling_params.logit_bias))


def drop_unsupported_drafts(drafts: list[list[int]], req_ids: list, requests: dict) -> list[list[int]]:
    """`drafts[i]` belongs to `req_ids[i]`; requests that `needs_no_drafts` get none (in place, returned)."""
    for index, req_id in enumerate(req_ids[:len(drafts)]):
        state = requests.get(req_id)
        if drafts[index] and state is not None and needs_no_drafts(state.sampling_params):
            drafts[index] = []
    return drafts


def check() -> None:
    from vllm.sampling_params import SamplingParams
    from vllm.v1.sample import logits_processor
    from vllm.v1.worker import gpu_model_runner

    require(__name__, VLLM_VERSIONS, SamplingParams._validate_spec_decode, "self.min_p > _SAMPLING_EPS or self.logit_bias")
    require(__name__, VLLM_VERSIONS, logits_processor.build_logitsprocs, "if vllm_config.speculative_config:")
    require(__name__, VLLM_VERSIONS, gpu_model_runner.GPUModelRunner.propose_draft_token_ids,
            'if spec_config.method == "ngram":')
    if inspect.unwrap(gpu_model_runner.build_logitsprocs) is not logits_processor.build_logitsprocs:
        raise VllmPatchMismatch(f"{__name__}: gpu_model_runner no longer imports build_logitsprocs by name")


def apply(process: str) -> bool:
    if process == "frontend":
        return _apply_frontend()
    return _apply_engine()


def _apply_frontend() -> bool:
    from vllm.exceptions import VLLMValidationError
    from vllm.sampling_params import SamplingParams

    original = SamplingParams._validate_spec_decode
    if is_patched(original):
        return True

    def _validate_spec_decode(self, speculative_config):
        if speculative_config is not None and self.logprob_token_ids:
            # vLLM 0.32's rejection sampler mishandles it: a step with drafts returns that request no logprobs, and
            # beside a request asking for `logprobs` its bonus sampler's narrowed logprobs crash the engine
            # (RejectionSampler._get_logprobs_tensors). Refused, as vLLM refuses min_p without this patch.
            raise VLLMValidationError("The logprob_token_ids parameter is not supported with speculative decoding "
                                      "(engine.speculation.mode: off serves it).", parameter="logprob_token_ids")
        if is_ngram(speculative_config):
            return None  # served without drafts (see the module docstring)
        return original(self, speculative_config)

    install(_validate_spec_decode, original, SamplingParams)
    return True


def _apply_engine() -> bool:
    from vllm.v1.sample import logits_processor
    from vllm.v1.worker import gpu_model_runner

    original_build = gpu_model_runner.build_logitsprocs
    if is_patched(original_build):
        return True

    def build_logitsprocs(vllm_config, device, is_pin_memory, is_pooling_model, custom_logitsprocs=()):
        if not is_pooling_model and not custom_logitsprocs and is_ngram(vllm_config.speculative_config):
            return logits_processor.LogitsProcessors(
                ctor(vllm_config, device, is_pin_memory) for ctor in logits_processor.BUILTIN_LOGITS_PROCESSORS)
        return original_build(vllm_config, device, is_pin_memory, is_pooling_model, custom_logitsprocs)

    original_propose = gpu_model_runner.GPUModelRunner.propose_draft_token_ids

    def propose_draft_token_ids(self, *args, **kwargs):
        drafts = original_propose(self, *args, **kwargs)
        if isinstance(drafts, list) and is_ngram(self.speculative_config):
            return drop_unsupported_drafts(drafts, self.input_batch.req_ids, self.requests)
        return drafts

    install(build_logitsprocs, original_build, gpu_model_runner)
    install(propose_draft_token_ids, original_propose, gpu_model_runner.GPUModelRunner)
    return True
