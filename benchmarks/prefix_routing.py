"""Prefix-cache-aware routing vs Ray Serve's default router (power of two choices), through HTTP.

Two replicas of the default model (float32, speculation off so that only routing differs) behind serve_app's
ingress (placement separate), one server at a time, in interleaved repeats whose order turns round every other repeat
(affinity, default, default, affinity, ...). Workload: loadtest's `shared-prefix` multi-turn chat, N long
system prompts shared by many conversations, short user turns, each turn carrying the conversation so far. With
more prompt tokens than one replica's KV cache holds but fewer than two hold, the router decides the hit rate.
Each replica's prefix-cache hits and queries come from Ray's metrics port (serve_app_replica_prefix_cache_*).
The ratios (prefix affinity / default: TTFT p50, output tokens/s) pair the repeats whose runs both ran without
errors and were judged valid by the load tester; a verdict on the target (TTFT p50 <= 0.5x) needs three such pairs.

    .venv/bin/python benchmarks/prefix_routing.py                    # 3 repeats of 64 conversations: ~2 h on 2 cores
    .venv/bin/python benchmarks/prefix_routing.py --conversations 32 # each system prompt once: ~50 min (the README's)
    .venv/bin/python benchmarks/prefix_routing.py --conversations 32 --system-prompts 16 --system-prompt-tokens 2000 \
        --out results/prefix_routing/shared_prompts                 # each system prompt twice: ~52 min (the README's)
    .venv/bin/python benchmarks/prefix_routing.py --repeats 1        # one run per router: no verdict
    .venv/bin/python benchmarks/prefix_routing.py --conversations 32 --add-repeats 1  # one more repeat after those kept
    .venv/bin/python benchmarks/prefix_routing.py --summarise-only [--out ...]  # re-render a kept run's summary

Writes <out>/<router>/r<N>/result.json, <out>/summary.{json,md} and summary.png (<out>: results/prefix_routing).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

import tables  # benchmarks/, beside this script
from harness import (NAME, PORT, REPO, VENV_PY, Server, applied_nice, machine, raise_priority,  # benchmarks/
                     running, turned_round)
from loadtest.experiment import records_of
from loadtest.metrics import request_metrics
from loadtest.records import RequestRecord
from serve_app.stats import paired_ratio_ci, percentile_of

RAY_METRICS_PORT = 18093
DEFAULT_OUT = "results/prefix_routing"  # relative to the repository
ROUTERS = ("prefix_affinity", "power_of_two")


def server(router: str) -> Server:
    engine = ("{dtype: float32, max_model_len: 4096, max_num_seqs: 16, enforce_eager: true, cpu_kvcache_space_gib: 1, "
              "speculation: {mode: 'off'}}")
    yaml = (f"models:\n  - model: {{source: default}}\n    engine: {engine}\n"
            f"    deployment: {{num_replicas: 2, num_cpus: 1, prefix_routing: {{enabled: {str(router == 'prefix_affinity').lower()}}}}}\n"
            "ingress_placement: separate\nadmission: {request_timeout_s: 600}\n")
    command = [str(REPO / ".venv/bin/serve-app"), "serve", "--port", str(PORT), "--ray-metrics-port",
               str(RAY_METRICS_PORT), "--config"]
    return Server(router, command, yaml=yaml)


def replica_prefix_cache() -> dict[str, dict[str, float]]:
    """Per replica: prefix-cache queries and hits (prompt tokens) since it started, from Ray's metrics port."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{RAY_METRICS_PORT}/metrics", timeout=10).read().decode()
    found: dict[str, dict[str, float]] = defaultdict(dict)
    for kind, labels, value in re.findall(r'^ray_serve_app_replica_prefix_cache_(queries|hits)_total\{([^}]*)\} (\S+)$',
                                          text, re.MULTILINE):
        replica = re.search(r'replica="([^"]+)"', labels)
        if replica:
            found[replica.group(1)][kind] = float(value)
    return dict(found)


