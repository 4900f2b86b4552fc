"""`serve-app serve` refuses an engine dtype that cannot run before it starts Ray (exit 2 and the reason on stderr),
instead of deploying a replica whose engine dies at the first request."""

import argparse

import serve_app.platform.models as models
import serve_app.server.engine_args as engine_args
from serve_app import cli
from serve_app.config import AppConfig
from tests.unit.checkpoints import write_w8a8_checkpoint

AMX = frozenset({"avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile"})


def test_float32_w8a8_on_amx_exits_2_before_ray_starts(tmp_path, monkeypatch, capsys):
    checkpoint = write_w8a8_checkpoint(tmp_path / "w8a8")
    monkeypatch.setattr(models, "resolve_model_path", lambda model: str(checkpoint))
    monkeypatch.setattr(engine_args, "read_cpuinfo", lambda: ("Intel Xeon", AMX))
    monkeypatch.setattr(cli, "_isolate_engine_cpus", lambda config: (_ for _ in ()).throw(AssertionError("started")))
    config = AppConfig.model_validate({"model": {"source": str(checkpoint)}, "engine": {"dtype": "float32"}})
    assert cli._serve(argparse.Namespace(), config) == 2
    assert "cannot serve this INT8 W8A8 checkpoint on a CPU with AMX" in capsys.readouterr().err
