"""The test suite's device profiles (tests/devices.py): what a config becomes on CUDA, and what the CPU keeps."""

import pytest

from serve_app.config import AppConfig
from tests.devices import CUDA_GPU_SHARE, CUDA_MEMORY_FRACTION, on_device


@pytest.fixture
def gpus(monkeypatch):
    import torch

    def _set(count: int) -> None:
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)

    return _set


def test_the_cpu_keeps_the_config_as_it_is():
    config = AppConfig.model_validate({"model": {"source": "tiny"}})
    assert on_device(config, "cpu") is config


def test_on_cuda_each_replica_takes_a_gpu_share_and_float32_for_the_reference_checks(gpus):
    gpus(1)
    config = on_device(AppConfig.model_validate({"model": {"source": "tiny"}, "engine": {"max_num_seqs": 8}}), "cuda")
    assert config.model_deployment.num_gpus == CUDA_GPU_SHARE
    assert config.engine.gpu_memory_utilization == CUDA_MEMORY_FRACTION
    assert config.engine.dtype == "float32" and config.engine.max_num_seqs == 8
    view, = config.model_views()
    assert view.model_deployment.num_gpus == CUDA_GPU_SHARE


def test_on_cuda_an_explicit_dtype_and_gpu_count_are_kept(gpus):
    gpus(1)
    config = on_device(AppConfig.model_validate({"model": {"source": "tiny"}, "engine": {"dtype": "bfloat16"},
                                                 "model_deployment": {"num_gpus": 1}}), "cuda")
    assert config.engine.dtype == "bfloat16" and config.model_deployment.num_gpus == 1


def test_on_cuda_every_model_of_a_several_model_config_is_moved(gpus):
    gpus(1)
    config = on_device(AppConfig.model_validate({"models": [{"model": {"source": "tiny"}},
                                                            {"model": {"source": "tiny", "served_model_name": "b"}}]}),
                       "cuda")
    assert [view.model_deployment.num_gpus for view in config.model_views()] == [CUDA_GPU_SHARE] * 2
    assert {view.engine.gpu_memory_utilization for view in config.model_views()} == {CUDA_MEMORY_FRACTION}


def test_on_cuda_shards_take_a_whole_gpu_each_and_skip_without_enough(gpus):
    sharded = AppConfig.model_validate({"model": {"source": "tiny"}, "engine": {"tensor_parallel_size": 2}})
    gpus(2)
    assert on_device(sharded, "cuda").model_deployment.num_gpus == 1
    gpus(1)
    with pytest.raises(pytest.skip.Exception, match="needs 2 GPUs"):
        on_device(sharded, "cuda")
