"""serve_app's vLLM patches: each matches the installed vLLM, fixes what it says, and a stale one fails loudly."""

from __future__ import annotations

import types

import pytest

pytest.importorskip("vllm")

from serve_app.server import vllm_patches
from serve_app.server.vllm_patches import VllmPatchMismatch, require


@pytest.fixture(autouse=True)
def unpatched_vllm_after_each_test():
    """Patches are process-wide: put vLLM back as it was, so no later test depends on the order."""
    from vllm.sampling_params import SamplingParams
    from vllm.v1.sample import rejection_sampler
    from vllm.v1.sample.ops import topk_topp_sampler
    from vllm.v1.worker import gpu_model_runner

    targets = [(SamplingParams, "_verify_greedy_sampling"), (SamplingParams, "_validate_spec_decode"),
               (topk_topp_sampler, "apply_top_k_only"), (gpu_model_runner, "build_logitsprocs"),
               (gpu_model_runner.GPUModelRunner, "propose_draft_token_ids"),
               (rejection_sampler, "expand_batch_to_tokens"), (gpu_model_runner.GPUModelRunner, "_sample")]
    saved = [(owner, name, owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name))
             for owner, name in targets]
    yield
    for owner, name, value in saved:
        setattr(owner, name, value)


def test_every_patch_matches_the_installed_vllm_and_names_its_upstream():
    vllm_patches.check_all()
    for module in vllm_patches.patch_modules():
        assert module.UPSTREAM and module.VLLM_VERSIONS
        assert set(module.PROCESSES) <= {"engine", "frontend"}


def test_a_patch_for_another_vllm_version_fails_at_start_naming_itself():
    def target():
        return 1

    with pytest.raises(VllmPatchMismatch, match="my_patch.*written for vLLM 0.1.0"):
        require("my_patch", ("0.1.0",), target, "return 1")
    installed = vllm_patches.installed_vllm_version()
    with pytest.raises(VllmPatchMismatch, match="no longer contains 'k.max"):
        require("my_patch", (installed,), target, "k.max()")
    require("my_patch", (installed,), target, "return 1")


def test_empty_top_k_patch_keeps_the_engine_alive_on_an_empty_batch():
    """The rejection sampler's target logits have 0 rows in a step without drafts: top-k must not raise."""
    import torch
    from vllm.v1.sample.ops import topk_topp_sampler

    from serve_app.server.vllm_patches import spec_decode_empty_top_k

    empty, k = torch.empty(0, 32), torch.empty(0, dtype=torch.long)
    spec_decode_empty_top_k.apply("engine")
    with pytest.raises(RuntimeError, match="numel"):
        topk_topp_sampler.apply_top_k_only.__wrapped__(empty, k)  # vLLM's own: the engine-killing error
    assert topk_topp_sampler.apply_top_k_top_p_pytorch(empty, k, None, allow_cpu_sync=True).shape == (0, 32)
    # Non-empty input: exactly what vLLM computes.
    logits = torch.randn(3, 32, generator=torch.Generator().manual_seed(0))
    k = torch.tensor([1, 5, 32])
    expected = topk_topp_sampler.apply_top_k_only.__wrapped__(logits.clone(), k.clone())
    assert torch.equal(topk_topp_sampler.apply_top_k_only(logits.clone(), k.clone()), expected)
    assert int(torch.isfinite(expected[0]).sum()) == 1 and int(torch.isfinite(expected[1]).sum()) == 5


def test_min_p_and_logit_bias_are_accepted_under_ngram_speculation_only():
    from vllm.sampling_params import SamplingParams

    from serve_app.server.vllm_patches import spec_decode_min_p_logit_bias as patch

    ngram, eagle = types.SimpleNamespace(method="ngram"), types.SimpleNamespace(method="eagle")
    params = SamplingParams(min_p=0.1, logit_bias={3: 1.0})
    patch.apply("frontend")
    params._validate_spec_decode(ngram)  # served without drafts
    with pytest.raises(Exception, match="min_p and logit_bias"):  # vLLM's VLLMValidationError
        params._validate_spec_decode(eagle)
    assert patch.needs_no_drafts(params)
    assert patch.needs_no_drafts(SamplingParams(logit_bias={3: 1.0}))
    # logprob_token_ids: refused under any speculation (the rejection sampler mishandles it), served without.
    specific = SamplingParams(logprob_token_ids=[3, 4])
    for speculation in (ngram, eagle):
        with pytest.raises(Exception, match="logprob_token_ids"):
            specific._validate_spec_decode(speculation)
    specific._validate_spec_decode(None)
    assert not patch.needs_no_drafts(SamplingParams(top_k=5, temperature=1.0))


