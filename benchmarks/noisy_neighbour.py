"""Noisy neighbour: a quiet tenant's TTFT while another tenant holds 4x the engine's max_num_seqs streams open.

serve_app with tenancy on (fair engine slots, one reserved) vs serve_app first come first served (tenancy off),
one server at a time; default model, float32, speculation off, engine max_num_seqs 8, tenants by header. Per
server: tenant B alone (one request at a time), then A with 32 concurrent streams and B one at a time together.
Target: B's TTFT p99 beside A <= 1.5x B's TTFT p99 alone.

    .venv/bin/python benchmarks/noisy_neighbour.py            # ~10 min on 2 cores
    .venv/bin/python benchmarks/noisy_neighbour.py --summarise-only

Writes results/noisy_neighbour/<server>/<run>/result.json, summary.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

from harness import NAME, PORT, REPO, VENV_PY, Server, machine, running  # benchmarks/, beside this script

MAX_NUM_SEQS = 8
ENGINE = (f"{{dtype: float32, max_model_len: 2048, max_num_seqs: {MAX_NUM_SEQS}, enforce_eager: true, "
          "cpu_kvcache_space_gib: 1, speculation: {mode: 'off'}}")
SERVERS = ("serve_app_fair", "serve_app_fcfs")
RUNS = {"B_alone": "B:header=x-tenant-id:concurrency=1:requests={b}",
        # A keeps its streams open for the whole run (--duration-s bounds it); B sends its requests meanwhile.
        "A32_B1": "A:header=x-tenant-id:concurrency=" + str(4 * MAX_NUM_SEQS) + ":requests=100000,"
                  "B:header=x-tenant-id:concurrency=1:requests={b}"}


def server(name: str) -> Server:
    tenancy = ("tenancy: {enabled: true, limits_backend: local, reserved_slots: 1, max_queue_wait_s: 300, "
               "tenants: {A: {name: A}, B: {name: B}}}\n") if name == "serve_app_fair" else ""
    yaml = f"model: {{source: default}}\nengine: {ENGINE}\nadmission: {{request_timeout_s: 600}}\n{tenancy}"
    return Server(name, [str(REPO / ".venv/bin/serve-app"), "serve", "--port", str(PORT), "--config"], yaml=yaml)


def run(name: str, run_name: str, args: argparse.Namespace, model_dir: str, out: Path) -> dict:
    folder = out / run_name
    command = [str(VENV_PY), "-m", "loadtest.cli", "run", "--base-url", f"http://127.0.0.1:{PORT}", "--endpoint",
               "completions", "--model", NAME, "--tenants", RUNS[run_name].format(b=args.b_requests),
               "--input-tokens", "128", "--max-tokens", str(args.max_tokens), "--ignore-eos", "--temperature", "0",
               "--num-requests", str(args.b_requests), "--duration-s", str(args.duration_s),
               "--tokenizer", model_dir, "--no-progress", "--no-plots", "--allow-invalid", "--out", str(folder)]
    subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1800, check=True)
    tenants = json.loads((folder / "result.json").read_text())["summary"]["tenants"]

    def p(t: dict, metric: str, q: str):
        return ((t.get(metric) or {}).get(q) or {}).get("value")

    return {name: {"requests": t.get("num_requests"), "ok": t.get("num_ok"), "num_429": t.get("num_429"),
                   "errors": t.get("num_errors"), "ttft_p50_ms": p(t, "ttft_ms", "p50"),
                   "ttft_p99_ms": p(t, "ttft_ms", "p99"), "tpot_p50_ms": p(t, "tpot_ms", "p50"),
                   "good_fraction": (t.get("goodput") or {}).get("good_fraction")}
            for name, t in tenants.items()}


def write_summary(rows: dict, out: Path, meta: dict) -> None:
    (out / "summary.json").write_text(json.dumps({"meta": meta, "results": rows}, indent=1))
    lines = ["# Noisy neighbour: quiet tenant B beside tenant A's 32 open streams", "",
             f"{meta['cpu']}, {meta['date']}; default model, float32, speculation off, max_num_seqs {MAX_NUM_SEQS}; "
             f"{meta['workload']}; command: `.venv/bin/python benchmarks/noisy_neighbour.py`.", "",
             "| server | B alone TTFT p50 / p99 ms | B beside A TTFT p50 / p99 ms | B p99 ratio (target <= 1.5x) | "
             "A TTFT p50 ms | A requests ok | B requests ok |", "|---|---|---|---|---|---|---|"]
    for name in SERVERS:
        r = rows.get(name) or {}
        alone, beside = (r.get("B_alone") or {}).get("B"), (r.get("A32_B1") or {}).get("B")
        a = (r.get("A32_B1") or {}).get("A") or {}
        if not alone or not beside:
            lines.append(f"| {name} | {r.get('error', 'not run')} ||||||")
            continue
        ratio = beside["ttft_p99_ms"] / alone["ttft_p99_ms"]
        lines.append(f"| {name} | {alone['ttft_p50_ms']:.0f} / {alone['ttft_p99_ms']:.0f} | {beside['ttft_p50_ms']:.0f} / "
                     f"{beside['ttft_p99_ms']:.0f} | **{ratio:.2f}x** {'met' if ratio <= 1.5 else 'not met'} | "
                     f"{a.get('ttft_p50_ms') or 0:.0f} | {a.get('ok')} | {beside['ok']} |")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(REPO / "results" / "noisy_neighbour"))
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--b-requests", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--duration-s", type=int, default=100)
    parser.add_argument("--summarise-only", action="store_true")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {**machine(),
            "workload": f"completions, 128 prompt tokens, {args.max_tokens} output tokens (ignore_eos), greedy; B sends "
                        f"{args.b_requests} requests one at a time"}
    rows = {}
    if (out / "summary.json").exists():
        rows = json.loads((out / "summary.json").read_text()).get("results", {})
    if not args.summarise_only:
        from serve_app.config import AppConfig
        from serve_app.platform.models import resolve_model_path

        model_dir = resolve_model_path(AppConfig().model)
        for name in args.servers.split(","):
            rows[name] = {}
            try:
                with running(server(name), out / name):
                    for run_name in RUNS:
                        rows[name][run_name] = run(name, run_name, args, model_dir, out / name)
                        print(name, run_name, rows[name][run_name], flush=True)
            except Exception as exc:  # noqa: BLE001 - record and go on
                rows[name]["error"] = f"{type(exc).__name__}: {str(exc)[-300:]}"
                print(name, "failed:", rows[name]["error"], flush=True)
    write_summary(rows, out, meta)


if __name__ == "__main__":
    main()
