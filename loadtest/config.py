"""Typed, validated configuration of one load-test run.

The whole object is written into the result JSON, so a result file says
exactly how it was produced. Validation does no I/O.
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from loadtest.tenant_spec import TenantLoad

SLO_METRICS = ("ttft_ms", "tpot_ms", "e2e_ms", "ttft_from_arrival_ms", "e2e_from_arrival_ms")


class LoadTestConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Target.
    base_url: str = "http://127.0.0.1:8000"
    endpoint: Literal["completions", "chat"] = "completions"
    model: str | None = None
    api_key: str | None = Field(default=None, exclude=True, repr=False)
    headers: dict[str, str] = Field(default_factory=dict)
    request_timeout_s: float = Field(default=300.0, gt=0)

    # Load model.
    mode: Literal["closed", "open"] = "closed"
    concurrency: int = Field(default=1, ge=1, le=100_000)
    rate_rps: float | None = Field(default=None, gt=0)
    # None = constant rate, 1.0 = Poisson, other k = gamma-distributed gaps with shape k.
    burstiness: float | None = Field(default=1.0, gt=0)
    max_inflight: int | None = Field(default=None, ge=1)
    num_requests: int | None = Field(default=None, ge=1)
    duration_s: float | None = Field(default=None, gt=0)
    ramp_up_s: float = Field(default=0.0, ge=0)
    warmup_s: float = Field(default=0.0, ge=0)
    warmup_requests: int = Field(default=0, ge=0)
    cooldown_s: float = Field(default=0.0, ge=0)
    drain_timeout_s: float | None = Field(default=None, gt=0)
    seed: int = 0
    workers: int = Field(default=1, ge=1, le=64)
    # Several tenants at once (loadtest/tenant_spec.py), each a closed loop of its own users; `concurrency`
    # is then their total.
    tenants: list[TenantLoad] = Field(default_factory=list)

    # Workload.
    input_tokens: int = Field(default=128, ge=1)
    input_tokens_range: float = Field(default=0.0, ge=0, lt=1)
    max_tokens: int = Field(default=64, ge=1)
    output_tokens_range: float = Field(default=0.0, ge=0, lt=1)
    ignore_eos: bool = False
    temperature: float | None = None
    prompts_file: str | None = None
    # A built-in chat prompt set (loadtest/prompt_sets.py: copy, translate, chat; loadtest/shared_prefix.py:
    # shared-prefix, conversations of `turns` turns over `system_prompts` system prompts).
    prompt_set: str | None = None
    system_prompts: int = Field(default=8, ge=1, le=10_000)
    system_prompt_tokens: int = Field(default=1000, ge=1, le=1_000_000)
    tokenizer: str | None = None
    turns: int = Field(default=1, ge=1, le=64)
    prompt_pool_size: int = Field(default=256, ge=1, le=100_000)
    extra_body: dict = Field(default_factory=dict)

    # Statistics and self-check.
    slos: dict[str, float] = Field(default_factory=dict)
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    max_loop_lag_p99_ms: float = Field(default=10.0, gt=0)
    max_client_cpu_fraction: float = Field(default=0.85, gt=0)
    save_text: bool = False
    # Per-tenant goodput: a request is good when TTFT <= slo_ttft_ms and TPOT <= slo_tpot_ms.
    slo_ttft_ms: float = Field(default=2000.0, gt=0)
    slo_tpot_ms: float = Field(default=200.0, gt=0)

    @model_validator(mode="after")
    def _check(self) -> "LoadTestConfig":
        every_tenant_counted = bool(self.tenants) and all(t.num_requests is not None for t in self.tenants)
        if self.num_requests is None and self.duration_s is None and not every_tenant_counted:
            raise ValueError("give num_requests, duration_s or both")
        if self.tenants:
            if self.mode != "closed":
                raise ValueError("tenants run closed loops (each its own concurrency); drop rate_rps")
            names = [t.name for t in self.tenants]
            if len(set(names)) != len(names):
                raise ValueError(f"tenant names must be unique: {names}")
            self.concurrency = sum(t.concurrency for t in self.tenants)
        if self.mode == "open" and self.rate_rps is None:
            raise ValueError("open loop needs rate_rps")
        if self.prompt_set is not None and (self.endpoint != "chat" or self.prompts_file):
            raise ValueError("a prompt set needs endpoint 'chat' and no prompts file")
        if self.turns > 1 and self.endpoint != "chat":
            raise ValueError("multi-turn conversations need endpoint 'chat'")
        unknown = set(self.slos) - set(SLO_METRICS)
        if unknown:
            raise ValueError(f"unknown SLO metrics {sorted(unknown)}; known: {list(SLO_METRICS)}")
        return self

    @property
    def api_base(self) -> str:
        """Base URL ending in /v1, whether or not the user gave /v1."""
        url = self.base_url.rstrip("/")
        return url if url.endswith("/v1") else url + "/v1"

    @property
    def stream_path(self) -> str:
        return "/completions" if self.endpoint == "completions" else "/chat/completions"