def test_drafts_are_dropped_only_for_requests_the_rejection_sampler_would_get_wrong():
    from vllm.sampling_params import SamplingParams

    from serve_app.server.vllm_patches.spec_decode_min_p_logit_bias import drop_unsupported_drafts

    requests = {"plain": types.SimpleNamespace(sampling_params=SamplingParams()),
                "min_p": types.SimpleNamespace(sampling_params=SamplingParams(min_p=0.2)),
                "bias": types.SimpleNamespace(sampling_params=SamplingParams(logit_bias={1: 2.0})),
                "top_k": types.SimpleNamespace(sampling_params=SamplingParams(top_k=3))}
    drafts = [[1, 2], [1, 2], [1, 2], [1, 2]]
    assert drop_unsupported_drafts(drafts, ["plain", "min_p", "bias", "top_k"], requests) == [[1, 2], [], [], [1, 2]]


def test_engine_patches_apply_only_in_serve_app_engine_processes(monkeypatch):
    """The plugin leaves a process alone unless the engine guard says a serve_app model server spawned it."""
    from serve_app.server import engine_guard, vllm_plugin

    applied = []
    monkeypatch.setattr(vllm_patches, "apply_engine_patches", lambda: applied.append(True) or [])
    monkeypatch.setattr(engine_guard, "register", lambda: False)
    vllm_plugin.register()
    assert applied == []
    monkeypatch.setattr(engine_guard, "register", lambda: True)
    vllm_plugin.register()
    assert applied == [True]


def test_cpu_expand_gives_each_draft_token_its_requests_sampling_values():
    """The rejection sampler's temperature / top_k / top_p per draft token: exact for int and float, with the
    greedy temperature replaced (vLLM's CPU kernel left the output uninitialized)."""
    import torch

    from serve_app.server.vllm_patches.cpu_spec_decode_expand import expand_batch_to_tokens

    cu = torch.tensor([2, 5, 5, 6], dtype=torch.int32)  # the third request has no drafts
    top_k = expand_batch_to_tokens(torch.tensor([5, 7, 8, 9], dtype=torch.int32), cu, 6)
    assert top_k.dtype == torch.int32 and top_k.tolist() == [5, 5, 7, 7, 7, 9]
    temperature = expand_batch_to_tokens(torch.tensor([0.7, -1.0, 0.2, 1.3]), cu, 6, replace_from=-1.0, replace_to=1)
    assert torch.allclose(temperature, torch.tensor([0.7, 0.7, 1.0, 1.0, 1.0, 1.3]))
    assert expand_batch_to_tokens(torch.tensor([3]), torch.tensor([0]), 0).shape == (0,)


def test_n_above_one_with_greedy_sampling_is_accepted():
    from vllm.sampling_params import SamplingParams

    from serve_app.server.vllm_patches import greedy_n

    greedy_n.apply("frontend")
    assert SamplingParams(n=3, temperature=0.0).n == 3


def _zero_draft_step(batch_size: int, vocab_size: int):
    """A step's logits, sampling metadata (greedy, seeded random with top-k / top-p, a repetition penalty, two
    logprobs) and speculative metadata in which no request has a draft, as vLLM's model runner builds them."""
    import torch
    from vllm.v1.sample.logits_processor import LogitsProcessors
    from vllm.v1.sample.metadata import SamplingMetadata
    from vllm.v1.spec_decode.metadata import SpecDecodeMetadata

    logits = torch.randn(batch_size, vocab_size, generator=torch.Generator().manual_seed(1))
    rows = torch.arange(batch_size, dtype=torch.int32)
    spec = SpecDecodeMetadata(draft_token_ids=torch.empty(0, dtype=torch.int32), num_draft_tokens=[0] * batch_size,
                              cu_num_draft_tokens=torch.zeros(batch_size, dtype=torch.int32),
                              cu_num_sampled_tokens=rows + 1, target_logits_indices=torch.empty(0, dtype=torch.int32),
                              bonus_logits_indices=rows, logits_indices=rows)
    sampling = SamplingMetadata(
        temperature=torch.tensor([0.0, 0.8, 1.0, 0.7]), all_greedy=False, all_random=False,
        top_p=torch.tensor([1.0, 1.0, 1.0, 0.9]), top_k=torch.tensor([vocab_size, vocab_size, 5, vocab_size]),
        generators={index: torch.Generator().manual_seed(10 + index) for index in (1, 2, 3)}, max_num_logprobs=2,
        no_penalties=False, prompt_token_ids=torch.tensor([[3, 4, vocab_size]] * batch_size),
        frequency_penalties=torch.zeros(batch_size), presence_penalties=torch.zeros(batch_size),
        repetition_penalties=torch.tensor([1.0, 1.3, 1.0, 1.0]), output_token_ids=[[5], [6, 7], [], [8]],
        allowed_token_ids_mask=None, bad_words_token_ids={}, logitsprocs=LogitsProcessors(),
        spec_token_ids=[[] for _ in range(batch_size)])
    return logits, sampling, spec


