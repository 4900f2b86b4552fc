"""Noisy neighbour: a quiet tenant's TTFT while another tenant holds 4x the engine's max_num_seqs streams open,
and what fairness costs in throughput.

serve_app with tenancy on (fair engine slots, one reserved above max_num_seqs, prefill pacing) vs serve_app first
come first served (tenancy off), one server at a time; default model, float32, speculation off, engine
max_num_seqs 8, tenants by header. Per server:
- B_alone: tenant B alone, one request at a time (--b-requests);
- A_alone: tenant A alone with 32 streams for --alone-s (a tenant alone must be as fast as without tenancy);
- A32_B1: A's 32 streams and B one at a time together for --duration-s (B's TTFT ratio; total output tokens/s);
- A16_C16 (tenancy only): A (weight 1) and C (weight 2) with 16 streams each (C's share of output tokens: 2/3).
Targets: B's TTFT p99 beside A <= 1.5x alone; total output tokens/s with tenancy >= 0.95x first come first served.

    .venv/bin/python benchmarks/noisy_neighbour.py --servers serve_app_fair   # ~8 min on 2 cores
    .venv/bin/python benchmarks/noisy_neighbour.py --servers serve_app_fcfs   # ~6 min
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
FLOOD = "A:header=x-tenant-id:concurrency=" + str(4 * MAX_NUM_SEQS) + ":requests=100000"
RUNS = {"B_alone": "B:header=x-tenant-id:concurrency=1:requests={b}",
        "A_alone": FLOOD,
        # A keeps its streams open for the whole run (--duration-s bounds it); B sends its requests meanwhile.
        "A32_B1": FLOOD + ",B:header=x-tenant-id:concurrency=1:requests={b}",
        "A16_C16": "A:header=x-tenant-id:concurrency=16:requests=100000,C:header=x-tenant-id:concurrency=16:"
                   "requests=100000"}
TENANCY_ONLY = {"A16_C16"}


def server(name: str) -> Server:
    tenancy = ("tenancy: {enabled: true, trust_tenant_header: true, limits_backend: local, reserved_slots: 1, "
               "max_queue_wait_s: 300, "
               "tenants: {A: {name: A}, B: {name: B}, C: {name: C, weight: 2}}}\n") if name == "serve_app_fair" else ""
    yaml = f"model: {{source: default}}\nengine: {ENGINE}\nadmission: {{request_timeout_s: 600}}\n{tenancy}"
    return Server(name, [str(REPO / ".venv/bin/serve-app"), "serve", "--port", str(PORT), "--config"], yaml=yaml)


def run(name: str, run_name: str, args: argparse.Namespace, model_dir: str, out: Path) -> dict:
    folder = out / run_name
    duration_s = {"A32_B1": args.duration_s, "B_alone": 3600}.get(run_name, args.alone_s)
    command = [str(VENV_PY), "-m", "loadtest.cli", "run", "--base-url", f"http://127.0.0.1:{PORT}", "--endpoint",
               "completions", "--model", NAME, "--tenants", RUNS[run_name].format(b=args.b_requests),
               "--input-tokens", "128", "--max-tokens", str(args.max_tokens), "--ignore-eos", "--temperature", "0",
               "--num-requests", str(args.b_requests), "--duration-s", str(duration_s),
               "--tokenizer", model_dir, "--no-progress", "--no-plots", "--allow-invalid", "--out", str(folder)]
    subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1800, check=True)
    result = json.loads((folder / "result.json").read_text())
    summary, tenants = result["summary"], result["summary"]["tenants"]

    def p(t: dict, metric: str, q: str):
        return ((t.get(metric) or {}).get(q) or {}).get("value")

    row = {name: {"requests": t.get("num_requests"), "ok": t.get("num_ok"), "num_429": t.get("num_429"),
                  "errors": t.get("num_errors"), "ttft_p50_ms": p(t, "ttft_ms", "p50"),
                  "ttft_p99_ms": p(t, "ttft_ms", "p99"), "tpot_p50_ms": p(t, "tpot_ms", "p50"),
                  "output_tokens": t.get("output_tokens"), "output_token_share": t.get("output_token_share")}
           for name, t in tenants.items()}
    row["total"] = {"output_tokens_per_s": summary.get("output_throughput_tps"),
                    "window_s": (summary.get("window_s") or {}).get("length"), "num_ok": summary.get("num_ok"),
                    "load_tester_valid": result["validity"]["valid"], "validity_reasons": result["validity"]["reasons"]}
    return row


def _ratio(a, b) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def write_summary(rows: dict, out: Path, meta: dict) -> None:
    (out / "summary.json").write_text(json.dumps({"meta": meta, "results": rows}, indent=1))
    get = lambda server, run, who: ((rows.get(server) or {}).get(run) or {}).get(who) or {}
    lines = ["# Noisy neighbour: quiet tenant B beside tenant A's 32 open streams", "",
             f"{meta['cpu']}, {meta['date']}, commit {meta.get('commit', '?')}; default model, float32, speculation "
             f"off, max_num_seqs {MAX_NUM_SEQS}; {meta['workload']}; command: "
             "`.venv/bin/python benchmarks/noisy_neighbour.py`.", "",
             "| server | B alone TTFT p50 / p99 ms (n) | B beside A TTFT p50 / p99 ms (n) | B p99 ratio (<= 1.5x) | "
             "A alone output tok/s | A32+B1 total output tok/s | A TTFT p50 ms beside | load tester |",
             "|---|---|---|---|---|---|---|---|"]
    for name in SERVERS:
        alone, beside = get(name, "B_alone", "B"), get(name, "A32_B1", "B")
        if not alone or not beside:
            lines.append(f"| {name} | {(rows.get(name) or {}).get('error', 'not run')} |||||||")
            continue
        valid = all(get(name, run, "total").get("load_tester_valid") for run in RUNS if get(name, run, "total"))
        lines.append(
            f"| {name} | {alone['ttft_p50_ms']:.0f} / {alone['ttft_p99_ms']:.0f} ({alone['ok']}) | "
            f"{beside['ttft_p50_ms']:.0f} / {beside['ttft_p99_ms']:.0f} ({beside['ok']}) | "
            f"**{_ratio(beside['ttft_p99_ms'], alone['ttft_p99_ms'])}** | "
            f"{get(name, 'A_alone', 'total').get('output_tokens_per_s') or 0:.1f} | "
            f"{get(name, 'A32_B1', 'total').get('output_tokens_per_s') or 0:.1f} | "
            f"{get(name, 'A32_B1', 'A').get('ttft_p50_ms') or 0:.0f} | {'valid' if valid else 'INVALID'} |")
    fair, fcfs = "serve_app_fair", "serve_app_fcfs"
    lines += ["", "Throughput with tenancy / first come first served: A alone "
              f"{_ratio(get(fair, 'A_alone', 'total').get('output_tokens_per_s'), get(fcfs, 'A_alone', 'total').get('output_tokens_per_s'))}"
              ", A32+B1 total "
              f"{_ratio(get(fair, 'A32_B1', 'total').get('output_tokens_per_s'), get(fcfs, 'A32_B1', 'total').get('output_tokens_per_s'))}"
              " (target >= 0.95x)."]
    c = get(fair, "A16_C16", "C")
    if c:
        lines += [f"Weights 2:1 (A16_C16, tenancy): C (weight 2) got {c.get('output_token_share') or 0:.3f} of the "
                  f"output tokens (target 0.667 within 10%: 0.600-0.733); A {get(fair, 'A16_C16', 'A').get('output_tokens')}"
                  f", C {c.get('output_tokens')} tokens."]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(REPO / "results" / "noisy_neighbour"))
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--b-requests", type=int, default=60)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--duration-s", type=int, default=150, help="A32_B1's length")
    parser.add_argument("--alone-s", type=int, default=45, help="A_alone's and A16_C16's length")
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
            rows[name] = {"meta": meta}
            try:
                with running(server(name), out / name):
                    for run_name in RUNS:
                        if run_name in TENANCY_ONLY and name != "serve_app_fair":
                            continue
                        rows[name][run_name] = run(name, run_name, args, model_dir, out / name)
                        print(name, run_name, rows[name][run_name], flush=True)
            except Exception as exc:  # noqa: BLE001 - record and go on
                rows[name]["error"] = f"{type(exc).__name__}: {str(exc)[-300:]}"
                print(name, "failed:", rows[name]["error"], flush=True)
    write_summary(rows, out, meta)


if __name__ == "__main__":
    main()
