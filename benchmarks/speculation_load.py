"""Speculation by load, through HTTP: serve_app's default (`auto`) vs serve_app with speculation off vs bare
`vllm serve` with its defaults (no speculation). Same model and dtype (float32, what `auto` resolves for this
checkpoint), one server at a time, in interleaved repeats whose order turns round every other repeat (auto, off,
vllm, vllm, off, auto, ...: a server started afresh for each, and no server always runs first); loadtest's three
built-in prompt sets (copy-heavy customer-service replies, translation, open chat; greedy, up to 96 output tokens)
at each load. Acceptance rate and tokens per verification step come from
each server's own /metrics. Each ratio is the geometric mean over the repeats with its 95% interval; a verdict
needs three valid pairs (benchmarks/tables.py: verdict). Targets: copy-heavy at 1 user >= 2x bare vLLM; auto
>= 0.97x off in every cell. `serve_app_auto_ungoverned` (optional) is `auto` without its draft governor.

    .venv/bin/python benchmarks/speculation_load.py                  # 3 repeats of 1 and 8 users, ~35 min on 2 cores
    .venv/bin/python benchmarks/speculation_load.py --servers \
        serve_app_auto,serve_app_off,vllm,serve_app_auto_ungoverned   # and auto without its governor, ~47 min
    .venv/bin/python benchmarks/speculation_load.py --loads 1,8,32   # ~55 min
    .venv/bin/python benchmarks/speculation_load.py --servers serve_app_auto,serve_app_off --sets chat --loads 8 \
        --repeats 6 --profile-engine 10,20 --out results/speculation/chat_c8_amx   # one cell, py-spy on the engine
    .venv/bin/python benchmarks/speculation_load.py --summarise-only

Writes results/speculation/load/<server>/r<N>/<set>_c<users>/result.json and summary.{json,md}; the README's
table is rendered from summary.json (benchmarks/tables.py: speculation_load).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
from pathlib import Path

import tables  # benchmarks/, beside this script
from harness import (NAME, PORT, REPO, VENV_PY, Server, applied_nice, engine_profile, machine, profile_window,
                     profiled_engine, raise_priority, running, turned_round)
from serve_app.stats import paired_ratio_ci

ENGINE = "dtype: float32, max_model_len: 2048, max_num_seqs: 64, enforce_eager: true, cpu_kvcache_space_gib: 1"
SETS = ("copy", "translate", "chat")


def servers(model_dir: str) -> dict[str, Server]:
    serve_app = [str(REPO / ".venv/bin/serve-app"), "serve", "--port", str(PORT), "--config"]
    return {s.name: s for s in [
        Server("serve_app_auto", serve_app, yaml=f"model: {{source: default}}\nengine: {{{ENGINE}}}\n"),
        Server("serve_app_off", serve_app, yaml=f"model: {{source: default}}\nengine: {{{ENGINE}, speculation: {{mode: off}}}}\n"),
        # `auto` without its draft governor (engine.speculation.draft_governor): drafts whatever their acceptance.
        Server("serve_app_auto_ungoverned", serve_app, yaml=f"model: {{source: default}}\nengine: {{{ENGINE}, "
                                                            "speculation: {draft_governor: {enabled: false}}}\n"),
        Server("vllm", [str(VENV_PY), str(REPO / "scripts/vllm_cli.py"), "serve", model_dir, "--served-model-name", NAME,
                        "--host", "127.0.0.1", "--port", str(PORT), "--dtype", "float32", "--max-model-len", "2048",
                        "--max-num-seqs", "64", "--enforce-eager"],
               env={"VLLM_CPU_KVCACHE_SPACE": "1"}, uses_ray=False),
    ]}


def run_cell(prompt_set: str, users: int, model_dir: str, out: Path, client_nice: int) -> dict:
    num_requests = {1: 16, 8: 32, 32: 96}.get(users, 3 * users)
    command = [str(VENV_PY), "-m", "loadtest.cli", "run", "--base-url", f"http://127.0.0.1:{PORT}", "--endpoint", "chat",
               "--model", NAME, "--prompt-set", prompt_set, "--temperature", "0", "--max-tokens", "96",
               "--concurrency", str(users), "--num-requests", str(num_requests), "--warmup-requests", str(users),
               "--tokenizer", model_dir, "--no-progress", "--no-plots", "--allow-invalid", "--out", str(out)]
    subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1800, check=True,
                   preexec_fn=lambda: raise_priority(client_nice))
    result = json.loads((out / "result.json").read_text())
    summary = result["summary"]
    latency, spec = summary["latency_ms"], summary.get("speculation") or {}
    return {"output_tok_s": summary["output_throughput_tps"], "ttft_p50_ms": latency["ttft"]["p50"]["value"],
            "tpot_p50_ms": latency["tpot"]["p50"]["value"], "error_rate": summary["error_rate"],
            "num_ok": summary["num_ok"], "acceptance_rate": spec.get("acceptance_rate"),
            "tokens_per_step": spec.get("tokens_per_step"), "load_tester_valid": result["validity"]["valid"]}


def measure(server: Server, sets: list[str], loads: list[int], model_dir: str, folder: Path, client_nice: int,
            profile: tuple[float, float] | None = None) -> dict:
    """Every prompt set at every load on one freshly started server; with `profile` (delay_s, duration_s), py-spy
    samples the engine during each cell (harness.profiled_engine) into the cell's engine.folded."""
    results: dict = {}
    with running(server, folder):
        for prompt_set in sets:
            for users in loads:
                key = f"{prompt_set}_c{users}"
                folded = folder / key / "engine.folded"
                try:
                    with profiled_engine(*profile, folded) if profile else contextlib.nullcontext():
                        results[key] = run_cell(prompt_set, users, model_dir, folder / key, client_nice)
                    if profile and (shares := engine_profile(folded)):
                        results[key]["engine_profile"] = shares
                except Exception as exc:  # noqa: BLE001 - record and go on
                    results[key] = {"error": f"{type(exc).__name__}: {str(exc)[-300:]}"}
                print(server.name, key, results[key], flush=True)
    return results


