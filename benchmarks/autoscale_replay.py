"""Autoscaling replays on a fake GPU cluster (issue 28): serve_app's latency-target policy against Ray Serve's
request-based policy and the offline lower bound, on the same traces and simulated engine profile.

    .venv/bin/python benchmarks/autoscale_replay.py --trace step_4x --policy latency_target
    .venv/bin/python benchmarks/autoscale_replay.py --trace step_4x --policy ongoing_requests
    .venv/bin/python benchmarks/autoscale_replay.py                   # the 4x step, both policies (~18 min)
    .venv/bin/python benchmarks/autoscale_replay.py --report          # tables + plots from the saved runs
    .venv/bin/python benchmarks/autoscale_replay.py --quick            # 90 s trace, short delays, both policies

Each run starts its own cluster (serve_app/platform/fake_gpu_cluster.py: a CPU head, GPU nodes of {"GPU": 1}
that take `--node-start-delay-s` to boot and are given back when idle), deploys serve_app with
`engine.backend: simulated` (one replica per GPU, loading for `--model-load-s`), replays the trace open loop
(loadtest/replay.py) and samples replicas and GPU nodes every second. The lower bound is computed, not run
(serve_app/autoscaling/lower_bound.py). Every run is saved as runs/<trace>__<policy>.json; --report folds the
saved runs into autoscale_replay.json / .md and one plot per trace.

Time dilation (honest compression): Ray's HTTP proxy on 2 cores carries a few hundred tokens a second, far
below one H100's rate. The profile is the H100 Llama-3.1-8B one with `step_time_scale` 10 (every engine step
ten times longer) and `max_num_seqs` 8, so a replica serves about 1.8 req/s of the traces and a 4x step needs
several GPUs; the TTFT / TPOT targets are stated for that dilated engine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from harness import REPO, machine

sys.path.insert(0, str(REPO))
from loadtest.replay import per_second_series, plan_replay, replay, summarize, ttft_ms  # noqa: E402
from loadtest.workload import PromptFactory  # noqa: E402
from serve_app.platform.models import resolve_model_path  # noqa: E402
from loadtest.traces.format import Trace, read_trace  # noqa: E402
from serve_app.autoscaling.lower_bound import BoundRequest, ReplicaTiming, lower_bound_replicas  # noqa: E402

TRACES = ("step_4x", "bursty_cv3", "diurnal", "scale_from_zero")
POLICIES = ("latency_target", "ongoing_requests")
APP = "replay"
MODEL_DEPLOYMENT = "ModelServer"


@dataclass(frozen=True)
class RunSpec:
    trace: str
    policy: str
    node_start_delay_s: float = 60.0
    model_load_s: float = 20.0
    profile: str = "gpu-h100-llama3.1-8b"
    step_time_scale: float = 10.0
    max_num_seqs: int = 8
    ttft_p99_target_ms: float = 1500.0
    tpot_p99_target_ms: float = 100.0
    max_replicas: int = 8
    upscale_delay_s: float = 5.0
    downscale_delay_s: float = 45.0
    drain_s: float = 20.0
    # "deadline": serve_app's deadline admission (tenancy, TTFT target = the run's): a request that would miss
    # it gets a fast 429 with Retry-After, and the refused load still reaches the policy (autoscaling/shed_demand.py).
    # "queue": every request waits its turn, as with Ray Serve alone.
    admission: str = "queue"
    # Where the ingress runs: "separate" (its own deployment: one gate over all model replicas) or "with_model"
    # (inside each model replica: each judges only its own slots). Scale from zero needs "separate".
    ingress_placement: str = "separate"

    @property
    def run_name(self) -> str:
        name = f"{self.trace}__{self.policy}"
        if self.admission != default_admission(self.policy):
            name += f"__{self.admission}"
        if self.ingress_placement != default_placement(self.policy, self.trace):
            name += f"__{self.ingress_placement}"
        return name

    @property
    def min_replicas(self) -> int:
        return 0 if self.trace == "scale_from_zero" else 1

    @property
    def target_ongoing_requests(self) -> float:
        # Ray's docs: set the target from a load test against the latency objective, lower for latency-sensitive
        # work. The batch a replica runs within the TPOT target is max_num_seqs here; 3/4 of it leaves headroom.
        return 0.75 * self.max_num_seqs


def default_admission(policy: str) -> str:
    """Each policy with the admission its stack has: serve_app's with deadline admission, Ray Serve's without."""
    return "deadline" if policy == "latency_target" else "queue"


def spec_of(run: dict) -> RunSpec:
    """A saved run's spec; runs saved before `ingress_placement` was recorded ran with_model unless from zero."""
    legacy = "separate" if run["spec"]["trace"] == "scale_from_zero" else "with_model"
    return RunSpec(**{"ingress_placement": legacy, **run["spec"]})


