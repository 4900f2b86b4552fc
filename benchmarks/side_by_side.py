"""Side by side with bare `vllm serve`, one server at a time, in interleaved repeats (A, B, A, B, ...): every ratio to
bare vLLM comes from paired repeats with a 95% confidence interval (serve_app.stats.paired_ratio_ci). Same model,
dtype and engine arguments; the same load from two clients (serve_app's loadtest and vLLM's own `vllm bench serve`):
128-token prompts, 64 output tokens (ignore_eos), closed loop at 1, 8, 32 and 128 users. Only the measured server
runs while it is measured (an idle engine beside it would steal CPU); each is stopped (its process group, and Ray's
own stop) before the next starts. Servers: `vllm` (bare), `serve_app` (speculation off, the serving layer alone),
`serve_app_default` (the config as users get it: speculation auto), and the placement / Ray variants below.

A tail figure is a p99 only over >= 200 samples per repeat, else the table says "max of N". A loadtest run whose
client self-check is INVALID is run once more; if it stays invalid, that repeat pair is left out of the ratios and
the table says how many pairs were valid.

Resumable and chunked: each (repeat, server) is one unit (start the server, run every load and client, stop it),
saved as runs/r<k>/<server>/unit.json; a unit already saved is not run again. `--budget-min` stops before a unit
that would not fit, so the whole run is a few commands of ~10 minutes each under the shared lock:

    flock /tmp/serve_app_heavy.lock timeout 900 .venv/bin/python benchmarks/side_by_side.py --budget-min 11   # repeat until "done"
    .venv/bin/python benchmarks/side_by_side.py --loads 128 --budget-min 11      # 128 users, its own units
    .venv/bin/python benchmarks/side_by_side.py --quick --out /tmp/sbs_quick     # smoke: 1 and 8 users, 1 repeat
    .venv/bin/python benchmarks/side_by_side.py --summarise-only                 # summary.{json,md} from the units
    ... --fresh                                                                   # first chunk on new code: drop saved units
    ... --clients loadtest --ramp-up-s 16                                         # users staggered over 16 s
    bash benchmarks/install_ray_serve_llm.sh                                      # once, for the ray_serve_llm row

Writes results/side_by_side/runs/r<k>/<server>/<client>_c<N>/... (each client's own result files), unit.json per
unit, summary.json (meta: commit, CPU and flags, date, repeats; per run: metrics, sample counts, validity; per
server, client and load: the paired estimates and the issue's targets) and summary.md (benchmarks/tables.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tables  # noqa: E402  (benchmarks/, beside this script: the table renderers)
from harness import (NAME, PORT, RAYLLM_PY, REPO, VENV_PY, Server, applied_nice, cpu_seconds_by_role,  # noqa: E402
                     engine_profile, machine, profile_window, profiled_engine, raise_priority, running)
from serve_app.stats import (MIN_SAMPLES_FOR_P99, paired_difference_ci, paired_ratio_ci, percentile_of,  # noqa: E402
                             tail_label, tail_value)
from tables import format_difference_ms, format_ratio, verdict  # noqa: E402

DIRECT_PORT = 8021
# Speculation off: this benchmark measures the serving layer's cost; benchmarks/speculation_load.py measures `auto`.
ENGINE_ARGS = "dtype: float32, max_model_len: 2048, max_num_seqs: 64, enforce_eager: true, cpu_kvcache_space_gib: 1"
ENGINE_YAML = f"engine: {{{ENGINE_ARGS}, speculation: {{mode: off}}}}"
DEFAULT_ENGINE_YAML = f"engine: {{{ENGINE_ARGS}}}"  # speculation as users get it (auto)
OPTIMIZED = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}


def auto_speculative_config() -> dict:
    """vLLM's `speculative_config` for serve_app's default (`auto`) speculation."""
    from serve_app.config import AppConfig
    from serve_app.server.speculation import speculative_config

    return speculative_config(AppConfig().engine.speculation)


def servers(model_dir: str) -> dict[str, Server]:
    serve_app = [str(REPO / ".venv/bin/serve-app"), "serve", "--port", str(PORT), "--config"]
    vllm = [str(VENV_PY), str(REPO / "scripts/vllm_cli.py"), "serve", model_dir, "--served-model-name", NAME,
            "--host", "127.0.0.1", "--port", str(PORT), "--dtype", "float32", "--max-model-len", "2048",
            "--max-num-seqs", "64", "--enforce-eager"]
    return {s.name: s for s in [
        Server("vllm", vllm, env={"VLLM_CPU_KVCACHE_SPACE": "1"}, uses_ray=False),
        # Bare vLLM with its lone CPU worker in the engine core process, as serve_app runs it
        # (engine.cpu_worker_in_engine_core): the serving layer's cost apart from that engine setting.
        Server("vllm_worker_in_core", vllm,
               env={"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}, uses_ray=False),
        # Bare vLLM with serve_app's `auto` speculative config: is the default's cost vLLM's or serve_app's?
        Server("vllm_spec_auto", vllm + ["--speculative-config", json.dumps(auto_speculative_config())],
               env={"VLLM_CPU_KVCACHE_SPACE": "1"}, uses_ray=False),
        # The default: Ray Serve's throughput-optimized mode (config ray_serve_throughput_optimized, on by default).
        Server("serve_app", serve_app, yaml=f"model: {{source: default}}\n{ENGINE_YAML}\n"),
        Server("serve_app_default", serve_app, yaml=f"model: {{source: default}}\n{DEFAULT_ENGINE_YAML}\n"),
        # The default without its n-gram draft governor (engine.speculation.draft_governor, on by default since
        # it was measured against this variant): drafts proposed whatever their recent acceptance. (The same patch
        # still skips the proposer where the schedule gives 0 draft tokens, which changes no output.)
        Server("serve_app_default_ungoverned", serve_app,
               yaml=f"model: {{source: default}}\nengine: {{{ENGINE_ARGS}, "
                    "speculation: {draft_governor: {enabled: false}}}\n"),
        Server("serve_app_standard_ray", serve_app,
               yaml=f"model: {{source: default}}\n{ENGINE_YAML}\nray_serve_throughput_optimized: false\n"),
        Server("serve_app_separate_standard_ray", serve_app,
               yaml=f"model: {{source: default}}\n{ENGINE_YAML}\ningress_placement: separate\n"
                    "ray_serve_throughput_optimized: false\n"),
        # Ray's direct ingress: the model server replica's own HTTP port, no proxy between it and the client.
        Server("serve_app_direct_ingress", serve_app, yaml=f"model: {{source: default}}\n{ENGINE_YAML}\n",
               env={"RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(DIRECT_PORT),
                    "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(DIRECT_PORT + 10)},
               client_port=DIRECT_PORT),
        # Serve's controller looping every 0.5 s (serve_app's default since 72fd443) or at Ray's 0.1 s (config
        # ray_serve_control_loop_interval_s): at 0.1 s its loop cost 1.1 ms of CPU per token at one user on 2 cores
        # (results/token_jitter/control_loop, run when 0.1 s was the default).
        Server("serve_app_control_loop_0_5", serve_app,
               yaml=f"model: {{source: default}}\n{ENGINE_YAML}\nray_serve_control_loop_interval_s: 0.5\n"),
        Server("serve_app_control_loop_0_1", serve_app,
               yaml=f"model: {{source: default}}\n{ENGINE_YAML}\nray_serve_control_loop_interval_s: 0.1\n"),
        # Ray's workers (the replicas, their engines, the proxy, the controller) level with its daemons (config
        # ray_worker_niceness: 0) or at Ray's default 15 below them (serve_app's default). The committed run
        # (results/side_by_side/no_avx512_worker_niceness) ran while 0 was the default: its `serve_app` is
        # `serve_app_ray_worker_niceness_0` today, and its `..._15` today's `serve_app`.
        Server("serve_app_ray_worker_niceness_0", serve_app,
               yaml=f"model: {{source: default}}\n{ENGINE_YAML}\nray_worker_niceness: 0\n"),
        Server("serve_app_ray_worker_niceness_15", serve_app,
               yaml=f"model: {{source: default}}\n{ENGINE_YAML}\nray_worker_niceness: 15\n"),
        # Ray's HAProxy on the serving port instead of its Python proxy (config ray_serve_haproxy): no Python hop.
        Server("serve_app_haproxy", serve_app,
               yaml=f"model: {{source: default}}\n{ENGINE_YAML}\nray_serve_haproxy: true\n"),
        Server("ray_serve_llm_optimized", [str(RAYLLM_PY), str(REPO / "benchmarks/ray_serve_llm_server.py"), model_dir,
                                           NAME, str(PORT)],
               env={**OPTIMIZED, "RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING": "1", "RAY_SERVE_ENABLE_HA_PROXY": "1"}),
    ]}


NUM_REQUESTS = {1: 16, 8: 64, 32: 128, 128: 256}  # measured per run and client (warmup: one per user, apart)
QUICK_NUM_REQUESTS = {1: 4, 8: 16, 32: 48, 128: 160}
ORDER = ("vllm", "serve_app", "serve_app_default")


def run_loadtest(port: int, users: int, num_requests: int, model_dir: str, out: Path, client_nice: int = 0,
                 ramp_up_s: float = 0.0) -> dict:
    """One loadtest run; its summary's figures, sample counts and the client's self-check verdict. With
    `ramp_up_s`, user i starts at ramp_up_s * i / users (staggered, so that no prefill waves are expected:
    benchmarks/wave_stalls.py), and what is sent before the ramp ends is not measured."""
    command = [str(VENV_PY), "-m", "loadtest.cli", "run", "--base-url", f"http://127.0.0.1:{port}", "--endpoint",
               "completions", "--model", NAME, "--concurrency", str(users), "--num-requests", str(num_requests + users),
               "--warmup-requests", str(users), "--input-tokens", "128", "--max-tokens", "64", "--ignore-eos",
               "--tokenizer", model_dir, "--no-progress", "--no-plots", "--allow-invalid", "--out", str(out),
               "--ramp-up-s", str(ramp_up_s), "--warmup-s", str(ramp_up_s)]  # the ramp is not measured
    subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1800, check=True,
                   preexec_fn=lambda: raise_priority(client_nice))
    result = json.loads((out / "result.json").read_text())
    summary, latency = result["summary"], result["summary"]["latency_ms"]

    def tail(metric: str) -> float:  # serve_app.stats.tail_value, from the summary's order statistics
        stat = latency[metric]
        return stat["p99"]["value"] if stat["n"] >= MIN_SAMPLES_FOR_P99 else stat["max"]

    return {"ttft_p50_ms": latency["ttft"]["p50"]["value"], "ttft_tail_ms": tail("ttft"),
            "itl_tail_ms": tail("itl"), "tpot_p50_ms": latency["tpot"]["p50"]["value"],
            "output_tok_s": summary["output_throughput_tps"], "error_rate": summary["error_rate"],
            "output_tokens": sum(r["output_tokens_server"] or 0 for r in result["records"] if r["status_code"] == 200),
            "num_ttft": latency["ttft"]["n"], "num_itl": latency["itl"]["n"],
            "valid": result["validity"]["valid"], "invalid_reasons": result["validity"]["reasons"]}


def run_vllm_bench(port: int, users: int, num_requests: int, model_dir: str, out: Path, client_nice: int = 0,
                   ramp_up_s: float = 0.0) -> dict:
    """One `vllm bench serve` run (raw per-request samples saved, --save-detailed); it has no self-check, and no
    staggered start of a closed loop (`ramp_up_s` must be 0)."""
    if ramp_up_s:
        raise ValueError("vllm bench serve has no staggered closed-loop start: --ramp-up-s is for loadtest only")
    out.mkdir(parents=True, exist_ok=True)
    command = [str(VENV_PY), str(REPO / "scripts/vllm_cli.py"), "bench", "serve", "--backend", "openai",
               "--base-url", f"http://127.0.0.1:{port}", "--endpoint", "/v1/completions", "--model", NAME,
               "--tokenizer", model_dir, "--dataset-name", "random", "--random-input-len", "128",
               "--random-output-len", "64", "--num-prompts", str(num_requests), "--max-concurrency", str(users),
               "--request-rate", "inf", "--ignore-eos", "--seed", "1", "--disable-tqdm",
               "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,99",
               "--num-warmups", str(users), "--save-result", "--save-detailed",
               "--result-dir", str(out), "--result-filename", "bench.json"]
    subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1800, check=True,
                   env={**os.environ, "VLLM_TARGET_DEVICE": "cpu"}, preexec_fn=lambda: raise_priority(client_nice))
    data = json.loads((out / "bench.json").read_text())
    ttfts_ms = [t * 1000.0 for t in data["ttfts"] if t]
    itls_ms = [t * 1000.0 for request in data["itls"] for t in request]
    return {"ttft_p50_ms": percentile_of(ttfts_ms, 50.0), "ttft_tail_ms": tail_value(ttfts_ms),
            "itl_tail_ms": tail_value(itls_ms), "tpot_p50_ms": data["median_tpot_ms"],
            "output_tok_s": data["output_throughput"], "output_tokens": data["total_output_tokens"],
            "error_rate": 1.0 - data["completed"] / max(1, data.get("num_prompts", data["completed"])),
            "num_ttft": len(ttfts_ms), "num_itl": len(itls_ms), "valid": None, "invalid_reasons": []}


CLIENTS = {"loadtest": run_loadtest, "vllm_bench": run_vllm_bench}


def measure_unit(server: Server, loads: list[int], clients: list[str], counts: dict[int, int], model_dir: str,
                 folder: Path, client_nice: int = 0, ramp_up_s: float = 0.0,
                 profile: tuple[float, float] | None = None) -> dict:
    """Start `server`, run every load with every client (an invalid loadtest run once more), stop it. With
    `profile` (delay_s, duration_s), py-spy samples the engine during each run (harness.profiled_engine)."""
    cells: dict = {}
    started_s, measured_on = time.monotonic(), machine()  # the commit the server starts from
    try:
        with running(server, folder):
            for users in loads:
                for client in clients:
                    key = f"{client}_c{users}"
                    for attempt in (1, 2):
                        cpu_before_s = cpu_seconds_by_role()
                        folded = folder / key / "engine.folded"
                        try:
                            with (profiled_engine(*profile, folded) if profile
                                  else contextlib.nullcontext()):
                                cell = CLIENTS[client](server.client_port, users, counts[users], model_dir,
                                                       folder / key, client_nice, ramp_up_s)
                        except Exception as exc:  # noqa: BLE001 - record and go on with the other points
                            cell = {"error": f"{type(exc).__name__}: {str(exc)[-300:]}"}
                        if profile and (shares := engine_profile(folded)):
                            cell["engine_profile"] = shares
                        cell["cpu_s_by_role"] = {role: round(used_s - cpu_before_s.get(role, 0.0), 3)
                                                 for role, used_s in cpu_seconds_by_role().items()}
                        cell["attempts"] = attempt
                        if cell.get("valid") is not False:
                            break
                    cells[key] = cell
                    print(server.name, key, {k: v for k, v in cell.items() if k != "invalid_reasons"}, flush=True)
    except Exception as exc:  # noqa: BLE001 - the server did not start or stop: the unit is recorded as failed
        cells["error"] = f"{type(exc).__name__}: {exc}"
        print(server.name, "failed:", exc, flush=True)
    return {"server": server.name, "cells": cells, "wall_s": round(time.monotonic() - started_s, 1),
            "machine": measured_on, "client_nice": applied_nice(client_nice), "ramp_up_s": ramp_up_s}


def plan(servers: list[str], num_repeats: int) -> list[tuple[int, str]]:
    """Interleaved: repeat 1 of every server, then repeat 2 of every server, ... (A, B, A, B, ...)."""
    return [(repeat, name) for repeat in range(1, num_repeats + 1) for name in servers]


def unit_path(out: Path, repeat: int, server: str) -> Path:
    return out / "runs" / f"r{repeat}" / server / "unit.json"


def unit_done(path: Path, loads: list[int], clients: list[str]) -> bool:
    if not path.exists():
        return False
    cells = json.loads(path.read_text())["cells"]
    return all(f"{client}_c{users}" in cells for users in loads for client in clients)


def save_unit(path: Path, unit: dict) -> None:
    """Merge into a unit saved before (a later `--loads 128` adds its cells beside 1, 8 and 32)."""
    if path.exists():
        saved = json.loads(path.read_text())
        unit["cells"] = {**saved["cells"], **unit["cells"]}
        # The cells kept were measured on the saved unit's commit: the summary names every commit it folds.
        unit["earlier_machines"] = saved.get("earlier_machines", []) + [saved["machine"]]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(unit, indent=1))


# The targets against bare vLLM: (label, users, metric, kind, limit); "plus" is a difference in ms.
TARGETS = (("1 user TTFT p50 <= vLLM + 5 ms", 1, "ttft_p50_ms", "plus", 5.0),
           ("1 user TTFT tail <= 1.05x", 1, "ttft_tail_ms", "at_most", 1.05),
           ("1 user ITL tail <= 1.05x", 1, "itl_tail_ms", "at_most", 1.05),
           ("32 users tok/s >= 1.0x", 32, "output_tok_s", "at_least", 1.0),
           ("32 users ITL tail <= 1.05x", 32, "itl_tail_ms", "at_most", 1.05),
           ("128 users tok/s >= 1.0x", 128, "output_tok_s", "at_least", 1.0),
           ("128 users ITL tail <= 1.05x", 128, "itl_tail_ms", "at_most", 1.05))
RATIO_METRICS = ("ttft_tail_ms", "itl_tail_ms", "output_tok_s")
def summarise(units: dict[tuple[int, str], dict], servers: list[str], loads: list[int], clients: list[str],
              num_repeats: int) -> dict:
    """Per server, client and load: the paired estimates against the first server (the baseline: bare `vllm`, or
    e.g. `vllm_worker_in_core`) over the repeats where both runs were valid; the issue's targets (against bare vLLM)
    are judged only when the baseline is `vllm`."""
    baseline = servers[0]
    runs, comparisons, baselines, targets = [], [], [], []
    for (repeat, server), unit in sorted(units.items()):
        for key, cell in unit["cells"].items():
            if key != "error":
                runs.append({"repeat": repeat, "server": server, "run": key, **cell})

    def cell(repeat: int, server: str, client: str, users: int) -> dict | None:
        found = (units.get((repeat, server)) or {}).get("cells", {}).get(f"{client}_c{users}")
        ok = found and "error" not in found and found.get("valid") is not False and not found.get("error_rate")
        return found if ok else None

    for client in clients:
        for users in loads:
            base_cells = [c for r in range(1, num_repeats + 1) if (c := cell(r, baseline, client, users))]
            if base_cells:
                baselines.append({"client": client, "users": users, "num_repeats": len(base_cells),
                                  **{m: sum(c[m] for c in base_cells) / len(base_cells)
                                     for m in ("ttft_p50_ms", "output_tok_s")}})
            for server in servers:
                if server == baseline:
                    continue
                pairs = [(a, b) for r in range(1, num_repeats + 1)
                         if (a := cell(r, baseline, client, users)) and (b := cell(r, server, client, users))]
                row = {"server": server, "client": client, "users": users, "num_repeats": num_repeats,
                       "num_valid_pairs": len(pairs), "estimates": {},
                       "tail_label": tail_label(min((min(a["num_ttft"], b["num_ttft"]) for a, b in pairs),
                                                    default=0)) + " TTFT / "
                       + tail_label(min((min(a["num_itl"], b["num_itl"]) for a, b in pairs), default=0)) + " ITL"}
                if pairs:
                    row["estimates"]["ttft_p50_ms"] = paired_difference_ci(
                        [a["ttft_p50_ms"] for a, _ in pairs], [b["ttft_p50_ms"] for _, b in pairs]).to_dict()
                    for metric in RATIO_METRICS:
                        row["estimates"][metric] = paired_ratio_ci(
                            [a[metric] for a, _ in pairs], [b[metric] for _, b in pairs]).to_dict()
                comparisons.append(row)
                for label, target_users, metric, kind, limit in TARGETS if baseline == "vllm" else ():
                    estimate = row["estimates"].get(metric)
                    if target_users != users or estimate is None:
                        continue
                    measured = (format_difference_ms if kind == "plus" else format_ratio)(estimate)
                    targets.append({"target": label, "server": server, "client": client, "measured": measured,
                                    "verdict": verdict(estimate, "at_most" if kind == "plus" else kind, limit)})
    return {"runs": runs, "comparisons": comparisons, "baselines": baselines, "targets": targets}


def write_summary(out: Path, servers: list[str], loads: list[int], clients: list[str], num_repeats: int) -> dict:
    units = {(repeat, name): json.loads(path.read_text()) for repeat, name in plan(servers, num_repeats)
             if (path := unit_path(out, repeat, name)).exists()}
    machines = [m for unit in units.values() for m in unit.get("earlier_machines", []) + [unit["machine"]]]
    meta = {**(machines[-1] if machines else machine()), "num_repeats": num_repeats, "servers": servers,
            "baseline": servers[0],
            "loads": loads, "clients": clients, "order": "interleaved: " + ", ".join(
                f"r{r}:{s}" for r, s in plan(servers, num_repeats)),
            "commits": sorted({m["commit"] for m in machines}), "num_units": len(units),
            "client_nice": sorted({unit.get("client_nice", 0) for unit in units.values()}),
            "ramp_up_s": sorted({unit.get("ramp_up_s", 0.0) for unit in units.values()}),
            "num_requests_per_run": {str(u): NUM_REQUESTS.get(u) for u in loads},
            "engine": ENGINE_YAML, "prompt_tokens": 128, "output_tokens": 64}
    summary = {"meta": meta, **summarise(units, servers, loads, clients, num_repeats)}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    profiles = tables.engine_profiles(summary)
    (out / "summary.md").write_text("# Side by side with bare `vllm serve`\n\n" + "\n\n".join(
        f"## {client}\n\n" + tables.side_by_side(summary, client) for client in clients) + "\n"
        + (f"\n## Where the engine's time goes (py-spy)\n\n{profiles}\n" if profiles else ""))
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", default=",".join(ORDER),
                        help="the first is the baseline every ratio is to ('vllm', bare vllm serve, unless another is "
                             f"named first); known: {', '.join(servers('MODEL_DIR'))}")
    parser.add_argument("--loads", default="1,8,32")
    parser.add_argument("--clients", default="loadtest,vllm_bench")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--budget-min", type=float, default=0.0,
                        help="start no unit that the last unit's duration says would end past this (0: no limit)")
    parser.add_argument("--quick", action="store_true", help="smoke pass: 1 and 8 users, 1 repeat, few requests")
    parser.add_argument("--out", type=Path, default=REPO / "results/side_by_side")
    parser.add_argument("--summarise-only", action="store_true", help="rewrite summary.{json,md} from the units")
    parser.add_argument("--fresh", action="store_true", help="delete the saved units first (new code to measure)")
    parser.add_argument("--client-nice", type=int, default=0,
                        help="niceness increment for both clients (-10: they outrank every server process, as a "
                             "client on another machine would not share its cores; needs root, else 0)")
    parser.add_argument("--profile-engine", default="",
                        help="DELAY_S,DURATION_S: py-spy samples each server's engine for DURATION_S "
                             "seconds from DELAY_S into each run (engine.folded per run; shares in the summary)")
    parser.add_argument("--ramp-up-s", type=float, default=0.0,
                        help="loadtest only: start user i at RAMP * i / users instead of all at once (a staggered "
                             "closed loop: benchmarks/wave_stalls.py); what is sent during the ramp is not measured")
    args = parser.parse_args()
    if args.ramp_up_s < 0:
        parser.error("--ramp-up-s must be >= 0")
    if args.ramp_up_s and "vllm_bench" in args.clients.split(","):
        parser.error("--ramp-up-s: vllm bench serve has no staggered closed-loop start; use --clients loadtest")
    if args.fresh and not args.summarise_only:
        shutil.rmtree(args.out / "runs", ignore_errors=True)
    if args.quick:
        args.loads, args.repeats = "1,8", 1
    loads = [int(x) for x in args.loads.split(",")]
    clients, servers_named = args.clients.split(","), args.servers.split(",")
    counts = QUICK_NUM_REQUESTS if args.quick else NUM_REQUESTS
    profile = profile_window(args.profile_engine, parser)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.summarise_only:
        model_dir = subprocess.run([str(REPO / ".venv/bin/serve-app"), "models", "prepare", "--model", "default"],
                                   capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        known = servers(model_dir)
        started_s, last_unit_s = time.monotonic(), 0.0
        pending = [(r, s) for r, s in plan(servers_named, args.repeats)
                   if not unit_done(unit_path(args.out, r, s), loads, clients)]
        for index, (repeat, name) in enumerate(pending):
            elapsed_s = time.monotonic() - started_s
            if args.budget_min and index and elapsed_s + last_unit_s > args.budget_min * 60:
                print(f"budget: {len(pending) - index} units left; run the same command again", flush=True)
                break
            if name.startswith("ray_serve_llm") and not RAYLLM_PY.exists():
                print("no .venv-rayllm: run benchmarks/install_ray_serve_llm.sh", flush=True)
                return 1
            print(f"unit r{repeat} {name} ({index + 1} of {len(pending)})", flush=True)
            unit = measure_unit(known[name], loads, clients, counts, model_dir,
                                unit_path(args.out, repeat, name).parent, args.client_nice, args.ramp_up_s,
                                profile)
            save_unit(unit_path(args.out, repeat, name), unit)
            last_unit_s = unit["wall_s"]
            write_summary(args.out, servers_named, loads, clients, args.repeats)
        else:
            print("done: every unit measured", flush=True)
    write_summary(args.out, servers_named, loads, clients, args.repeats)
    print((args.out / "summary.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
