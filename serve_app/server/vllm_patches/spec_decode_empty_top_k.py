"""A request with `top_k` under speculative decoding killed the engine (vLLM 0.32 on CPU).

With speculation on, every engine step that samples runs the rejection sampler, which applies top-k / top-p to
the target logits of the draft tokens (`rejection_sampler.apply_sampling_constraints`). In a step where no
request has a draft (n-gram lookup found none, or the batch-size schedule gave 0 drafts) those logits have 0
rows; on CPU, `apply_top_k_top_p_pytorch` takes its sort-free path `apply_top_k_only`, whose `k.max()` over an
empty tensor raises "max(): Expected reduction dim to be specified for input.numel() == 0". The engine core
dies, every request in flight fails and the replica is replaced. The GPU path (Triton) is not affected.

Fix: an empty logits tensor has nothing to mask; return it as it is. Bit for bit unchanged otherwise.
Upstream: not reported as of vLLM 0.32.0 (CPU-only path, `allow_cpu_sync=True`); found by
tests/integration/test_engine_fuzz.py.
"""

from __future__ import annotations

from serve_app.server.vllm_patches import install, is_patched, require

UPSTREAM = "unreported upstream as of vLLM 0.32.0 (CPU sort-free top-k on an empty batch)"
VLLM_VERSIONS = ("0.32.0",)
PROCESSES = ("engine",)


def check() -> None:
    from vllm.v1.sample.ops import topk_topp_sampler

    require(__name__, VLLM_VERSIONS, topk_topp_sampler.apply_top_k_only, "max_top_k = k.max()")
    require(__name__, VLLM_VERSIONS, topk_topp_sampler.apply_top_k_top_p_pytorch, "return apply_top_k_only(logits, k)")


def apply(process: str = "engine") -> bool:
    from vllm.v1.sample.ops import topk_topp_sampler

    original = topk_topp_sampler.apply_top_k_only
    if is_patched(original):
        return True

    def apply_top_k_only(logits, k):
        if logits.shape[0] == 0:
            return logits
        return original(logits, k)

    # apply_top_k_top_p_pytorch looks the name up in its module's globals at call time.
    install(apply_top_k_only, original, topk_topp_sampler)
    return True