def test_a_step_without_drafts_samples_what_the_rejection_sampler_would_without_running_it(monkeypatch):
    """Under speculation, a step in which no request has a draft (the `auto` schedule's batches past 4) used to run
    vLLM's rejection sampler; the patch samples with the plain sampler: same tokens (seeded requests draw the same
    numbers), same logprobs, and the rejection sampler is not called. A step with a draft still goes through it."""
    import inspect

    import torch
    from vllm.v1.sample.rejection_sampler import RejectionSampler
    from vllm.v1.sample.sampler import Sampler
    from vllm.v1.spec_decode.metadata import SpecDecodeMetadata
    from vllm.v1.worker import gpu_model_runner

    from serve_app.server.vllm_patches import cpu_spec_decode_expand, no_draft_plain_sampler, spec_decode_empty_top_k

    def runner(sampling):
        sampler = Sampler()
        return types.SimpleNamespace(
            sampler=sampler, rejection_sampler=RejectionSampler(sampler),
            input_batch=types.SimpleNamespace(sampling_metadata=sampling, update_async_output_token_ids=lambda: None,
                                              req_ids=["a", "b", "c", "d"]),
            speculative_config=types.SimpleNamespace(method="ngram"), use_async_scheduling=False,
            _get_spec_decode_draft_probs=lambda metadata: None)  # n-gram drafts have no probabilities

    from vllm.platforms import current_platform

    current_platform.register_triton_kernel_overrides()  # as a CPU engine does: vLLM's kernels in C++
    for patch in (cpu_spec_decode_expand, spec_decode_empty_top_k, no_draft_plain_sampler):  # as in the engine
        patch.apply("engine")
    patched = gpu_model_runner.GPUModelRunner._sample
    vllm_sample = inspect.unwrap(patched)
    assert patched is not vllm_sample
    logits, sampling, spec = _zero_draft_step(4, 64)
    expected = vllm_sample(runner(sampling), logits.clone(), spec)
    logits, sampling, spec = _zero_draft_step(4, 64)  # fresh generators, seeded alike
    plain = runner(sampling)
    monkeypatch.setattr(plain.rejection_sampler, "forward", lambda *args, **kwargs: pytest.fail("rejection sampler"))
    got = patched(plain, logits.clone(), spec)
    assert torch.equal(got.sampled_token_ids.long(), expected.sampled_token_ids.long())
    assert got.sampled_token_ids[0, 0] == logits[0].argmax()  # the greedy request
    assert got.logprobs_tensors.logprob_token_ids.shape == (4, 3)
    assert torch.equal(got.logprobs_tensors.logprob_token_ids, expected.logprobs_tensors.logprob_token_ids)
    assert torch.allclose(got.logprobs_tensors.logprobs, expected.logprobs_tensors.logprobs, atol=1e-5)

    # A step with a draft (the second request's) goes through vLLM's rejection sampler as before.
    logits, sampling, _ = _zero_draft_step(4, 64)
    drafted = SpecDecodeMetadata.make_dummy([[], [9], [], []], torch.device("cpu"))
    called = []
    with_draft = runner(sampling)
    monkeypatch.setattr(with_draft.rejection_sampler, "forward", lambda *args, **kwargs: called.append(True))
    patched(with_draft, torch.randn(5, 64), drafted)
    assert called == [True]
