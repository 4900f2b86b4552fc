"""`n` > 1 with greedy sampling (temperature 0) is served, as OpenAI serves it, instead of vLLM's 400.

vLLM 0.32 refuses it ("n must be 1 when using greedy sampling"); OpenAI's API accepts it and returns n choices,
and clients (evaluation harnesses, `n` set once for a whole run) send it. The frontend fans a request with `n`
out into n engine requests of n = 1 (vLLM's ParentRequest), so the engine never sees the combination: every
choice is the greedy answer. Found by the engine fuzz as a refusal of an option the API accepts.

Upstream: vLLM's deliberate check (`SamplingParams._verify_greedy_sampling`, vLLM 0.32.0).
"""

from __future__ import annotations

from serve_app.server.vllm_patches import install, is_patched, require

UPSTREAM = "vLLM 0.32.0 SamplingParams._verify_greedy_sampling refuses n > 1 at temperature 0 (OpenAI accepts it)"
VLLM_VERSIONS = ("0.32.0",)
PROCESSES = ("frontend",)


def check() -> None:
    from vllm.sampling_params import SamplingParams

    require(__name__, VLLM_VERSIONS, SamplingParams._verify_greedy_sampling, "if self.n > 1:")


def apply(process: str = "frontend") -> bool:
    from vllm.sampling_params import SamplingParams

    original = SamplingParams._verify_greedy_sampling
    if is_patched(original):
        return True

    def _verify_greedy_sampling(self) -> None:
        return None

    install(_verify_greedy_sampling, original, SamplingParams)
    return True