def default_placement(policy: str, trace: str) -> str:
    """serve_app's policy with the ingress apart (its gate sees every replica, the placement its docs advise for
    autoscaling); Ray Serve's with the ingress inside the model replica, as the earlier runs had it."""
    return "separate" if policy == "latency_target" or trace == "scale_from_zero" else "with_model"


def app_config(spec: RunSpec) -> dict:
    """The serve_app config of one run (pure)."""
    tenancy = {"enabled": True, "limits_backend": "local", "reserved_slots": 0,
               "default_tenant": {"name": "default", "ttft_slo_ms": spec.ttft_p99_target_ms}}
    # From zero the ingress must run apart (with_model has no ingress while no model replica runs): it answers
    # the cold start's overflow with fast 429s (serve_app/ingress/cold_start.py), told how long a start takes.
    if spec.min_replicas == 0 and spec.ingress_placement != "separate":
        raise ValueError("scale from zero needs ingress_placement separate")
    cold_start = {"cold_start_s": spec.node_start_delay_s + spec.model_load_s} if spec.min_replicas == 0 else {}
    return {
        **({"tenancy": tenancy} if spec.admission == "deadline" else {}),
        "ingress_placement": spec.ingress_placement,
        "model": {"source": "tiny"},
        "engine": {"backend": "simulated", "max_num_seqs": spec.max_num_seqs, "max_model_len": 8192,
                   "simulated": {"profile": spec.profile, "load_time_s": spec.model_load_s,
                                 "max_num_seqs": spec.max_num_seqs, "step_time_scale": spec.step_time_scale}},
        "model_deployment": {
            "num_replicas": "auto", "min_replicas": spec.min_replicas, "max_replicas": spec.max_replicas,
            "num_cpus": 0.1, "num_gpus": 1, "max_ongoing_requests": 256,
            "autoscaling_policy": spec.policy, "target_ongoing_requests": spec.target_ongoing_requests,
            "upscale_delay_s": spec.upscale_delay_s, "downscale_delay_s": spec.downscale_delay_s, **cold_start,
            "latency_targets": {"ttft_p99_ms": spec.ttft_p99_target_ms, "tpot_p99_ms": spec.tpot_p99_target_ms,
                                "window_s": 15, "report_interval_s": 1, "min_samples": 5,
                                "max_waiting_per_replica": 2, "queue_lookahead_s": 10},
        },
        "admission": {"max_in_flight_requests": 512, "request_timeout_s": 600},
    }


def replica_timing(spec: RunSpec, mean_context_tokens: float) -> ReplicaTiming:
    """The profile's step time, dilated and capped as in the runs, for the lower bound."""
    from serve_app.server.simulated.profile import load_profile

    profile = load_profile(spec.profile, {"max_num_seqs": spec.max_num_seqs})
    cost = profile.cost
    scale = spec.step_time_scale / 1000.0
    return ReplicaTiming(
        decode_step_s=lambda b: scale * cost.step_ms(b, 0, int(b * mean_context_tokens)),
        prefill_s=lambda p: scale * cost.step_ms(0, p, 0),
        max_num_seqs=profile.max_num_seqs,
    )


def lower_bound_of(trace: Trace, spec: RunSpec) -> dict:
    requests = [BoundRequest(r.t_s, r.prompt_tokens, r.output_tokens) for r in trace.requests]
    context = sum(r.prompt_tokens + r.output_tokens / 2 for r in trace.requests) / max(1, len(requests))
    bound = lower_bound_replicas(requests, trace.duration_s, replica_timing(spec, context),
                                 tpot_target_ms=spec.tpot_p99_target_ms, interval_s=10.0)
    return {"interval_s": bound.interval_s, "replicas": list(bound.replicas), "gpu_seconds": bound.gpu_seconds,
            "max_batch_within_tpot": bound.max_batch_within_tpot}


