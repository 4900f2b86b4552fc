"""Overload and soak benchmark for issue 6: serve_app on 127.0.0.1, bounded in time, stops what it starts.

1. capacity: closed loop at `--capacity-users` users (= the admission limit): TTFT p99 and request rate;
2. overload: open-loop Poisson arrivals at `--overload-factor` x that rate for `--overload-s` seconds:
   admitted requests' TTFT p99 against the capacity value (target <= 2x), 429 latency (target p99 <= 50 ms);
3. soak: closed loop at half the admission limit for `--soak-s` seconds while the resident memory of
   every process of the server's tree is sampled: growth after warm-up (target < 5%), and every
   request ends complete or with an explicit error (none hung or lost).

    .venv/bin/python benchmarks/overload_soak.py                      # 10-minute soak, ~15 minutes in all
    .venv/bin/python benchmarks/overload_soak.py --soak-s 60 --out /tmp/short
    .venv/bin/python benchmarks/overload_soak.py --summarise-only     # starts nothing: tables from <out>.json

Writes <out>.json and <out>.md (default results/overload_soak). The JSON keeps the raw samples (TTFTs, 429
latencies, every process's memory series) under "samples", and every number in the tables is computed from
them by `summarise` with serve_app.stats, so `--summarise-only` rebuilds the tables without a server. One
definition throughout: TTFT is send to first text of a completed request in both the capacity and the overload
phase, and every percentile is serve_app.stats' linear interpolation. Memory series are keyed by pid (Ray
retitles its workers while they run a call), each labelled with the first name seen.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadtest.config import LoadTestConfig  # noqa: E402
from loadtest.experiment import records_of, run_experiment  # noqa: E402
from loadtest.records import RequestRecord  # noqa: E402
from loadtest.resilience import (  # noqa: E402
    MemorySampler,
    admitted_ttfts_ms,
    outcome_counts,
    process_tree,
    rejection_latencies_ms,
    series_from_raw,
    series_growth,
)
from serve_app.stats import percentile_of, tail_label, tail_value  # noqa: E402
import tables  # noqa: E402  (benchmarks/, beside this script)
from harness import applied_nice, machine, raise_priority, stop_process_group  # noqa: E402

SERVER_YAML = """\
model: {{source: default}}
engine: {{dtype: float32, max_model_len: 2048, max_num_seqs: {max_num_seqs}, enforce_eager: true, cpu_kvcache_space_gib: 1}}
admission: {{max_in_flight_requests: {limit}, request_timeout_s: 120, retry_after_s: 1}}
"""


def start_server(port: int, limit: int, workdir: Path) -> subprocess.Popen:
    config = workdir / "overload_soak.yaml"
    config.write_text(SERVER_YAML.format(limit=limit, max_num_seqs=limit))
    log = open(workdir / "server.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "serve_app.cli", "serve", "--config", str(config), "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"server exited early; see {workdir / 'server.log'}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(2)
    stop_process_group(server)
    raise TimeoutError("server did not become healthy in 600 s")


def load(base_url: str, tokenizer: str, **overrides) -> dict:
    config = LoadTestConfig(base_url=base_url, endpoint="completions", input_tokens=64, max_tokens=32,
                            ignore_eos=True, tokenizer=tokenizer, request_timeout_s=180, **overrides)
    return run_experiment(config, progress=False)


def after_warmup(records: list[RequestRecord], warmup_requests: int) -> list[RequestRecord]:
    """The records a closed-loop run measures (loadtest's window without warmup_s / cooldown_s): all but the first
    `warmup_requests` by arrival."""
    return sorted(records, key=lambda r: r.scheduled_s if r.scheduled_s is not None else r.send_s)[warmup_requests:]


def validity(result: dict) -> dict:
    """The load tester's own verdict on a phase (its event loop kept up: loop lag, client CPU)."""
    checked = result.get("validity") or {}
    return {"valid": bool(checked.get("valid")), "reasons": checked.get("reasons", [])}


def run(args: argparse.Namespace) -> dict:
    """Measure, keeping the raw samples; `summarise` derives every reported number from them."""
    from serve_app.config import ModelConfig
    from serve_app.platform.models import resolve_model_path

    tokenizer = resolve_model_path(ModelConfig())
    base_url = f"http://127.0.0.1:{args.port}"
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(args.port, args.capacity_users, Path(tmp))
        raise_priority(args.client_nice)  # this process is the load tester; the server started before keeps its own
        try:
            load(base_url, tokenizer, concurrency=2, num_requests=4)  # warm-up
            capacity = load(base_url, tokenizer, concurrency=args.capacity_users,
                            num_requests=3 * args.capacity_users, warmup_requests=args.capacity_users)
            capacity_rps = capacity["summary"]["request_throughput_rps"]
            overload_rate = args.overload_factor * capacity_rps
            overload = load(base_url, tokenizer, mode="open", rate_rps=overload_rate, duration_s=args.overload_s,
                            seed=1)
            with MemorySampler(lambda: process_tree(server.pid), interval_s=args.sample_s) as sampler:
                soak = load(base_url, tokenizer, concurrency=max(1, args.capacity_users // 2), duration_s=args.soak_s)
        finally:
            stop_process_group(server)
    records = records_of(overload)
    return summarise({
        "measured_at": time.strftime("%Y-%m-%d %H:%M"),
        "machine": {**machine(), "cpus": os.cpu_count(), "load_average_1m_at_end": os.getloadavg()[0]},
        "args": {**vars(args), "client_nice": applied_nice(args.client_nice)},
        "load_tester": {"capacity": validity(capacity), "overload": validity(overload), "soak": validity(soak)},
        "capacity": {"users": args.capacity_users, "request_rate_rps": capacity_rps,
                     "output_tok_s": capacity["summary"]["output_throughput_tps"]},
        "overload": {"offered_rate_rps": overload_rate, "outcomes": outcome_counts(records)},
        "soak": {"duration_s": args.soak_s, "outcomes": outcome_counts(records_of(soak)),
                 "output_tok_s": soak["summary"]["output_throughput_tps"]},
        "samples": {
            "capacity_ttft_ms": admitted_ttfts_ms(after_warmup(records_of(capacity), args.capacity_users)),
            "admitted_ttft_ms": admitted_ttfts_ms(records),
            "rejection_latency_ms": rejection_latencies_ms(records),
            "memory": sampler.raw(),
        },
    })


def summarise(result: dict, warmup_fraction: float = 0.2) -> dict:
    """Fill in every derived number of `result` from its raw `samples` (pure; percentiles from serve_app.stats)."""
    samples = result["samples"]
    # A tail is a p99 only over 200+ samples, else the slowest of them ("max of N"), and says which.
    capacity_tail = tail_value(samples["capacity_ttft_ms"])
    admitted_tail = tail_value(samples["admitted_ttft_ms"])
    result["capacity"].update({"ttft_tail_ms": capacity_tail,
                               "ttft_tail": tail_label(len(samples["capacity_ttft_ms"]))})
    result["overload"].update({
        "admitted_ttft_tail_ms": admitted_tail, "admitted_ttft_tail": tail_label(len(samples["admitted_ttft_ms"])),
        "admitted_ttft_tail_ratio": admitted_tail / capacity_tail if admitted_tail and capacity_tail else None,
        "rejection_latency_p50_ms": percentile_of(samples["rejection_latency_ms"], 50),
        "rejection_latency_tail_ms": tail_value(samples["rejection_latency_ms"]),
        "rejection_latency_tail": tail_label(len(samples["rejection_latency_ms"])),
    })
    memory = {pid: series_growth(series, warmup_fraction)
              for pid, series in series_from_raw(samples["memory"]).items() if series.rss_mb}
    growths = [m["growth"] for m in memory.values() if m["growth"] is not None]
    result["soak"].update({
        "max_memory_growth": max(growths) if growths else None,
        "memory": memory,
        "memory_over_50mb": {pid: m for pid, m in memory.items() if m["last_mb"] >= 50},  # not tiny helpers
    })
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8013)
    parser.add_argument("--capacity-users", type=int, default=16, help="also the admission limit")
    parser.add_argument("--overload-factor", type=float, default=5.0)
    parser.add_argument("--overload-s", type=float, default=60.0)
    parser.add_argument("--soak-s", type=float, default=600.0)
    parser.add_argument("--sample-s", type=float, default=5.0)
    parser.add_argument("--out", default="results/overload_soak")
    parser.add_argument("--client-nice", type=int, default=-10,
                        help="niceness increment of the load tester (this process; negative: runs before the server)")
    parser.add_argument("--summarise-only", action="store_true",
                        help="start nothing: recompute <out>.json's numbers from its raw samples, rewrite <out>.md")
    args = parser.parse_args()
    out = Path(args.out)
    if args.summarise_only:
        result = json.loads(out.with_suffix(".json").read_text())
        if "samples" not in result:
            print(f"{out.with_suffix('.json')} (measured {result.get('measured_at')}) holds summaries only, no raw "
                  "samples: its tables cannot be recomputed; re-run the benchmark.", file=sys.stderr)
            return 2
        result = summarise(result)
    else:
        result = run(args)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    out.with_suffix(".md").write_text(tables.overload_soak(result))
    print(tables.overload_soak(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
