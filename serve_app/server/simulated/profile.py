"""Performance profiles of the simulated engine: YAML files under `profiles/`, each number with its source.

A step's time (milliseconds) is linear in what the step does, as in a roofline model of one forward pass:

    step_ms = step_base_ms + decode_ms_per_seq * num_decode_seqs + prefill_ms_per_token * num_prefill_tokens
              + attention_ms_per_1k_context_tokens * num_context_tokens / 1000

`num_context_tokens` is the KV cache the step reads (every scheduled sequence's context). Pure: loading a file
is the only I/O, in `load_profile`.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field

from serve_app.config_base import StrictModel

PROFILES_DIR = Path(__file__).resolve().parent / "profiles"


class StepCost(StrictModel):
    """The step time's coefficients (milliseconds)."""

    step_base_ms: float = Field(ge=0)
    decode_ms_per_seq: float = Field(ge=0)
    prefill_ms_per_token: float = Field(ge=0)
    attention_ms_per_1k_context_tokens: float = Field(0.0, ge=0)

    def step_ms(self, num_decode_seqs: int, num_prefill_tokens: int, num_context_tokens: int) -> float:
        if num_decode_seqs == 0 and num_prefill_tokens == 0:
            return 0.0
        return (self.step_base_ms + self.decode_ms_per_seq * num_decode_seqs
                + self.prefill_ms_per_token * num_prefill_tokens
                + self.attention_ms_per_1k_context_tokens * num_context_tokens / 1000.0)


class EngineProfile(StrictModel):
    """One engine on one device: its limits and step cost. `sources` says where every number comes from."""

    name: str
    model: str  # the model the numbers describe
    device: str  # e.g. "1x NVIDIA H100 80GB SXM", "2-core AMD EPYC (vLLM CPU, float32)"
    load_time_s: float = Field(ge=0)  # replica start -> ready (weights, KV cache allocation, warm-up)
    # A request's fixed time before it reaches the scheduler: the real engine's OpenAI layer (prompt rendering,
    # tokenization, the IPC to the engine core); `frontend_ms` in the request's timings.
    frontend_ms: float = Field(0.0, ge=0)
    max_num_seqs: int = Field(ge=1)
    max_num_batched_tokens: int = Field(ge=1)  # token budget of one step (chunked prefill)
    num_kv_cache_tokens: int = Field(ge=16)  # KV cache capacity
    block_size_tokens: int = Field(16, ge=1)
    max_model_len: int = Field(ge=16)
    default_max_tokens: int = Field(128, ge=1)  # output tokens of a request without max_tokens
    cost: StepCost
    sources: dict[str, str] = Field(default_factory=dict)  # field -> where the number comes from
    notes: str = ""

    @property
    def num_kv_blocks(self) -> int:
        return self.num_kv_cache_tokens // self.block_size_tokens


def profile_path(name_or_path: str) -> Path:
    """A profile name (a file under profiles/) or a path to a YAML file."""
    path = Path(name_or_path).expanduser()
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    candidate = PROFILES_DIR / f"{name_or_path}.yaml"
    if not candidate.exists():
        known = sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))
        raise FileNotFoundError(f"no simulated engine profile {name_or_path!r}; known: {known}, or a .yaml path")
    return candidate


@functools.lru_cache(maxsize=32)
def profile_max_num_seqs(name_or_path: str) -> int:
    """The profile's own `max_num_seqs`, read once per process (AppConfig.batch_rows asks for it whenever the
    ingress resizes its gates)."""
    return load_profile(name_or_path).max_num_seqs


def load_profile(name_or_path: str, overrides: dict[str, Any] | None = None) -> EngineProfile:
    """The profile, with `overrides` (non-null values) replacing its fields."""
    data = yaml.safe_load(profile_path(name_or_path).read_text())
    data.update({key: value for key, value in (overrides or {}).items() if value is not None})
    return EngineProfile.model_validate(data)
