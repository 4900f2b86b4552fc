"""Noisy neighbour: a quiet tenant's TTFT while another tenant holds 4x the engine's max_num_seqs streams open,
and what fairness costs in throughput.

serve_app with tenancy on (fair engine slots, one reserved above max_num_seqs, prefill pacing) vs serve_app first
come first served (tenancy off), in interleaved repeats (fair, fcfs, fair, fcfs, ...: a server started afresh for
each); default model, float32, speculation off, engine max_num_seqs 8, tenants by header. Per server and repeat:
- B_alone: tenant B alone, one request at a time (--b-requests), after --b-alone-warmup-s (a fresh server's first
  requests are not its steady state: the A32_B1 phase that B is compared in runs on a server B_alone warmed);
- A_alone: tenant A alone with 32 streams for --alone-s after --alone-warmup-s (a tenant alone must be as fast as
  without tenancy);
- A32_B1: A's 32 streams and B one at a time together for --duration-s (B's TTFT ratio; total output tokens/s);
- A16_C16 (tenancy only): A (weight 1) and C (weight 2) with 16 streams each (C's share of output tokens: 2/3).
Targets: B's TTFT p99 beside A <= 1.5x alone; total output tokens/s with tenancy >= 0.95x first come first served;
A alone as fast with tenancy as without; C's share within 10% of 2/3. A tail is a p99 over 200+ of B's requests,
else "max of N"; each ratio is a geometric mean over the repeats with its 95% interval.

    .venv/bin/python benchmarks/noisy_neighbour.py                   # 3 repeats, ~45-50 min on 2 cores
    .venv/bin/python benchmarks/noisy_neighbour.py --repeats 1 --b-requests 30 --duration-s 40 --alone-s 20 \
        --out /tmp/nn_quick                                          # a smoke pass, ~8 min
    .venv/bin/python benchmarks/noisy_neighbour.py --add-repeats 3     # 3 more, beside the saved ones
    .venv/bin/python benchmarks/noisy_neighbour.py --summarise-only

Writes results/noisy_neighbour/<server>/r<N>/<run>/result.json, summary.{json,md}; the README's table is rendered
from summary.json (benchmarks/tables.py: noisy_neighbour).
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import tables  # benchmarks/, beside this script
from harness import NAME, PORT, REPO, VENV_PY, Server, applied_nice, machine, raise_priority, running
from serve_app.stats import paired_ratio_ci, percentile_of, tail_label, tail_value

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


def phase_warmup_s(run_name: str, args: argparse.Namespace) -> int:
    """The unmeasured first seconds of a phase. With two tenants, A's streams open together, before the other's,
    and their first requests take the rows and fill one engine step before pacing applies (A is alone then). A
    alone: its 32 streams' first requests, which vLLM's queue takes in together and the gate 8 at a time (40 s
    phases that counted them spread 37.7-50.5 tok/s over fresh servers of one config). B alone: the first requests
    of a fresh server (one fresh machine's first server took 0.9-2.0 s for four of them, against a median of 0.2 s)."""
    return {"A32_B1": args.beside_warmup_s, "A16_C16": args.beside_warmup_s,
            "A_alone": args.alone_warmup_s, "B_alone": args.b_alone_warmup_s}.get(run_name, 0)


def remeasure_records(earlier: list[dict], record: dict) -> list[dict]:
    """The summary's re-measure records after `record`: an earlier one keeps only the phases `record` did not
    re-measure for all of its servers and repeats (a record is dropped when none is left), so each cell names the
    commit and warm-up it was last measured with. A record without `servers` / `repeats` covers them all."""

    def covers(new: dict, old: dict, key: str) -> bool:
        return new.get(key) is None or (old.get(key) is not None and set(old[key]) <= set(new[key]))

    kept = []
    for old in earlier:
        covered = covers(record, old, "servers") and covers(record, old, "repeats")
        phases = [phase for phase in old["phases"] if not (covered and phase in record["phases"])]
        if phases:
            kept.append({**{k: v for k, v in old.items() if k != "alone_s" or "A_alone" in phases}, "phases": phases,
                         "warmup_s": {p: s for p, s in old["warmup_s"].items() if p in phases}})
    return kept + [record]


def run(name: str, run_name: str, args: argparse.Namespace, model_dir: str, folder: Path) -> dict:
    beside_s = args.duration_s if name == "serve_app_fair" else args.fcfs_duration_s
    warmup_s = phase_warmup_s(run_name, args)
    duration_s = {"A32_B1": beside_s, "B_alone": 3600}.get(run_name, args.alone_s) + warmup_s
    # B's requests in a warm-up are not measured: a few more keep at least --b-requests.
    b_requests = args.b_requests + (5 if run_name in ("A32_B1", "B_alone") and warmup_s else 0)
    command = [str(VENV_PY), "-m", "loadtest.cli", "run", "--base-url", f"http://127.0.0.1:{PORT}", "--endpoint",
               "completions", "--model", NAME, "--tenants", RUNS[run_name].format(b=b_requests),
               "--input-tokens", "128", "--max-tokens", str(args.max_tokens), "--ignore-eos", "--temperature", "0",
               "--num-requests", str(b_requests), "--duration-s", str(duration_s), "--warmup-s", str(warmup_s),
               "--tokenizer", model_dir, "--no-progress", "--no-plots", "--allow-invalid", "--out", str(folder)]
    subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1800, check=True,
                   preexec_fn=lambda: raise_priority(args.client_nice))
    return figures(json.loads((folder / "result.json").read_text()))


