"""The replica's `dtype: auto` decision: never below the checkpoint's precision; kernels' needs per CPU."""

from __future__ import annotations

import json

import pytest

from serve_app.server.engine_dtype import CheckpointDtype, choose_dtype, read_checkpoint_dtype, read_cpuinfo
from tests.unit.checkpoints import write_w8a8_checkpoint

ZEN4 = frozenset({"avx512f", "avx512_vnni", "avx512_bf16"})
SAPPHIRE_RAPIDS = frozenset({"avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile"})
NO_BF16 = frozenset({"avx512f", "avx512_vnni"})
ALL_CPUS = (ZEN4, SAPPHIRE_RAPIDS, NO_BF16)

FP32 = CheckpointDtype(stored="float32")
BF16 = CheckpointDtype(stored="bfloat16")
W8A8 = CheckpointDtype(stored="float32", weight_bits=8, int8_activations=True)
W4A16 = CheckpointDtype(stored="float32", weight_bits=4, required="bfloat16")


@pytest.mark.parametrize("cpu", ALL_CPUS)
def test_float32_checkpoint_is_served_in_float32_on_every_cpu(cpu):
    assert choose_dtype("auto", on_gpu=False, cpu_flags=cpu, checkpoint=FP32) == "float32"
    assert choose_dtype("auto", on_gpu=False, cpu_flags=cpu, checkpoint=CheckpointDtype()) == "float32"
    assert choose_dtype("auto", on_gpu=False, cpu_flags=cpu, checkpoint=CheckpointDtype(stored="float16")) == "float32"


def test_bfloat16_checkpoint_follows_bf16_instructions():
    assert choose_dtype("auto", on_gpu=False, cpu_flags=ZEN4, checkpoint=BF16) == "bfloat16"
    assert choose_dtype("auto", on_gpu=False, cpu_flags=frozenset({"amx_bf16"}), checkpoint=BF16) == "bfloat16"
    assert choose_dtype("auto", on_gpu=False, cpu_flags=NO_BF16, checkpoint=BF16) == "float32"


def test_compressed_checkpoints_get_the_activation_dtype_their_kernels_need():
    # INT8 kernel on the AMX Xeon refuses float32 activations; on a CPU without bf16, float32 is the path.
    assert choose_dtype("auto", on_gpu=False, cpu_flags=SAPPHIRE_RAPIDS, checkpoint=W8A8) == "bfloat16"
    assert choose_dtype("auto", on_gpu=False, cpu_flags=ZEN4, checkpoint=W8A8) == "bfloat16"
    assert choose_dtype("auto", on_gpu=False, cpu_flags=NO_BF16, checkpoint=W8A8) == "float32"
    for cpu in ALL_CPUS:  # the int4 kernel refuses float32 everywhere
        assert choose_dtype("auto", on_gpu=False, cpu_flags=cpu, checkpoint=W4A16) == "bfloat16"
        assert choose_dtype("auto", on_gpu=False, cpu_flags=cpu,
                            checkpoint=CheckpointDtype(stored="float32", weight_bits=4)) == "bfloat16"


def test_explicit_dtype_and_gpu_are_left_alone():
    assert choose_dtype("bfloat16", on_gpu=False, cpu_flags=ZEN4, checkpoint=FP32) == "bfloat16"
    assert choose_dtype("float32", on_gpu=False, cpu_flags=ZEN4, checkpoint=BF16) == "float32"
    assert choose_dtype("auto", on_gpu=True, cpu_flags=NO_BF16, checkpoint=FP32) == "auto"


def test_float32_w8a8_on_amx_is_refused_at_start_not_at_the_first_request():
    # vLLM 0.32 runs W8A8 through its AMX int8 kernel wherever the CPU has AMX tiles, and that kernel raises on float32
    # activations inside the engine's first step (results/compression/speed_pair_w8a8_fp32_amx_failed.md).
    with pytest.raises(ValueError, match="engine.dtype auto or bfloat16"):
        choose_dtype("float32", on_gpu=False, cpu_flags=SAPPHIRE_RAPIDS, checkpoint=W8A8)
    assert choose_dtype("bfloat16", on_gpu=False, cpu_flags=SAPPHIRE_RAPIDS, checkpoint=W8A8) == "bfloat16"
    # Without AMX float32 is vLLM's path (oneDNN; served on EPYCs with and without AVX-512); on a GPU vLLM decides.
    assert choose_dtype("float32", on_gpu=False, cpu_flags=ZEN4, checkpoint=W8A8) == "float32"
    assert choose_dtype("float32", on_gpu=False, cpu_flags=NO_BF16, checkpoint=W8A8) == "float32"
    assert choose_dtype("float32", on_gpu=True, cpu_flags=SAPPHIRE_RAPIDS, checkpoint=W8A8) == "float32"
    # A dense checkpoint in float32 on AMX is fine.
    assert choose_dtype("float32", on_gpu=False, cpu_flags=SAPPHIRE_RAPIDS, checkpoint=FP32) == "float32"


def test_read_checkpoint_dtype(tmp_path):
    dense, w8a8, w4a16 = tmp_path / "dense", tmp_path / "w8a8", tmp_path / "w4a16"
    for d in (dense, w8a8, w4a16):
        d.mkdir()
    (dense / "config.json").write_text(json.dumps({"dtype": "bfloat16"}))
    write_w8a8_checkpoint(w8a8)
    (w8a8 / "compression.json").write_text(json.dumps({"serve_dtype": "float32"}))
    (w4a16 / "config.json").write_text(json.dumps({"dtype": "float32", "quantization_config": {
        "config_groups": {"group_0": {"weights": {"num_bits": 4, "type": "int"}, "input_activations": None}}}}))
    (w4a16 / "compression.json").write_text(json.dumps({"serve_dtype": "bfloat16"}))
    assert read_checkpoint_dtype(str(dense)) == BF16
    assert read_checkpoint_dtype(str(w8a8)) == W8A8  # float32 in compression.json is a default, not a requirement
    assert read_checkpoint_dtype(str(w4a16)) == W4A16
    assert read_checkpoint_dtype(str(tmp_path / "missing")) == CheckpointDtype()


def test_read_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx512f avx512_bf16\n\n"
                    "processor\t: 1\nmodel name\t: other\nflags\t\t: fpu\n")
    assert read_cpuinfo(str(info)) == ("AMD EPYC", frozenset({"fpu", "avx512f", "avx512_bf16"}))
    assert read_cpuinfo(str(tmp_path / "missing")) == ("", frozenset())