def _usable(cell: dict | None) -> float | None:
    """A cell's tokens/s when it ran without errors and the load tester judged the run valid."""
    if not cell or cell.get("error") or cell.get("error_rate") or not cell.get("load_tester_valid"):
        return None
    return cell["output_tok_s"]


def estimates(runs: dict[str, list[dict]], sets: list[str], loads: list[int]) -> list[dict]:
    """Per prompt set and load: mean tokens/s per server, auto / off and auto / vllm over the repeat pairs, and
    auto's mean acceptance and tokens per step."""
    rows = []
    for prompt_set in sets:
        for users in loads:
            key = f"{prompt_set}_c{users}"
            tok_s = {name: [_usable(r.get(key)) for r in repeats] for name, repeats in runs.items()}
            row = {"prompt_set": prompt_set, "users": users,
                   "mean_tok_s": {name: (sum(v for v in values if v) / len([v for v in values if v]))
                                  if any(values) else None for name, values in tok_s.items()}}
            for other in ("serve_app_off", "vllm", "serve_app_auto_ungoverned"):
                pairs = [(b, a) for a, b in zip(tok_s.get("serve_app_auto", []), tok_s.get(other, [])) if a and b]
                row[f"auto_vs_{other}"] = paired_ratio_ci(*zip(*pairs)).to_dict() if pairs else None
            auto = [r.get(key) for r in runs.get("serve_app_auto", []) if _usable(r.get(key))]
            for metric in ("acceptance_rate", "tokens_per_step"):
                values = [c[metric] for c in auto if c.get(metric) is not None]
                row[metric] = sum(values) / len(values) if values else None
            rows.append(row)
    return rows


def write_summary(runs: dict[str, list[dict]], sets: list[str], loads: list[int], out: Path, meta: dict) -> None:
    data = {"meta": meta, "sets": sets, "loads": loads, "runs": runs, "estimates": estimates(runs, sets, loads)}
    (out / "summary.json").write_text(json.dumps(data, indent=1))
    text = tables.speculation_load_profiled(data)
    (out / "summary.md").write_text("# Speculation by load (HTTP, one server at a time)\n\n" + text + "\n")
    print(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", default="serve_app_auto,serve_app_off,vllm")
    parser.add_argument("--sets", default=",".join(SETS), help="prompt sets, of " + ", ".join(SETS))
    parser.add_argument("--loads", default="1,8")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved: every server once per repeat")
    parser.add_argument("--out", type=Path, default=REPO / "results/speculation/load")
    parser.add_argument("--client-nice", type=int, default=-10,
                        help="niceness increment of the load tester's process (negative: runs before the servers)")
    parser.add_argument("--profile-engine", default="", metavar="DELAY_S,DURATION_S",
                        help="py-spy samples the engine for DURATION_S from DELAY_S into each cell")
    parser.add_argument("--summarise-only", action="store_true")
    args = parser.parse_args()
    loads = [int(x) for x in args.loads.split(",")]
    sets = args.sets.split(",")
    if unknown := set(sets) - set(SETS):
        parser.error(f"--sets: unknown {sorted(unknown)}; of {', '.join(SETS)}")
    profile = profile_window(args.profile_engine, parser)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.summarise_only:
        data = json.loads((args.out / "summary.json").read_text())
        write_summary(data["runs"], data.get("sets", list(SETS)), data["loads"], args.out, data["meta"])
        return 0
    model_dir = subprocess.run([str(REPO / ".venv/bin/serve-app"), "models", "prepare", "--model", "default"],
                               capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    meta = {**machine(), "repeats": args.repeats, "order": "turned round every other repeat",
            "client_nice": applied_nice(args.client_nice), "profile_engine": args.profile_engine or None,
            "command": f"benchmarks/speculation_load.py --servers {args.servers} --sets {args.sets} "
                       f"--loads {args.loads} --repeats {args.repeats}"
                       + (f" --profile-engine {args.profile_engine}" if args.profile_engine else "")}
    runs: dict[str, list[dict]] = {}
    for repeat, name in turned_round(args.servers.split(","), args.repeats):
        try:
            cells = measure(servers(model_dir)[name], sets, loads, model_dir, args.out / name / f"r{repeat}",
                            args.client_nice, profile)
        except Exception as exc:  # noqa: BLE001 - a server that did not start: record and go on
            cells = {"error": f"{type(exc).__name__}: {str(exc)[-300:]}"}
        runs.setdefault(name, []).append(cells)
        write_summary(runs, sets, loads, args.out, meta)  # after every server: a stopped run keeps what it measured
    return 0


if __name__ == "__main__":
    sys.exit(main())