def run(router: str, args: argparse.Namespace, model_dir: str, folder: Path) -> dict:
    command = [str(VENV_PY), "-m", "loadtest.cli", "run", "--base-url", f"http://127.0.0.1:{PORT}", "--endpoint", "chat",
               "--model", NAME, "--prompt-set", "shared-prefix", "--system-prompts", str(args.system_prompts),
               "--system-prompt-tokens", str(args.system_prompt_tokens), "--turns", str(args.turns),
               "--temperature", "0", "--max-tokens", str(args.max_tokens), "--concurrency", str(args.users),
               "--num-requests", str(args.conversations), "--tokenizer", model_dir, "--no-progress", "--no-plots",
               "--allow-invalid", "--out", str(folder / "loadtest")]
    with running(server(router), folder):
        subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=3600, check=True,
                       preexec_fn=lambda: raise_priority(args.client_nice))
        time.sleep(15)  # Ray exports replica metrics every few seconds
        caches = replica_prefix_cache()
    loadtest_result = json.loads((folder / "loadtest" / "result.json").read_text())
    summary, validity = loadtest_result["summary"], loadtest_result["validity"]
    latency = summary["latency_ms"]
    result = {"ttft_p50_ms": latency["ttft"]["p50"]["value"], "ttft_p99_ms": latency["ttft"]["p99"]["value"],
              "ttft_max_ms": latency["ttft"]["max"], "ttft_n": latency["ttft"]["n"],
              "tpot_p50_ms": latency["tpot"]["p50"]["value"], "output_tok_s": summary["output_throughput_tps"],
              "requests_per_s": summary.get("request_throughput_rps"), "error_rate": summary["error_rate"],
              "num_requests": summary.get("num_requests"), "client_nice": applied_nice(args.client_nice),
              **ttft_detail(loadtest_result),
              "valid": validity["valid"], "invalid_reasons": validity["reasons"], "machine": machine(),
              "replicas": {replica: {**c, "hit_rate": c.get("hits", 0) / c["queries"] if c.get("queries") else None}
                           for replica, c in caches.items()}}
    (folder / "result.json").write_text(json.dumps(result, indent=1))
    return result


def ttft_p50_by_turn(records: list[RequestRecord]) -> list[float | None]:
    """Client TTFT p50 (ms, the load tester's own TTFT) of each turn of the conversations (first, second, ...), over
    the requests that answered: a first turn finds only a system prompt another conversation left in the cache, a
    later turn its own."""
    by_turn: dict[int, list[float]] = defaultdict(list)
    for record in records:
        if (ttft := request_metrics(record).get("ttft")) is not None:
            by_turn[record.turn].append(ttft)
    return [percentile_of(by_turn.get(turn, []), 50) for turn in range(max(by_turn, default=-1) + 1)]


def ttft_detail(loadtest_result: dict) -> dict:
    """A run's mean TTFT and TTFT p50 per turn, from the load tester's result (summary and records)."""
    records = records_of(loadtest_result) if "records" in loadtest_result else []
    return {"ttft_mean_ms": loadtest_result["summary"]["latency_ms"]["ttft"]["mean"],
            "ttft_p50_by_turn_ms": ttft_p50_by_turn(records)}


def with_ttft_detail(runs: dict[str, list[dict]], out: Path) -> dict[str, list[dict]]:
    """Runs recorded before `ttft_detail` existed get it from their own load tester's result, where kept (run i of
    a router is <out>/<router>/r<i>)."""
    for router, router_runs in runs.items():
        for index, result in enumerate(router_runs):
            kept = out / router / f"r{index}" / "loadtest" / "result.json"
            if "ttft_p50_ms" in result and "ttft_p50_by_turn_ms" not in result and kept.exists():
                result.update(ttft_detail(json.loads(kept.read_text())))
    return runs


def _usable(run: dict | None) -> bool:
    """A run that finished without errors and that the load tester judged valid."""
    return bool(run) and "error" not in run and not run.get("error_rate") and bool(run.get("valid"))