def figures(result: dict) -> dict:
    """Per tenant: requests, TTFTs (p50, and the tail over its own sample count), output tokens and share; in all:
    output tokens/s over the load tester's window and its self-check verdict."""
    summary, tenants = result["summary"], result["summary"]["tenants"]
    row = {}
    for name, t in tenants.items():
        warmup_s = (result.get("config") or {}).get("warmup_s") or 0.0
        ttfts = [1000 * (r["first_text_s"] - r["send_s"]) for r in result["records"]
                 if r.get("tenant") == name and r.get("status_code") == 200 and r.get("first_text_s") is not None
                 and r["send_s"] >= warmup_s]
        row[name] = {"requests": t.get("num_requests"), "ok": t.get("num_ok"), "num_429": t.get("num_429"),
                     "errors": t.get("num_errors"), "ttft_n": len(ttfts), "ttft_p50_ms": percentile_of(ttfts, 50),
                     "ttft_tail_ms": tail_value(ttfts), "ttft_tail": tail_label(len(ttfts)),
                     "output_tokens": t.get("output_tokens"), "output_token_share": t.get("output_token_share")}
    row["total"] = {"output_tokens_per_s": summary.get("output_throughput_tps"),
                    "window_s": (summary.get("window_s") or {}).get("length"), "num_ok": summary.get("num_ok"),
                    "load_tester_valid": result["validity"]["valid"], "validity_reasons": result["validity"]["reasons"]}
    return row


def _values(runs: list[dict], run_name: str, who: str, metric: str) -> list[float | None]:
    """Per repeat, `who`'s `metric` in phase `run_name`; None where the phase failed or its load tester run was
    INVALID (so that pair is left out, and only that pair)."""
    def value(phase: dict | None):
        if not phase or not (phase.get("total") or {}).get("load_tester_valid"):
            return None
        return (phase.get(who) or {}).get(metric)
    return [value(r.get(run_name)) for r in runs]


def _paired(baseline: list, candidate: list) -> dict | None:
    """The ratio candidate / baseline over the repeats where both have a figure."""
    pairs = [(a, b) for a, b in zip(baseline, candidate) if a and b]
    return paired_ratio_ci(*zip(*pairs)).to_dict() if pairs else None