class Sampler:
    """Every second: the model deployment's RUNNING / STARTING replicas and the alive GPU nodes."""

    def __init__(self, start: float):
        self.start = start
        self.rows: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import ray
        from ray import serve

        while not self._stop.is_set():
            row = {"t_s": round(time.monotonic() - self.start, 2), "running": 0, "starting": 0, "gpu_nodes": 0}
            try:
                app = serve.status().applications.get(APP)
                if app and MODEL_DEPLOYMENT in app.deployments:
                    states = app.deployments[MODEL_DEPLOYMENT].replica_states
                    row["running"] = int(states.get("RUNNING", 0))
                    row["starting"] = int(states.get("STARTING", 0)) + int(states.get("PENDING_ALLOCATION", 0))
                row["gpu_nodes"] = sum(1 for n in ray.nodes() if n["Alive"] and n["Resources"].get("GPU"))
            except Exception as exc:  # noqa: BLE001 - a missed sample is recorded, not fatal
                row["error"] = str(exc)[:200]
            self.rows.append(row)
            self._stop.wait(1.0)

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def run_one(spec: RunSpec, trace: Trace) -> dict:
    """Start a cluster, deploy, replay, sample; everything stopped before returning."""
    from ray import serve

    from serve_app.app import build_graph
    from serve_app.config import AppConfig
    from serve_app.platform.fake_gpu_cluster import (FakeGpuCluster, FakeGpuClusterSpec, free_port,
                                                       start_serve_on_one_host)

    cluster_spec = FakeGpuClusterSpec(max_gpu_nodes=spec.max_replicas, node_start_delay_s=spec.node_start_delay_s,
                                      idle_timeout_s=30.0)
    config = AppConfig.model_validate(app_config(spec))
    with FakeGpuCluster(cluster_spec) as cluster:
        port = free_port()
        start_serve_on_one_host(port)
        deploy_start = time.monotonic()
        serve.run(build_graph(config), name=APP, route_prefix="/", blocking=False)
        base_url = f"http://127.0.0.1:{port}"
        _wait_ready(base_url, spec.min_replicas, timeout_s=spec.node_start_delay_s + spec.model_load_s + 240)
        ready_s = time.monotonic() - deploy_start
        # Prompts of exactly the trace's token counts, in the served model's tokenizer (a word is ~3.8 tokens).
        plans = plan_replay(trace, seed=0, factory=PromptFactory(resolve_model_path(config.model)))
        start = time.monotonic()
        with Sampler(start) as sampler:
            records = asyncio.run(replay(plans, base_url=base_url, model=config.model.resolved_name(),
                                         timeout_s=600))
            time.sleep(spec.drain_s)
        # The latency-target policy logs each change with its reason and signals (serve_app/autoscaling/hook.py).
        decisions = cluster.serve_controller_log_lines(f"Autoscaling {MODEL_DEPLOYMENT}")
    return {"spec": asdict(spec), "deploy_ready_s": ready_s, "samples": sampler.rows, "scaling_decisions": decisions,
            "records": [r.to_dict(keep_text=False) for r in records]}


