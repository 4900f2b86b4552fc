"""The replica's `dtype: auto` decision: bf16 only where the CPU has bf16 instructions."""

from __future__ import annotations

import json

from serve_app.engine_dtype import choose_dtype, read_cpuinfo, required_dtype

ZEN4 = frozenset({"avx512f", "avx512_vnni", "avx512_bf16"})
NO_BF16 = frozenset({"avx512f", "avx512_vnni"})


def test_auto_on_cpu_follows_bf16_instructions():
    assert choose_dtype("auto", on_gpu=False, cpu_flags=ZEN4) == "bfloat16"
    assert choose_dtype("auto", on_gpu=False, cpu_flags=NO_BF16) == "float32"
    assert choose_dtype("auto", on_gpu=False, cpu_flags=frozenset({"amx_bf16"})) == "bfloat16"


def test_explicit_dtype_and_gpu_are_left_alone():
    assert choose_dtype("float32", on_gpu=False, cpu_flags=ZEN4) == "float32"
    assert choose_dtype("bfloat16", on_gpu=False, cpu_flags=NO_BF16) == "bfloat16"
    assert choose_dtype("auto", on_gpu=True, cpu_flags=NO_BF16) == "auto"


def test_checkpoint_requirement_beats_cpu_preference(tmp_path):
    w4a16, w8a8 = tmp_path / "w4a16", tmp_path / "w8a8"
    w4a16.mkdir(), w8a8.mkdir()
    (w4a16 / "compression.json").write_text(json.dumps({"serve_dtype": "bfloat16"}))
    (w8a8 / "compression.json").write_text(json.dumps({"serve_dtype": "float32"}))
    assert required_dtype(str(w4a16)) == "bfloat16"
    assert required_dtype(str(w8a8)) is None  # float32 is a default, not a requirement
    assert required_dtype(str(tmp_path)) is None  # a plain checkpoint
    assert choose_dtype("auto", on_gpu=False, cpu_flags=NO_BF16, required="bfloat16") == "bfloat16"


def test_read_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx512f avx512_bf16\n\n"
                    "processor\t: 1\nmodel name\t: other\nflags\t\t: fpu\n")
    assert read_cpuinfo(str(info)) == ("AMD EPYC", frozenset({"fpu", "avx512f", "avx512_bf16"}))
    assert read_cpuinfo(str(tmp_path / "missing")) == ("", frozenset())