def estimates(runs: dict[str, list[dict]]) -> dict:
    """The targets' figures over the repeats (pair i: repeat i; a server that failed, or a phase the load tester
    judged INVALID, is left out of the pairs it is in)."""
    def valid(server: str) -> list[dict]:
        return [{} if r.get("error") else r for r in runs.get(server, [])]
    fair, fcfs = valid("serve_app_fair"), valid("serve_app_fcfs")
    fcfs = fcfs + [{}] * (len(fair) - len(fcfs))
    tps = "output_tokens_per_s"
    shares = [s for s in _values(fair, "A16_C16", "C", "output_token_share") if s is not None]
    labels = {f"{run}_{server}": sorted({c for c in _values(rows, run, "B", "ttft_tail") if c})
              for run in ("B_alone", "A32_B1") for server, rows in (("fair", fair), ("fcfs", fcfs))}
    return {
        "b_tail_labels": labels,
        "b_tail_ratio_fair": _paired(_values(fair, "B_alone", "B", "ttft_tail_ms"),
                                     _values(fair, "A32_B1", "B", "ttft_tail_ms")),
        "b_p50_ratio_fair": _paired(_values(fair, "B_alone", "B", "ttft_p50_ms"),
                                    _values(fair, "A32_B1", "B", "ttft_p50_ms")),
        "b_tail_ratio_fcfs": _paired(_values(fcfs, "B_alone", "B", "ttft_tail_ms"),
                                     _values(fcfs, "A32_B1", "B", "ttft_tail_ms")),
        "a_alone_tps_fair_vs_fcfs": _paired(_values(fcfs, "A_alone", "total", tps),
                                            _values(fair, "A_alone", "total", tps)),
        "flood_total_tps_fair_vs_fcfs": _paired(_values(fcfs, "A32_B1", "total", tps),
                                                _values(fair, "A32_B1", "total", tps)),
        "c_share_weight_2": {"values": shares, "mean": sum(shares) / len(shares) if shares else None},
    }


