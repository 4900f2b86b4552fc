"""Side by side, one server at a time: bare `vllm serve`, serve_app in each placement and Ray option, and Ray
Serve LLM in Ray's optimized mode. Same model, dtype and engine arguments; the same load from two clients
(serve_app's loadtest and vLLM's own `vllm bench serve`): 128-token prompts, 64 output tokens (ignore_eos), at
1, 8 and 32 concurrent users. Only the measured server runs while it is measured (an idle engine beside it
would steal CPU); each is stopped (its process group, and Ray's own stop) before the next starts.

    .venv/bin/python benchmarks/side_by_side.py                    # ~30 minutes on a 2-core machine
    .venv/bin/python benchmarks/side_by_side.py --servers vllm,serve_app --loads 1,32
    bash benchmarks/install_ray_serve_llm.sh                       # once, for the ray_serve_llm row

Writes results/side_by_side/<server>/<client>_c<N>/..., summary.json and summary.md (ratios to bare vLLM and the
fast-path issue's targets).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from harness import NAME, PORT, RAYLLM_PY, REPO, VENV_PY, Server, machine, running  # benchmarks/, beside this script

DIRECT_PORT = 8021
# Speculation off: this benchmark measures the serving layer's cost; benchmarks/speculation_load.py measures `auto`.
ENGINE_YAML = ("engine: {dtype: float32, max_model_len: 2048, max_num_seqs: 64, enforce_eager: true, cpu_kvcache_space_gib: 1, "
               "speculation: {mode: off}}")
OPTIMIZED = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}


def servers(model_dir: str, out: Path) -> dict[str, Server]:
    serve_app = [str(REPO / ".venv/bin/serve-app"), "serve", "--port", str(PORT), "--config"]
    return {s.name: s for s in [
        Server("vllm", [str(VENV_PY), str(REPO / "scripts/vllm_cli.py"), "serve", model_dir, "--served-model-name", NAME,
                        "--host", "127.0.0.1", "--port", str(PORT), "--dtype", "float32", "--max-model-len", "2048",
                        "--max-num-seqs", "64", "--enforce-eager"],
               env={"VLLM_CPU_KVCACHE_SPACE": "1"}, uses_ray=False),
        # The default: Ray Serve's throughput-optimized mode (config ray_serve_throughput_optimized, on by default).
        Server("serve_app", serve_app, yaml=f"model: {{source: default}}\n{ENGINE_YAML}\n"),
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
        Server("ray_serve_llm_optimized", [str(RAYLLM_PY), str(REPO / "benchmarks/ray_serve_llm_server.py"), model_dir,
                                           NAME, str(PORT)],
               env={**OPTIMIZED, "RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING": "1", "RAY_SERVE_ENABLE_HA_PROXY": "1"}),
    ]}


def run_loadtest(port: int, users: int, model_dir: str, out: Path) -> dict:
    num_requests = {1: 12, 8: 48, 32: 128}.get(users, 4 * users)
    command = [str(VENV_PY), "-m", "loadtest.cli", "run", "--base-url", f"http://127.0.0.1:{port}", "--endpoint",
               "completions", "--model", NAME, "--concurrency", str(users), "--num-requests", str(num_requests),
               "--warmup-requests", str(max(1, users)), "--input-tokens", "128", "--max-tokens", "64", "--ignore-eos",
               "--tokenizer", model_dir, "--no-progress", "--no-plots", "--allow-invalid", "--out", str(out)]
    subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1800, check=True)
    summary = json.loads((out / "result.json").read_text())["summary"]
    latency = summary["latency_ms"]
    return {"ttft_p50_ms": latency["ttft"]["p50"]["value"], "ttft_p99_ms": latency["ttft"]["p99"]["value"],
            "itl_p99_ms": latency["itl"]["p99"]["value"], "tpot_p50_ms": latency["tpot"]["p50"]["value"],
            "output_tok_s": summary["output_throughput_tps"], "error_rate": summary["error_rate"]}


def run_vllm_bench(port: int, users: int, model_dir: str, out: Path) -> dict:
    num_prompts = {1: 12, 8: 48, 32: 128}.get(users, 4 * users)
    out.mkdir(parents=True, exist_ok=True)
    command = [str(VENV_PY), str(REPO / "scripts/vllm_cli.py"), "bench", "serve", "--backend", "openai",
               "--base-url", f"http://127.0.0.1:{port}", "--endpoint", "/v1/completions", "--model", NAME,
               "--tokenizer", model_dir, "--dataset-name", "random", "--random-input-len", "128",
               "--random-output-len", "64", "--num-prompts", str(num_prompts), "--max-concurrency", str(users),
               "--request-rate", "inf", "--ignore-eos", "--seed", "1", "--disable-tqdm",
               "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,99",
               "--num-warmups", str(max(1, users)),
               "--save-result", "--result-dir", str(out), "--result-filename", "bench.json"]
    subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1800, check=True,
                   env={**os.environ, "VLLM_TARGET_DEVICE": "cpu"})
    data = json.loads((out / "bench.json").read_text())
    return {"ttft_p50_ms": data["median_ttft_ms"], "ttft_p99_ms": data["p99_ttft_ms"], "itl_p99_ms": data["p99_itl_ms"],
            "tpot_p50_ms": data["median_tpot_ms"], "output_tok_s": data["output_throughput"],
            "error_rate": 1.0 - data["completed"] / max(1, data.get("num_prompts", data["completed"]))}


def measure(server: Server, loads: list[int], clients: list[str], model_dir: str, out: Path) -> dict:
    folder = out / server.name
    results: dict = {}
    try:
        with running(server, folder):
            for users in loads:
                for client in clients:
                    run = run_loadtest if client == "loadtest" else run_vllm_bench
                    try:
                        results[f"{client}_c{users}"] = run(server.client_port, users, model_dir,
                                                            folder / f"{client}_c{users}")
                    except Exception as exc:  # noqa: BLE001 - record and go on with the other points
                        results[f"{client}_c{users}"] = {"error": f"{type(exc).__name__}: {str(exc)[-300:]}"}
                    print(server.name, client, users, results[f"{client}_c{users}"], flush=True)
    except Exception as exc:  # noqa: BLE001
        results["error"] = f"{type(exc).__name__}: {exc}"
        print(server.name, "failed:", exc, flush=True)
    return results


METRICS = ("ttft_p50_ms", "ttft_p99_ms", "itl_p99_ms", "tpot_p50_ms", "output_tok_s")


def targets(rows: dict, name: str, client: str) -> list[tuple[str, bool | None, str]]:
    """The fast-path issue's targets for one server against bare vLLM, for one client's figures."""
    def get(server, users, metric):
        return (rows.get(server, {}).get(f"{client}_c{users}") or {}).get(metric)

    checks = []
    for label, users, metric, limit, kind in [
        ("1 user TTFT p50 <= vLLM + 10 ms", 1, "ttft_p50_ms", 10.0, "plus"),
        ("1 user TTFT p99 <= 1.1x", 1, "ttft_p99_ms", 1.1, "ratio"),
        ("1 user ITL p99 <= 1.1x", 1, "itl_p99_ms", 1.1, "ratio"),
        ("32 users tok/s >= 1.0x", 32, "output_tok_s", 1.0, "min_ratio"),
        ("32 users TTFT p99 <= 1.1x", 32, "ttft_p99_ms", 1.1, "ratio"),
        ("32 users ITL p99 <= 1.15x", 32, "itl_p99_ms", 1.15, "ratio"),
    ]:
        ours, base = get(name, users, metric), get("vllm", users, metric)
        if ours is None or base is None or not base:
            checks.append((label, None, "n/a"))
        elif kind == "plus":
            checks.append((label, ours - base <= limit, f"{ours - base:+.1f} ms"))
        elif kind == "ratio":
            checks.append((label, ours / base <= limit, f"{ours / base:.2f}x"))
        else:
            checks.append((label, ours / base >= limit, f"{ours / base:.2f}x"))
    return checks


def write_summary(rows: dict, loads: list[int], clients: list[str], out: Path, meta: dict) -> None:
    (out / "summary.json").write_text(json.dumps({"meta": meta, "results": rows}, indent=1))
    lines = ["# Side by side, one server at a time", "",
             f"{meta['cpu']}; {meta['date']}; SmolLM2-135M-Instruct float32, eager; 128 prompt + 64 output tokens.",
             "Cells: value (ratio to bare `vllm serve` measured by the same client).", ""]
    for client in clients:
        lines += [f"## {client}", "", "| server | users | " + " | ".join(METRICS) + " |",
                  "|---|---|" + "---|" * len(METRICS)]
        for name, results in rows.items():
            for users in loads:
                cell = results.get(f"{client}_c{users}") or {}
                base = (rows.get("vllm", {}).get(f"{client}_c{users}") or {})
                if "error" in cell or not cell:
                    lines.append(f"| {name} | {users} | {cell.get('error', 'not run')[:80]} |")
                    continue
                values = []
                for metric in METRICS:
                    value, ref = cell.get(metric), base.get(metric)
                    ratio = f" ({value / ref:.2f}x)" if value is not None and ref and name != "vllm" else ""
                    values.append(f"{value:.1f}{ratio}" if value is not None else "n/a")
                lines.append(f"| {name} | {users} | " + " | ".join(values) + " |")
        lines.append("")
        lines += ["| server | " + " | ".join(label for label, _, _ in targets(rows, "vllm", client)) + " |",
                  "|---|" + "---|" * 6]
        for name in rows:
            if name == "vllm":
                continue
            cells = [f"{'met' if ok else 'NOT met' if ok is not None else ''} {text}" for _, ok, text in
                     targets(rows, name, client)]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    (out / "summary.md").write_text("\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", default="vllm,serve_app_standard_ray,serve_app_separate_standard_ray,serve_app,"
                                              "serve_app_direct_ingress,ray_serve_llm_optimized")
    parser.add_argument("--summarise-only", action="store_true", help="rewrite summary.md from summary.json")
    parser.add_argument("--loads", default="1,8,32")
    parser.add_argument("--clients", default="loadtest,vllm_bench")
    parser.add_argument("--out", type=Path, default=REPO / "results/side_by_side")
    args = parser.parse_args()
    loads = [int(x) for x in args.loads.split(",")]
    clients = args.clients.split(",")
    if args.summarise_only:
        data = json.loads((args.out / "summary.json").read_text())
        write_summary(data["results"], loads, clients, args.out, data["meta"])
        print((args.out / "summary.md").read_text())
        return 0
    model_dir = subprocess.run([str(REPO / ".venv/bin/serve-app"), "models", "prepare", "--model", "default"],
                               capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    args.out.mkdir(parents=True, exist_ok=True)
    known = servers(model_dir, args.out)
    rows = {}
    for name in args.servers.split(","):
        server = known[name]
        if name.startswith("ray_serve_llm") and not RAYLLM_PY.exists():
            rows[name] = {"error": "no .venv-rayllm: run benchmarks/install_ray_serve_llm.sh"}
            continue
        rows[name] = measure(server, loads, clients, model_dir, args.out)
        write_summary(rows, loads, clients, args.out, machine())
    print((args.out / "summary.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
