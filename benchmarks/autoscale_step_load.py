"""Step load against a local multi-node Ray cluster: how the model deployment's replicas follow the load.

A head node plus `--num-nodes` raylets with one {"accelerator": 1} each (standing in for GPUs) on this
machine; the serving graph with the latency-target policy; open-loop Poisson arrivals whose rate steps
through `--steps` (rate_per_s:duration_s,...). Every second it records the model replicas (running, and
all that are starting or running) and the p99 TTFT of requests that got their first token in the last
`--p99-window-s`. Writes results/autoscale_step_load.json and .png.

    .venv/bin/python benchmarks/autoscale_step_load.py                      # tiny model, ~5 minutes
    .venv/bin/python benchmarks/autoscale_step_load.py --model default --steps 0.2:60,1:180,0.2:120
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import time
from pathlib import Path

import httpx

from loadtest.sse import async_sse_data
from serve_app.config import AppConfig
from serve_app.platform.fake_gpu_cluster import add_node_with_retries, free_port, start_serve_on_one_host
from serve_app.stats import percentile_of

APP_NAME = "autoscale_bench"
MODEL_DEPLOYMENT = "ModelServer"
PROMPT = "The quick brown fox jumps over the lazy dog. " * 3
REPLICA_STATES_UP = ("STARTING", "PENDING_MIGRATION", "RUNNING", "UPDATING", "RECOVERING")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", help="model source: tiny (default) or default (SmolLM2)")
    parser.add_argument("--steps", default="1:40,8:120,1:120", help="rate_per_s:duration_s,... (open loop)")
    parser.add_argument("--num-nodes", type=int, default=2, help="accelerator nodes (= max model replicas)")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--max-num-seqs", type=int, default=4, help="engine batch: small = a queue forms early")
    parser.add_argument("--omp-bind", default=None,
                        help="engine.cpu_omp_threads_bind; 'nobind' lets replicas on one machine use every core "
                             "(vLLM's auto binding puts every replica's engine on the same core)")
    parser.add_argument("--ttft-p99-ms", type=float, default=3000.0)
    parser.add_argument("--tpot-p99-ms", type=float, default=1000.0)
    parser.add_argument("--window-s", type=float, default=10.0)
    parser.add_argument("--upscale-delay-s", type=float, default=3.0)
    parser.add_argument("--downscale-delay-s", type=float, default=15.0)
    parser.add_argument("--p99-window-s", type=float, default=10.0)
    parser.add_argument("--out", default="results/autoscale_step_load")
    parser.add_argument("--summarise-only", action="store_true",
                        help="start nothing: recompute the summary and plot from <out>.json's saved requests")
    return parser.parse_args()


def bench_config(args: argparse.Namespace) -> AppConfig:
    return AppConfig.model_validate(
        {
            "model": {"source": args.model},
            "engine": {"dtype": "float32", "max_model_len": 512, "max_num_seqs": args.max_num_seqs,
                       "enforce_eager": True, "cpu_kvcache_space_gib": 1, "cpu_omp_threads_bind": args.omp_bind},
            "model_deployment": {
                "num_replicas": "auto", "min_replicas": 1, "max_replicas": args.num_nodes, "num_cpus": 1,
                "resources": {"accelerator": 1}, "max_ongoing_requests": 128,
                "upscale_delay_s": args.upscale_delay_s, "downscale_delay_s": args.downscale_delay_s,
                "latency_targets": {"ttft_p99_ms": args.ttft_p99_ms, "tpot_p99_ms": args.tpot_p99_ms,
                                    "window_s": args.window_s, "max_waiting_per_replica": 2,
                                    "queue_lookahead_s": 5, "min_samples": 3, "report_interval_s": 0.5},
            },
            "ingress_deployment": {"num_cpus": 0.05},
            "admission": {"max_in_flight_requests": 512, "request_timeout_s": 300},
        }
    )


def replica_counts() -> tuple[int, int]:
    """(running, starting or running) model replicas."""
    from ray import serve

    app = serve.status().applications.get(APP_NAME)
    if app is None or MODEL_DEPLOYMENT not in app.deployments:
        return 0, 0
    states = {str(getattr(k, "value", k)): v for k, v in app.deployments[MODEL_DEPLOYMENT].replica_states.items()}
    return states.get("RUNNING", 0), sum(states.get(s, 0) for s in REPLICA_STATES_UP)


async def one_request(client: httpx.AsyncClient, url: str, model: str, max_tokens: int, t0: float,
                      records: list) -> None:
    """Appends its record when it starts and fills it in as it goes: the sampler sees a request's TTFT as soon
    as its first token arrives, not only once it has ended."""
    body = {"model": model, "prompt": PROMPT, "max_tokens": max_tokens, "ignore_eos": True, "stream": True}
    start = time.monotonic()
    record = {"start_s": start - t0, "ttft_ms": None, "first_token_at_s": None, "e2e_ms": None, "ok": False}
    records.append(record)
    try:
        async with client.stream("POST", url, json=body) as response:
            if response.status_code == 200:
                async for data in async_sse_data(response.aiter_bytes()):
                    if data != "[DONE]":
                        if record["first_token_at_s"] is None:
                            first_token_s = time.monotonic()
                            record["ttft_ms"] = (first_token_s - start) * 1000.0
                            record["first_token_at_s"] = first_token_s - t0
                        if '"finish_reason":"' in data.replace(" ", ""):
                            record["ok"] = True
    except httpx.HTTPError:
        pass
    record["e2e_ms"] = (time.monotonic() - start) * 1000.0


def window_ttft_p99(requests: list[dict], now_s: float, window_s: float) -> tuple[float | None, int]:
    """(p99 TTFT, count) of the requests whose first token came in [now_s - window_s, now_s]: what the sampler
    plots live, and what `--summarise-only` recomputes from the saved requests."""
    recent = [r["ttft_ms"] for r in requests
              if r["first_token_at_s"] is not None and now_s - window_s <= r["first_token_at_s"] <= now_s]
    return percentile_of(recent, 99), len(recent)


async def run_load(base_url: str, model: str, args: argparse.Namespace) -> dict:
    steps = [(float(r), float(d)) for r, d in (s.split(":") for s in args.steps.split(","))]
    rng = random.Random(0)
    records: list[dict] = []
    timeline: list[dict] = []
    t0 = time.monotonic()
    done = asyncio.Event()

    async def sampler() -> None:
        while not done.is_set():
            now = time.monotonic() - t0
            running, up = await asyncio.to_thread(replica_counts)
            p99, num_in_window = window_ttft_p99(records, now, args.p99_window_s)
            timeline.append({"t_s": now, "rate_per_s": current_rate[0], "running_replicas": running,
                             "target_replicas": up, "ttft_p99_ms": p99, "num_in_window": num_in_window})
            await asyncio.sleep(1.0)

    current_rate = [0.0]
    tasks: list[asyncio.Task] = []
    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=1000)) as client:
        sampling = asyncio.create_task(sampler())
        for rate, duration_s in steps:
            current_rate[0] = rate
            step_end = time.monotonic() + duration_s
            while True:
                await asyncio.sleep(rng.expovariate(rate))
                if time.monotonic() >= step_end:
                    break
                tasks.append(asyncio.create_task(one_request(client, f"{base_url}/v1/completions", model,
                                                             args.max_tokens, t0, records)))
        current_rate[0] = 0.0
        await asyncio.gather(*tasks)
        await asyncio.sleep(2)
        done.set()
        await sampling
    return {"steps": steps, "timeline": timeline, "requests": records}


def plot(result: dict, path: Path, ttft_target_ms: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tl = result["timeline"]
    t = [p["t_s"] for p in tl]
    fig, (ax_rate, ax_rep, ax_ttft) = plt.subplots(3, 1, sharex=True, figsize=(10, 8))
    ax_rate.step(t, [p["rate_per_s"] for p in tl], where="post")
    ax_rate.set_ylabel("offered rate (req/s)")
    ax_rep.step(t, [p["target_replicas"] for p in tl], where="post", label="starting + running")
    ax_rep.step(t, [p["running_replicas"] for p in tl], where="post", label="running")
    ax_rep.set_ylabel("model replicas")
    ax_rep.legend(loc="upper left")
    ax_ttft.plot(t, [p["ttft_p99_ms"] if p["ttft_p99_ms"] is not None else float("nan") for p in tl], label="p99 TTFT")
    ax_ttft.axhline(ttft_target_ms, color="red", linestyle="--", label="target")
    ax_ttft.set_ylabel("p99 TTFT (ms)")
    ax_ttft.set_xlabel("time (s)")
    ax_ttft.legend(loc="upper left")
    fig.suptitle("Step load: model replicas and p99 TTFT")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    args = parse_args()
    if args.summarise_only:
        summarise_only(Path(args.out))
        return
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    from serve_app.app import build_graph
    from serve_app.platform.models import resolve_model_path
    from serve_app.platform.ray_env import apply_ray_environment

    config = bench_config(args)
    resolve_model_path(config.model)
    # Ray's memory monitor kills workers (the Serve controller too) when the whole machine nears full memory,
    # whoever uses it; raylets started below inherit this and leave that to the kernel.
    os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")
    apply_ray_environment(config)  # as `serve-app serve` starts Ray (each process reads it)
    cluster = Cluster()
    try:
        add_node_with_retries(cluster, num_cpus=4, include_dashboard=False)
        for _ in range(args.num_nodes):
            add_node_with_retries(cluster, num_cpus=2, resources={"accelerator": 1})
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        port = free_port()
        start_serve_on_one_host(port)
        serve.run(build_graph(config), name=APP_NAME, route_prefix="/")
        result = asyncio.run(run_load(f"http://127.0.0.1:{port}", config.model.resolved_name(), args))
    finally:
        if ray.is_initialized():
            serve.shutdown()
        ray.shutdown()
        cluster.shutdown()

    result["summary"] = summarise(result, args.ttft_p99_ms)
    result["config"] = {**vars(args), "app_config": config.model_dump()}
    write(result, Path(args.out))


def write(result: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    plot(result, out.with_suffix(".png"), result["config"]["ttft_p99_ms"])
    print(json.dumps(result["summary"], indent=1))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")


def summarise(result: dict, ttft_target_ms: float) -> dict:
    """The summary of a run from its saved requests and timeline (pure; percentiles from serve_app.stats)."""
    requests = result["requests"]
    ttfts = [r["ttft_ms"] for r in requests if r["ttft_ms"] is not None]
    summary = {
        "num_requests": len(requests),
        "num_failed": sum(not r["ok"] for r in requests),
        "ttft_p50_ms": percentile_of(ttfts, 50),
        "ttft_p99_ms": percentile_of(ttfts, 99),
        "max_replicas_seen": max((p["target_replicas"] for p in result["timeline"]), default=0),
    }
    # After scale-up settles: requests that started in the last third of the highest-rate step.
    steps = result["steps"]
    peak = max(range(len(steps)), key=lambda i: steps[i][0])
    peak_start = sum(d for _, d in steps[:peak])
    settled_from = peak_start + 2 * steps[peak][1] / 3
    settled = [r["ttft_ms"] for r in requests
               if r["ttft_ms"] is not None and settled_from <= r["start_s"] <= peak_start + steps[peak][1]]
    summary["settled_window_s"] = [settled_from, peak_start + steps[peak][1]]
    summary["settled_ttft_p99_ms"] = percentile_of(settled, 99)
    summary["settled_under_target"] = bool(settled) and summary["settled_ttft_p99_ms"] <= ttft_target_ms
    return summary


def summarise_only(out: Path) -> None:
    """Recompute the timeline's windowed p99 and the summary from the saved requests, rewrite the JSON and plot."""
    result = json.loads(out.with_suffix(".json").read_text())
    window_s = result["config"]["p99_window_s"]
    for point in result["timeline"]:
        point["ttft_p99_ms"], point["num_in_window"] = window_ttft_p99(result["requests"], point["t_s"], window_s)
    result["summary"] = summarise(result, result["config"]["ttft_p99_ms"])
    write(result, out)


if __name__ == "__main__":
    main()
