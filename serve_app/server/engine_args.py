"""Config -> vLLM's engine arguments, frontend arguments and start-up environment (no vLLM import at module level)."""

from __future__ import annotations

import argparse
from typing import Any

from serve_app.config import AppConfig, EngineConfig
from serve_app.platform.cpu_isolation import parse_cpu_list
from serve_app.server.draft_governor import DRAFT_GOVERNOR_ENV, DraftGovernor
from serve_app.server.speculation import speculative_config
from serve_app.server.engine_dtype import choose_dtype, read_checkpoint_dtype, read_cpuinfo


def engine_environment(engine: EngineConfig) -> dict[str, str]:
    """Environment variables vLLM reads at start-up (CPU backend settings), derived from config."""
    env = {"VLLM_CPU_KVCACHE_SPACE": f"{engine.cpu_kvcache_space_gib:g}"}
    if engine.cpu_worker_in_engine_core and engine.num_workers == 1 and engine.distributed_executor_backend is None:
        # vLLM's CPU platform gives a lone worker its own process unless V1 multiprocessing is off; AsyncLLM keeps
        # its engine core in a process of its own either way, so this only moves the worker into that process.
        # (Read elsewhere only by the offline `LLM` class, which then runs its engine core in process too.)
        env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    if engine.cpu_omp_threads_bind:
        env["VLLM_CPU_OMP_THREADS_BIND"] = engine.cpu_omp_threads_bind
    elif engine.engine_cpus:
        env["VLLM_CPU_OMP_THREADS_BIND"] = ",".join(map(str, engine.engine_cpus))
    governor = engine.speculation.draft_governor
    if engine.speculation.mode in ("auto", "ngram") and governor.enabled:
        env[DRAFT_GOVERNOR_ENV] = DraftGovernor(governor.min_acceptance, governor.window_tokens,
                                                governor.probe_tokens).to_env()
    binding = env.get("VLLM_CPU_OMP_THREADS_BIND")
    if binding and binding not in ("auto", "nobind"):
        # Ray sets OMP_NUM_THREADS to the replica's num_cpus for the processes it starts (1 here), which the engine
        # process would inherit: one compute thread whatever the binding. One thread per bound core (per rank).
        env["OMP_NUM_THREADS"] = str(len(parse_cpu_list(binding.split("|")[0])))
    return env


def resolved_dtype(config: AppConfig, model_path: str) -> str:
    return choose_dtype(config.engine.dtype, on_gpu=bool(config.model_deployment.num_gpus),
                        cpu_flags=read_cpuinfo()[1], checkpoint=read_checkpoint_dtype(model_path))


def engine_kwargs(config: AppConfig, model_path: str) -> dict[str, Any]:
    """Keyword arguments of vLLM's `AsyncEngineArgs` for one model replica."""
    engine = config.engine
    kwargs = dict(
        model=model_path,
        tokenizer=config.model.tokenizer,
        served_model_name=[config.model.resolved_name()],
        tensor_parallel_size=engine.tensor_parallel_size,
        pipeline_parallel_size=engine.pipeline_parallel_size,
        quantization=engine.quantization,
        dtype=resolved_dtype(config, model_path),
        max_model_len=engine.max_model_len,
        max_num_seqs=config.engine_rows,
        max_num_batched_tokens=engine.max_num_batched_tokens,
        enforce_eager=engine.enforce_eager,
        seed=engine.seed,
        gpu_memory_utilization=engine.gpu_memory_utilization,
        # Inside a Serve replica vLLM would pick its Ray executor (it sees a placement group); that executor is
        # for sharding across nodes and is unsupported on CPU. Local processes otherwise.
        distributed_executor_backend=engine.distributed_executor_backend or ("mp" if engine.num_workers > 1 else None),
        disable_log_stats=False,
        enable_prefix_caching=engine.enable_prefix_caching,
        # Tenancy sends each request's priority (serve_app/ingress/tenant_admission.py); lower runs sooner.
        scheduling_policy="priority" if config.tenancy.enabled else "fcfs",
        speculative_config=speculative_config(engine.speculation),
    )
    adapters = config.model.adapters
    if adapters:
        # Adapters are loaded on first use (serve_app/server/adapters.py); the engine holds at most
        # `max_loaded_adapters` of them and batches up to that many different ones in one step.
        loaded = min(len(adapters), config.model.max_loaded_adapters)
        # vLLM 0.32's CPU LoRA ops gave requests without an adapter one in the same step: the engine process
        # patches them (vllm_patches/lora_cpu_no_adapter.py).
        kwargs.update(enable_lora=True, max_lora_rank=engine.max_lora_rank, max_loras=loaded, max_cpu_loras=loaded)
    return kwargs | engine.extra_engine_args


def frontend_kwargs(config: AppConfig) -> dict[str, Any]:
    """Keyword arguments of vLLM's `FrontendArgs` (the OpenAI serving layer's settings)."""
    frontend = config.frontend
    kwargs: dict[str, Any] = dict(
        enable_auto_tool_choice=frontend.tool_call_parser is not None,
        tool_call_parser=frontend.tool_call_parser,
        tool_strict_level=frontend.tool_strict_level,
        chat_template=frontend.chat_template,
        response_role="assistant",
    )
    kwargs.update(frontend.extra_frontend_args)
    return kwargs


def serving_namespace(engine_args, frontend_args) -> argparse.Namespace:
    """The flat namespace vLLM's `init_app_state` reads (what `vllm serve` builds from its command line)."""
    return argparse.Namespace(**(vars(frontend_args) | vars(engine_args)))