def estimates(runs: dict[str, list[dict]]) -> dict:
    """Prefix affinity / default over the repeats where both runs are usable: TTFT p50 and output tokens/s."""
    pairs = [(a, b) for a, b in zip(runs.get("prefix_affinity", []), runs.get("power_of_two", []))
             if _usable(a) and _usable(b)]
    if not pairs:
        return {"num_pairs": 0}

    def ratio(value) -> dict:  # affinity / default of value(run) over the pairs
        return paired_ratio_ci([value(b) for _, b in pairs], [value(a) for a, _ in pairs]).to_dict()

    found = {"num_pairs": len(pairs), "ttft_p50": ratio(lambda r: r["ttft_p50_ms"]),
             "output_tok_s": ratio(lambda r: r["output_tok_s"])}
    if all(a.get("ttft_mean_ms") and b.get("ttft_mean_ms") for a, b in pairs):
        found["ttft_mean"] = ratio(lambda r: r["ttft_mean_ms"])
    # Per turn only where every pair has that turn answered in both runs (usable runs have no errors, so all do).
    by_turn = [r.get("ttft_p50_by_turn_ms") or [] for pair in pairs for r in pair]
    num_turns = min(len(turns) for turns in by_turn)
    if num_turns and all(turns[t] for turns in by_turn for t in range(num_turns)):
        found["ttft_p50_by_turn"] = [ratio(lambda r, t=t: r["ttft_p50_by_turn_ms"][t]) for t in range(num_turns)]
    return found


def added_repeats(kept: dict, meta: dict, routers: list[str],
                  more: int) -> tuple[dict[str, list[dict]], dict, list[tuple[int, str]]]:
    """--add-repeats: the kept runs, their meta with the repeat count raised and this command noted, and the schedule
    of the repeats after them, in the order the whole run would have had."""
    if kept["meta"].get("workload") != meta["workload"]:
        raise SystemExit(f"--add-repeats: the kept runs are of another workload ({kept['meta'].get('workload')})")
    runs = kept["runs"]
    if list(runs) != routers:
        raise SystemExit(f"--add-repeats: the kept runs are of routers {','.join(runs)}, not {','.join(routers)}")
    first = max(len(r) for r in runs.values())
    if any(len(r) != first for r in runs.values()):
        raise SystemExit("--add-repeats: the kept routers have different numbers of runs (a stopped run: rerun it "
                         "whole, or remove the last, unpaired run from summary.json)")
    command = meta["command"].replace(f" --repeats {meta['repeats']}", "")
    meta = {**kept["meta"], "repeats": first + more,
            "added": kept["meta"].get("added", []) + [f"{command} --add-repeats {more}"]}
    return runs, meta, [(r, name) for r, name in turned_round(routers, first + more) if r >= first]


def write_summary(runs: dict[str, list[dict]], out: Path, meta: dict) -> None:
    data = {"meta": meta, "runs": runs, "estimates": estimates(runs)}
    (out / "summary.json").write_text(json.dumps(data, indent=1))
    lines = ["# Prefix-cache-aware routing vs Ray Serve's default router", "",
             f"Command: `.venv/bin/python {meta.get('command', 'benchmarks/prefix_routing.py')}`; rendered by "
             "benchmarks/tables.py (prefix_routing), as in the README."]
    lines += [f"More repeats: `.venv/bin/python {command}`." for command in meta.get("added", [])]
    lines += ["", tables.prefix_routing(data)]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        # Each run a point (valid: filled, invalid or with errors: hollow); the tail is a p99 only over 200+ requests.
        fig, axes = plt.subplots(1, 3, figsize=(11, 3.5))
        for ax, title, value in ((axes[0], "TTFT p50 (ms)", lambda r: r["ttft_p50_ms"]),
                                 (axes[1], f"TTFT p99 (max of N under {tables.MIN_P99_SAMPLES} requests), ms",
                                  lambda r: r["ttft_p99_ms"] if r["ttft_n"] >= tables.MIN_P99_SAMPLES
                                  else r["ttft_max_ms"]),
                                 (axes[2], "output tokens/s", lambda r: r["output_tok_s"])):
            for x, router in enumerate(ROUTERS):
                done = [r for r in runs.get(router, []) if "ttft_p50_ms" in r]
                ax.scatter([x] * len(done), [value(r) for r in done], s=30,
                           facecolors=["C0" if _usable(r) else "none" for r in done], edgecolors="C0")
            ax.set_xticks(range(len(ROUTERS)), ROUTERS)
            ax.set_xlim(-0.5, len(ROUTERS) - 0.5)
            ax.set_title(title, fontsize=9)
        fig.tight_layout()
        fig.savefig(out / "summary.png", dpi=110)
    except Exception as exc:  # noqa: BLE001 - the table is the result; the plot is a convenience
        print("plot skipped:", exc)