def write_summary(runs: dict[str, list[dict]], out: Path, meta: dict) -> None:
    data = {"meta": meta, "runs": runs, "estimates": estimates(runs)}
    (out / "summary.json").write_text(json.dumps(data, indent=1))
    text = tables.noisy_neighbour(data)
    (out / "summary.md").write_text("# Noisy neighbour: quiet tenant B beside tenant A's 32 open streams\n\n"
                                    + text + "\n")
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(REPO / "results" / "noisy_neighbour"))
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--repeats", type=int, default=3, help="interleaved: every server once per repeat")
    parser.add_argument("--b-requests", type=int, default=60,
                        help="B's requests per phase (a p99 from 200; below, the tail is the max of N)")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--duration-s", type=int, default=280,
                        help="A32_B1's length with tenancy: B's requests must fit (about 4.4 s each beside the flood "
                             "on a 2-core EPYC without AVX-512)")
    parser.add_argument("--beside-warmup-s", type=int, default=10,
                        help="A32_B1 and A16_C16: requests sent in the first seconds, while A's streams open "
                             "together and take the rows before the other tenant's, are not measured")
    parser.add_argument("--fcfs-duration-s", type=int, default=120,
                        help="A32_B1's length first come first served (B waits out the backlog: a few requests)")
    parser.add_argument("--alone-s", type=int, default=60, help="A_alone's and A16_C16's length (after the warm-up)")
    parser.add_argument("--alone-warmup-s", type=int, default=10,
                        help="A_alone: its streams' first requests, sent in the first seconds, are not measured")
    parser.add_argument("--b-alone-warmup-s", type=int, default=3,
                        help="B alone's unmeasured first seconds (about 5 requests; 5 more are sent)")
    parser.add_argument("--client-nice", type=int, default=-10,
                        help="niceness increment of the load tester's process (negative: runs before the servers)")
    parser.add_argument("--runs", default="",
                        help=f"re-measure only these phases (of {', '.join(RUNS)}) into the existing summary, each "
                             "repeat's into its own row; the summary names the phases and the commit")
    parser.add_argument("--add-repeats", type=int, default=0,
                        help="run this many more interleaved repeats after the existing summary's (all phases); the "
                             "summary names the commit of each added repeat")
    parser.add_argument("--summarise-only", action="store_true")
    args = parser.parse_args()
    if args.add_repeats and args.runs:
        parser.error("--add-repeats runs every phase; re-measure phases (--runs) apart")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.summarise_only:
        data = json.loads((out / "summary.json").read_text())
        write_summary(data["runs"], out, data["meta"])
        return
    options = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
                       if k not in ("out", "summarise_only"))
    meta = {**machine(), "repeats": args.repeats, "client_nice": applied_nice(args.client_nice),
            "command": "benchmarks/noisy_neighbour.py " + options,
            "workload": f"completions, 128 prompt tokens, {args.max_tokens} output tokens (ignore_eos), greedy; B "
                        f"sends up to {args.b_requests} requests one at a time (B alone after a "
                        f"{args.b_alone_warmup_s} s warm-up); A32_B1 {args.duration_s} s after a "
                        f"{args.beside_warmup_s} s warm-up (the flood's streams opening; not measured) "
                        f"({args.fcfs_duration_s} s first come first served), A_alone {args.alone_s} s after a "
                        f"{args.alone_warmup_s} s warm-up, A16_C16 {args.alone_s} s after the beside warm-up; "
                        f"load tester at niceness {applied_nice(args.client_nice):+d}"}
    from serve_app.config import AppConfig
    from serve_app.platform.models import resolve_model_path

    model_dir = resolve_model_path(AppConfig().model)
    phases = args.runs.split(",") if args.runs else list(RUNS)
    runs: dict[str, list[dict]] = {}
    measured_commit = meta["commit"]
    first_repeat, num_repeats = 0, args.repeats
    if args.add_repeats:  # more repeats beside the existing ones: each added repeat's row names its commit
        previous = json.loads((out / "summary.json").read_text())
        runs = previous["runs"]
        if len({len(rows) for rows in runs.values()}) != 1:
            raise SystemExit("the saved servers have different repeat counts: pairs would not line up")
        first_repeat, num_repeats = len(runs[SERVERS[0]]), args.add_repeats
        added = {"first": first_repeat, "count": num_repeats, "commit": meta["commit"], "date": meta["date"],
                 "uncommitted": meta["uncommitted"]}
        meta = {**previous["meta"], "repeats": first_repeat + num_repeats,
                "added_repeats": previous["meta"].get("added_repeats", []) + [added]}
    elif args.runs:  # re-measure some phases into the existing summary: each re-measured phase names its commit
        previous = json.loads((out / "summary.json").read_text())
        saved_servers, saved_repeats = sorted(previous["runs"]), len(next(iter(previous["runs"].values())))
        servers, repeats = sorted(args.servers.split(",")), list(range(args.repeats))
        record = {"phases": phases, "commit": meta["commit"], "date": meta["date"], "uncommitted": meta["uncommitted"],
                  "warmup_s": {phase: phase_warmup_s(phase, args) for phase in phases},
                  # only where the re-measure left some servers or repeats as they were
                  **({"servers": servers} if servers != saved_servers else {}),
                  **({"repeats": repeats} if args.repeats < saved_repeats else {}),
                  **({"alone_s": args.alone_s} if "A_alone" in phases else {})}
        runs, meta = previous["runs"], {**previous["meta"],
                                        "remeasured": remeasure_records(previous["meta"].get("remeasured", []), record)}
    for repeat in range(first_repeat, first_repeat + num_repeats):
        for name in args.servers.split(","):
            folder = out / name / f"r{repeat}"
            row: dict = runs[name][repeat] if args.runs else {"commit": measured_commit}
            try:
                # A re-measure's server log goes beside its phases' results, not over the full run's log.
                with running(server(name), folder / "+".join(phases) if args.runs else folder):
                    for run_name in phases:
                        if run_name in TENANCY_ONLY and name != "serve_app_fair":
                            continue
                        row[run_name] = run(name, run_name, args, model_dir, folder / run_name)
                        print(repeat, name, run_name, json.dumps(row[run_name]), flush=True)
            except Exception as exc:  # noqa: BLE001 - record and go on
                row["error"] = f"{type(exc).__name__}: {str(exc)[-300:]}"
                print(repeat, name, "failed:", row["error"], flush=True)
            if not args.runs:
                runs.setdefault(name, []).append(row)
            write_summary(runs, out, meta)  # after every server: a stopped run keeps what it measured


if __name__ == "__main__":
    main()