def _wait_ready(base_url: str, min_replicas: int, timeout_s: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    path = "/health" if min_replicas > 0 else "/-/routes"
    while time.monotonic() < deadline:
        try:
            if httpx.get(base_url + path, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise TimeoutError(f"{base_url} not ready in {timeout_s:g} s")


def analyze(run: dict, trace: Trace) -> dict:
    """The figures of one run (pure): target shares, p99 TTFT per minute, GPU-seconds, scale events, refusals."""
    from loadtest.records import RequestRecord
    from serve_app.stats import percentile_of

    spec = spec_of(run)
    records = [RequestRecord.from_dict(r) for r in run["records"]]
    summary = summarize(records, ttft_target_ms=spec.ttft_p99_target_ms, tpot_target_ms=spec.tpot_p99_target_ms)
    samples = run["samples"]
    # Nodes: every GPU node up (from joining to being given back: model loads, drains and idle time included).
    # Replicas: running or starting. Serving: running replicas only (what the bound counts, which has no start).
    node_gpu_s = replica_gpu_s = serving_gpu_s = 0.0
    for a, b in zip(samples, samples[1:]):
        dt = b["t_s"] - a["t_s"]
        node_gpu_s += a["gpu_nodes"] * dt
        replica_gpu_s += (a["running"] + a["starting"]) * dt
        serving_gpu_s += a["running"] * dt
    wanted = [s["running"] + s["starting"] for s in samples]
    scale_events = sum(1 for a, b in zip(wanted, wanted[1:]) if a != b)
    minutes: dict[int, list[float]] = {}
    for r in records:
        value = ttft_ms(r)
        if value is not None:
            minutes.setdefault(int(r.send_s // 60), []).append(value)
    cold_start_s = spec.node_start_delay_s + spec.model_load_s
    step_at_s = float(trace.meta.get("params", {}).get("before_s", 0.0))
    after = [r for r in records if r.send_s >= step_at_s + cold_start_s and r.status_code != 429]
    within_after = sum(1 for r in after if r.ok and (ttft_ms(r) or float("inf")) <= spec.ttft_p99_target_ms)
    first_ok = min((r for r in records if r.ok), key=lambda r: r.send_s, default=None)
    return {
        **summary,
        "ttft_p99_ms_per_minute": {m: percentile_of(v, 99) for m, v in sorted(minutes.items())},
        "share_within_ttft_after_cold_start": within_after / len(after) if after else None,
        "cold_start_s": cold_start_s,
        "first_request_ttft_ms": ttft_ms(first_ok) if first_ok else None,
        "node_gpu_seconds": round(node_gpu_s, 1),
        "replica_gpu_seconds": round(replica_gpu_s, 1),
        "serving_gpu_seconds": round(serving_gpu_s, 1),
        "scale_events": scale_events,
        "max_replicas_seen": max(wanted, default=0),
        "deploy_ready_s": run.get("deploy_ready_s"),
    }


def report(out: Path) -> dict:
    """Fold runs/*.json into autoscale_replay.json / .md and plots."""
    rows: dict[str, dict] = {}
    runs_by_trace: dict[str, dict[str, dict]] = {}
    for path in sorted((out / "runs").glob("*.json")):
        run = json.loads(path.read_text())
        spec = spec_of(run)
        trace = read_trace(REPO / "loadtest/traces" / f"{spec.trace}.jsonl")
        name = spec.run_name.split("__", 1)[1]
        runs_by_trace.setdefault(spec.trace, {})[name] = run
        figures = analyze(run, trace)
        bound = lower_bound_of(trace, spec)
        figures["lower_bound_gpu_seconds"] = bound["gpu_seconds"]
        for kind in ("node", "serving"):
            figures[f"{kind}_gpu_seconds_vs_bound"] = (figures[f"{kind}_gpu_seconds"] / bound["gpu_seconds"]
                                                       if bound["gpu_seconds"] else None)
        figures["machine"] = run.get("machine")
        rows[f"{spec.trace}/{name}"] = {"spec": asdict(spec), "figures": figures, "lower_bound": bound}
    summary = {"machine": machine(), "runs": rows}
    (out / "autoscale_replay.json").write_text(json.dumps(summary, indent=1, default=str))
    (out / "autoscale_replay.md").write_text(markdown(rows, _plots(out, runs_by_trace)))
    return summary


def markdown(rows: dict[str, dict], plots: list[str]) -> str:
    lines = ["# Autoscaling replays (fake GPU cluster, simulated engine)", "",
             "| trace / policy | within TTFT | within TTFT after cold start | within TPOT | p99 TTFT | refused (429) | "
             "failed | scale events | max replicas | GPU-s (nodes) | GPU-s (replicas) | GPU-s (serving) | lower bound GPU-s | "
             "nodes / bound | serving / bound |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def pct(v):
        return "-" if v is None else f"{100 * v:.1f}%"

    def num(v, fmt="{:,.0f}"):
        return "-" if v is None else fmt.format(v)

    for name, row in rows.items():
        f = row["figures"]
        lines.append(f"| {name} | {pct(f['share_within_ttft'])} | {pct(f['share_within_ttft_after_cold_start'])} | "
                     f"{pct(f['share_within_tpot'])} | {num(f['ttft_p99_ms'])} ms | {f['num_refused_429']} | "
                     f"{f['num_failed']} | {f['scale_events']} | {f['max_replicas_seen']} | {num(f['node_gpu_seconds'])} | "
                     f"{num(f['replica_gpu_seconds'])} | {num(f['serving_gpu_seconds'])} | "
                     f"{num(f['lower_bound_gpu_seconds'])} | {num(f['node_gpu_seconds_vs_bound'], '{:.2f}x')} | "
                     f"{num(f['serving_gpu_seconds_vs_bound'], '{:.2f}x')} |")
    lines += ["", "Refusals (429): how fast they came back and the Retry-After they carried:", ""]
    for name, row in rows.items():
        f = row["figures"]
        if f["num_refused_429"]:
            lines.append(f"- {name}: {f['num_refused_429']} refused, p99 {num(f.get('refusal_ms_p99'))} ms to the "
                         f"429, Retry-After p50 {num(f.get('retry_after_s_p50'))} s, max {num(f.get('retry_after_s_max'))} s")
    lines += ["", "p99 TTFT per minute (ms):", ""]
    for name, row in rows.items():
        per_minute = ", ".join(f"{m}: {num(v)}" for m, v in row["figures"]["ttft_p99_ms_per_minute"].items())
        lines.append(f"- {name}: {per_minute}")
    any_spec = next(iter(rows.values()))["spec"] if rows else {}
    lines += ["", f"Run settings: {json.dumps(any_spec)}", ""] + [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def _plots(out: Path, runs_by_trace: dict[str, dict[str, dict]]) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no plots", file=sys.stderr)
        return []
    from loadtest.records import RequestRecord

    names = []
    for trace_name, runs in runs_by_trace.items():
        trace = read_trace(REPO / "loadtest/traces" / f"{trace_name}.jsonl")
        fig, axes = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
        rates = trace.rate_per_interval(10.0)
        axes[0].step([10 * i for i in range(len(rates))], rates, where="post", color="black")
        axes[0].set_ylabel("arrivals (req/s)")
        spec = spec_of(next(iter(runs.values())))
        bound = lower_bound_of(trace, spec)
        axes[1].step([10 * i for i in range(len(bound["replicas"]))], bound["replicas"], where="post",
                     label="lower bound", color="grey", linestyle="--")
        for policy, run in runs.items():
            samples = run["samples"]
            axes[1].plot([s["t_s"] for s in samples], [s["running"] for s in samples], label=f"{policy} running")
            axes[1].plot([s["t_s"] for s in samples], [s["gpu_nodes"] for s in samples], alpha=0.4,
                         label=f"{policy} GPU nodes")
            series = per_second_series([RequestRecord.from_dict(r) for r in run["records"]], trace.duration_s)
            axes[2].plot([r.t_s for r in series], [r.ttft_p99_ms for r in series], ".", markersize=3, label=policy)
        axes[1].set_ylabel("replicas / nodes")
        axes[1].legend(fontsize=7)
        axes[2].axhline(spec.ttft_p99_target_ms, color="red", linestyle=":", label="TTFT target")
        axes[2].set_yscale("log")
        axes[2].set_ylabel("p99 TTFT per second (ms)")
        axes[2].set_xlabel("time (s)")
        axes[2].legend(fontsize=7)
        fig.suptitle(f"{trace_name}: {trace.meta.get('description', '')}", fontsize=9)
        fig.tight_layout()
        name = f"{trace_name}.png"
        fig.savefig(out / name, dpi=90)
        plt.close(fig)
        names.append(name)
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trace", choices=TRACES + ("step_short",))
    parser.add_argument("--policy", choices=POLICIES)
    parser.add_argument("--node-start-delay-s", type=float, default=60.0)
    parser.add_argument("--model-load-s", type=float, default=20.0)
    parser.add_argument("--admission", choices=("deadline", "queue"),
                        help="default: deadline for latency_target, queue for ongoing_requests")
    parser.add_argument("--ingress", choices=("separate", "with_model"),
                        help="default: separate for latency_target and scale from zero, with_model otherwise")
    parser.add_argument("--quick", action="store_true", help="step_short, 15 s node start, 5 s load, both policies")
    parser.add_argument("--report", action="store_true", help="only fold the saved runs into tables and plots")
    parser.add_argument("--out", type=Path,
                        help="default results/autoscale_replay; with --quick /tmp/serve_app_quick/autoscale_replay")
    args = parser.parse_args(argv)
    if args.out is None:  # a smoke pass never writes over (or beside) the README's results
        args.out = Path("/tmp/serve_app_quick/autoscale_replay") if args.quick else REPO / "results/autoscale_replay"
    if args.quick:
        args.trace, args.node_start_delay_s, args.model_load_s = "step_short", 15.0, 5.0
    if not args.report:
        # Without --trace: the 4x step, both policies (what run_all's full run calls).
        args.trace = args.trace or "step_4x"
        policies = [args.policy] if args.policy else list(POLICIES)
        trace = read_trace(REPO / "loadtest/traces" / f"{args.trace}.jsonl")
        (args.out / "runs").mkdir(parents=True, exist_ok=True)
        for policy in policies:
            spec = RunSpec(args.trace, policy, node_start_delay_s=args.node_start_delay_s,
                           model_load_s=args.model_load_s, admission=args.admission or default_admission(policy),
                           ingress_placement=args.ingress or default_placement(policy, args.trace))
            started = time.monotonic()
            run = run_one(spec, trace)
            run["machine"] = machine()
            run["wall_s"] = time.monotonic() - started
            (args.out / "runs" / f"{spec.run_name}.json").write_text(json.dumps(run))
            figures = analyze(run, trace)
            print(json.dumps({k: figures[k] for k in ("num_requests", "num_ok", "num_refused_429", "num_failed",
                                                       "share_within_ttft", "share_within_ttft_after_cold_start",
                                                       "ttft_p99_ms", "node_gpu_seconds", "scale_events")}))
    summary = report(args.out)
    print((args.out / "autoscale_replay.md").read_text())
    return 0 if summary["runs"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
