"""Speculation by load, through HTTP: serve_app's default (`auto`) vs serve_app with speculation off vs bare
`vllm serve` with its defaults (no speculation). Same model and dtype (float32, what `auto` resolves for this
checkpoint), one server at a time; loadtest's three built-in prompt sets (copy-heavy customer-service replies,
translation, open chat; greedy, up to 96 output tokens) at 1, 8 and 32 users. Acceptance rate and tokens per
verification step come from each server's own /metrics.

    .venv/bin/python benchmarks/speculation_load.py            # ~25 min on 2 cores
    .venv/bin/python benchmarks/speculation_load.py --summarise-only

Writes results/speculation/load/<server>/<set>_c<N>/result.json, summary.{json,md} and summary.png.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from harness import NAME, PORT, REPO, VENV_PY, Server, machine, running  # benchmarks/, beside this script

ENGINE = "dtype: float32, max_model_len: 2048, max_num_seqs: 64, enforce_eager: true, cpu_kvcache_space_gib: 1"
SETS = ("copy", "translate", "chat")


def servers(model_dir: str) -> dict[str, Server]:
    serve_app = [str(REPO / ".venv/bin/serve-app"), "serve", "--port", str(PORT), "--config"]
    return {s.name: s for s in [
        Server("serve_app_auto", serve_app, yaml=f"model: {{source: default}}\nengine: {{{ENGINE}}}\n"),
        Server("serve_app_off", serve_app, yaml=f"model: {{source: default}}\nengine: {{{ENGINE}, speculation: {{mode: off}}}}\n"),
        Server("vllm", [str(VENV_PY), str(REPO / "scripts/vllm_cli.py"), "serve", model_dir, "--served-model-name", NAME,
                        "--host", "127.0.0.1", "--port", str(PORT), "--dtype", "float32", "--max-model-len", "2048",
                        "--max-num-seqs", "64", "--enforce-eager"],
               env={"VLLM_CPU_KVCACHE_SPACE": "1"}, uses_ray=False),
    ]}


def run_cell(prompt_set: str, users: int, model_dir: str, out: Path) -> dict:
    num_requests = {1: 8, 8: 32, 32: 96}.get(users, 3 * users)
    command = [str(VENV_PY), "-m", "loadtest.cli", "run", "--base-url", f"http://127.0.0.1:{PORT}", "--endpoint", "chat",
               "--model", NAME, "--prompt-set", prompt_set, "--temperature", "0", "--max-tokens", "96",
               "--concurrency", str(users), "--num-requests", str(num_requests), "--warmup-requests", str(users),
               "--tokenizer", model_dir, "--no-progress", "--no-plots", "--allow-invalid", "--out", str(out)]
    subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1800, check=True)
    summary = json.loads((out / "result.json").read_text())["summary"]
    latency, spec = summary["latency_ms"], summary.get("speculation") or {}
    return {"output_tok_s": summary["output_throughput_tps"], "ttft_p50_ms": latency["ttft"]["p50"]["value"],
            "tpot_p50_ms": latency["tpot"]["p50"]["value"], "error_rate": summary["error_rate"],
            "acceptance_rate": spec.get("acceptance_rate"), "tokens_per_step": spec.get("tokens_per_step")}


def measure(server: Server, loads: list[int], model_dir: str, out: Path) -> dict:
    folder = out / server.name
    results: dict = {}
    with running(server, folder):
        for prompt_set in SETS:
            for users in loads:
                key = f"{prompt_set}_c{users}"
                try:
                    results[key] = run_cell(prompt_set, users, model_dir, folder / key)
                except Exception as exc:  # noqa: BLE001 - record and go on
                    results[key] = {"error": f"{type(exc).__name__}: {str(exc)[-300:]}"}
                print(server.name, key, results[key], flush=True)
    return results


def write_summary(rows: dict, loads: list[int], out: Path, meta: dict) -> None:
    (out / "summary.json").write_text(json.dumps({"meta": meta, "loads": loads, "results": rows}, indent=1))

    def cell(server, key, metric):
        return (rows.get(server) or {}).get(key, {}).get(metric)

    lines = ["# Speculation by load (HTTP, one server at a time)", "",
             f"{meta['cpu']}, {meta['date']}; default model, float32, greedy, up to 96 output tokens; command: "
             "`.venv/bin/python benchmarks/speculation_load.py`.", "",
             "Output tokens/s; ratios of serve_app `auto` to serve_app with speculation off and to bare `vllm serve` "
             "(defaults: no speculation); acceptance rate and tokens per verification step of `auto` from /metrics.",
             "", "| prompt set | users | vllm tok/s | off tok/s | auto tok/s | auto / off | auto / vllm | acceptance | "
                 "tokens/step |", "|---|---|---|---|---|---|---|---|---|"]
    checks = []
    for prompt_set in SETS:
        for users in loads:
            key = f"{prompt_set}_c{users}"
            vllm, off, auto = (cell(s, key, "output_tok_s") for s in ("vllm", "serve_app_off", "serve_app_auto"))
            acc, per_step = cell("serve_app_auto", key, "acceptance_rate"), cell("serve_app_auto", key, "tokens_per_step")
            vs_off = auto / off if auto and off else None
            vs_vllm = auto / vllm if auto and vllm else None
            fmt = lambda v, d=1: "-" if v is None else f"{v:.{d}f}"  # noqa: E731
            lines.append(f"| {prompt_set} | {users} | {fmt(vllm)} | {fmt(off)} | {fmt(auto)} | {fmt(vs_off, 2)}x | "
                         f"{fmt(vs_vllm, 2)}x | {fmt(acc, 2)} | {fmt(per_step, 2)} |")
            if vs_off is not None:
                checks.append((f"{key}: auto >= 0.97x off", vs_off >= 0.97, f"{vs_off:.2f}x"))
            if prompt_set == "copy" and users == 1 and vs_vllm is not None:
                checks.append(("copy, 1 user: auto >= 2x bare vLLM", vs_vllm >= 2.0, f"{vs_vllm:.2f}x"))
    lines += ["", "| target | met | measured |", "|---|---|---|"]
    lines += [f"| {name} | {'yes' if ok else 'NO'} | {value} |" for name, ok, value in checks]
    (out / "summary.md").write_text("\n".join(lines + ["", "![auto vs off and vLLM](summary.png)", ""]))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(SETS), figsize=(12, 3.6), sharey=True)
        for ax, prompt_set in zip(axes, SETS):
            width = 0.27
            for i, (server, label) in enumerate([("vllm", "vllm serve"), ("serve_app_off", "serve_app off"),
                                                 ("serve_app_auto", "serve_app auto")]):
                ax.bar([x + (i - 1) * width for x in range(len(loads))],
                       [cell(server, f"{prompt_set}_c{u}", "output_tok_s") or 0 for u in loads], width, label=label)
            ax.set_xticks(range(len(loads)), [f"{u} users" for u in loads])
            ax.set_title(prompt_set)
        axes[0].set_ylabel("output tokens/s")
        axes[0].legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "summary.png", dpi=110)
    except ImportError:
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", default="serve_app_auto,serve_app_off,vllm")
    parser.add_argument("--loads", default="1,8,32")
    parser.add_argument("--out", type=Path, default=REPO / "results/speculation/load")
    parser.add_argument("--summarise-only", action="store_true")
    args = parser.parse_args()
    loads = [int(x) for x in args.loads.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    if args.summarise_only:
        data = json.loads((args.out / "summary.json").read_text())
        write_summary(data["results"], data["loads"], args.out, data["meta"])
        print((args.out / "summary.md").read_text())
        return 0
    model_dir = subprocess.run([str(REPO / ".venv/bin/serve-app"), "models", "prepare", "--model", "default"],
                               capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    meta = machine()
    # Servers already measured in an earlier (interrupted) run are kept unless named again.
    rows: dict = json.loads((args.out / "summary.json").read_text())["results"] if (args.out / "summary.json").exists() else {}
    for name in args.servers.split(","):
        rows[name] = measure(servers(model_dir)[name], loads, model_dir, args.out)
        write_summary(rows, loads, args.out, meta)
    print((args.out / "summary.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