def _shown(path: Path) -> str:
    """`path` as a command line would give it: relative to the repository where inside it."""
    return str(path.relative_to(REPO.resolve())) if path.is_relative_to(REPO.resolve()) else str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=DEFAULT_OUT, help="results folder, relative to the repository")
    parser.add_argument("--routers", default=",".join(ROUTERS))
    parser.add_argument("--repeats", type=int, default=3, help="interleaved: every router once per repeat")
    parser.add_argument("--system-prompts", type=int, default=32)
    parser.add_argument("--system-prompt-tokens", type=int, default=1000)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--conversations", type=int, default=64)
    parser.add_argument("--users", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--client-nice", type=int, default=-10,
                        help="niceness increment of the load tester's process (negative: runs before the servers)")
    parser.add_argument("--add-repeats", type=int, default=0,
                        help="run this many more repeats after those in OUT/summary.json (same workload), numbered "
                             "on from them and keeping their turned-round order")
    parser.add_argument("--summarise-only", action="store_true")
    args = parser.parse_args()
    out = (REPO / args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.summarise_only:
        data = json.loads((out / "summary.json").read_text())
        write_summary(with_ttft_detail(data["runs"], out), out, data["meta"])
        return
    meta = {"workload": f"{args.conversations} conversations x {args.turns} turns over {args.system_prompts} system "
                        f"prompts of ~{args.system_prompt_tokens} tokens, {args.users} users, <= {args.max_tokens} "
                        "output tokens per turn, greedy", "repeats": args.repeats,
            "order": "turned round every other repeat",
            "command": f"benchmarks/prefix_routing.py --routers {args.routers} --repeats {args.repeats} "
                       f"--conversations {args.conversations} --turns {args.turns} --users {args.users} "
                       f"--system-prompts {args.system_prompts} --system-prompt-tokens {args.system_prompt_tokens} "
                       f"--max-tokens {args.max_tokens}"
                       + ("" if out == (REPO / DEFAULT_OUT).resolve() else f" --out {_shown(out)}")}
    from serve_app.config import AppConfig
    from serve_app.platform.models import resolve_model_path

    model_dir = resolve_model_path(AppConfig().model)
    routers = args.routers.split(",")
    runs: dict[str, list[dict]] = {}
    schedule = turned_round(routers, args.repeats)
    if args.add_repeats:
        runs, meta, schedule = added_repeats(json.loads((out / "summary.json").read_text()), meta, routers,
                                             args.add_repeats)
        runs = with_ttft_detail(runs, out)
    for repeat, router in schedule:
        try:
            result = run(router, args, model_dir, out / router / f"r{repeat}")
        except Exception as exc:  # noqa: BLE001 - record and go on
            result = {"error": f"{type(exc).__name__}: {str(exc)[-300:]}"}
        runs.setdefault(router, []).append(result)
        print(router, repeat, result, flush=True)
        write_summary(runs, out, meta)  # after every run: a stopped benchmark keeps what it measured


if __name__ == "__main__":
    main()
