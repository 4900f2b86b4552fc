"""Goodput under overload: the share of requests that meet TTFT <= 2 s and TPOT <= 200 ms at 1x, 2x and 5x the
engine's capacity, for bare `vllm serve`, serve_app (tenancy on, a 2 s TTFT target: deadline-aware admission)
and Ray Serve LLM, one server at a time, same model, dtype and engine arguments (max_num_seqs 8).

Capacity is measured once, on the first server (bare vLLM): the highest Poisson rate at which it meets both
targets for >= 90% of requests, searched over fractions of its closed-loop throughput at max_num_seqs users
(`capacity_rps`). Each load is then an open loop of Poisson arrivals at factor x capacity for `--duration-s` seconds; a
request is good when it completes within both targets (refusals and timeouts count against it). Also reported
per server and load: how refusals were answered (429 latency p50/p99 at the client: issue 16's fast-refusal
target is 10 / 50 ms at 5x), whether anything admitted was lost (admitted = not refused; lost = admitted and
neither completed nor ended with an error the client saw), and for serve_app the TTFT predictor's error
(predicted at admission, carried in the response's `timings.predicted_ttft_ms`, against the client's TTFT).

    .venv/bin/python benchmarks/goodput.py                          # ~25 min on 2 cores
    .venv/bin/python benchmarks/goodput.py --servers serve_app --capacity-rps 0.8 --factors 2
    .venv/bin/python benchmarks/goodput.py --summarise-only
    bash benchmarks/install_ray_serve_llm.sh                        # once, for the ray_serve_llm row

Writes results/goodput/<server>/x<factor>.json (raw records), summary.json and summary.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadtest.config import LoadTestConfig  # noqa: E402
from loadtest.experiment import records_of, run_experiment  # noqa: E402
from loadtest.resilience import outcome_counts, rejection_latencies_ms  # noqa: E402
from serve_app.stats import percentile_of  # noqa: E402
from serve_app.tenancy.ttft_predictor import PredictionErrors  # noqa: E402
from harness import (  # noqa: E402  (benchmarks/, beside this script)
    NAME,
    PORT,
    RAYLLM_PY,
    REPO,
    VENV_PY,
    Server,
    machine,
    running,
)

MAX_NUM_SEQS = 8  # TPOT at a full batch ~90 ms here: the TPOT target is met by the engine; TTFT is what queues
CAPACITY_SEARCH = (0.9, 0.75, 0.6, 0.45)
CAPACITY_PROBE_S = 30.0
TTFT_SLO_MS, TPOT_SLO_MS = 2000.0, 200.0
INPUT_TOKENS, OUTPUT_TOKENS = 128, 64
REQUEST_TIMEOUT_S = 60
ENGINE = (f"{{dtype: float32, max_model_len: 2048, max_num_seqs: {MAX_NUM_SEQS}, enforce_eager: true, "
          "cpu_kvcache_space_gib: 1, speculation: {mode: 'off'}}")
SERVE_APP_YAML = f"""\
model: {{source: default}}
engine: {ENGINE}
admission: {{request_timeout_s: {REQUEST_TIMEOUT_S}, max_in_flight_requests: 4096}}
tenancy: {{enabled: true, limits_backend: local, reserved_slots: 0, max_queue_wait_s: {REQUEST_TIMEOUT_S},
          default_tenant: {{name: default, ttft_slo_ms: {TTFT_SLO_MS:.0f}}}}}
"""
SERVERS = ("vllm", "serve_app", "serve_app_haproxy", "ray_serve_llm")


def servers(model_dir: str) -> dict[str, Server]:
    return {s.name: s for s in [
        Server("vllm", [str(VENV_PY), str(REPO / "scripts/vllm_cli.py"), "serve", model_dir, "--served-model-name", NAME,
                        "--host", "127.0.0.1", "--port", str(PORT), "--dtype", "float32", "--max-model-len", "2048",
                        "--max-num-seqs", str(MAX_NUM_SEQS), "--enforce-eager"],
               env={"VLLM_CPU_KVCACHE_SPACE": "1"}, uses_ray=False),
        Server("serve_app", [str(REPO / ".venv/bin/serve-app"), "serve", "--port", str(PORT), "--config"],
               yaml=SERVE_APP_YAML),
        # The same with Ray's HAProxy in front instead of its Python proxy (config ray_serve_haproxy).
        Server("serve_app_haproxy", [str(REPO / ".venv/bin/serve-app"), "serve", "--port", str(PORT), "--config"],
               yaml=SERVE_APP_YAML + "ray_serve_haproxy: true\n"),
        Server("ray_serve_llm", [str(RAYLLM_PY), str(REPO / "benchmarks/ray_serve_llm_server.py"), model_dir, NAME,
                                 str(PORT), str(MAX_NUM_SEQS)],
               env={"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING": "1",
                    "RAY_SERVE_ENABLE_HA_PROXY": "1"}),
    ]}


def load(model_dir: str, **overrides) -> dict:
    config = LoadTestConfig(base_url=f"http://127.0.0.1:{PORT}", endpoint="completions", model=NAME,
                            input_tokens=INPUT_TOKENS, max_tokens=OUTPUT_TOKENS, ignore_eos=True, tokenizer=model_dir,
                            request_timeout_s=REQUEST_TIMEOUT_S, slos={"ttft_ms": TTFT_SLO_MS, "tpot_ms": TPOT_SLO_MS},
                            **overrides)
    return run_experiment(config, progress=False)


def capacity_rps(model_dir: str, out: Path) -> dict:
    """The highest Poisson rate at which this server meets both targets for >= 90% of requests, searched over
    fractions of its closed-loop throughput at max_num_seqs users (a full batch). At the full-batch throughput
    itself the queue is critically loaded (utilisation 1) and grows without bound."""
    load(model_dir, concurrency=2, num_requests=4)  # warm-up
    closed = load(model_dir, concurrency=MAX_NUM_SEQS, num_requests=4 * MAX_NUM_SEQS, warmup_requests=MAX_NUM_SEQS)
    throughput = closed["summary"]["request_throughput_rps"]
    search = {}
    for fraction in CAPACITY_SEARCH:
        result = load(model_dir, mode="open", rate_rps=fraction * throughput, duration_s=CAPACITY_PROBE_S, seed=2)
        search[f"{fraction:g}"] = good = result["summary"]["goodput"]["good_fraction"] or 0.0
        print(f"capacity probe {fraction:g} x {throughput:.2f} req/s: {good * 100:.0f}% good", flush=True)
        if good >= 0.9:
            return {"rps": fraction * throughput, "closed_loop_rps": throughput, "search": search}
    return {"rps": CAPACITY_SEARCH[-1] * throughput, "closed_loop_rps": throughput, "search": search}


def idle_refusal_ms(num: int = 50) -> dict:
    """The refusal path's floor: `num` sequential requests to the idle server with a 1 ms TTFT target (each
    refused as unmeetable), send to answer at the client."""
    import httpx

    latencies = []
    with httpx.Client(base_url=f"http://127.0.0.1:{PORT}", timeout=30) as client:
        for _ in range(num):
            start = time.perf_counter()
            response = client.post("/v1/completions", headers={"x-ttft-slo-ms": "1"},
                                   json={"model": NAME, "prompt": "Hello " * 100, "max_tokens": OUTPUT_TOKENS})
            latencies.append((time.perf_counter() - start) * 1000.0)
            assert response.status_code == 429, response.text[:200]
    return {"n": num, "p50_ms": percentile_of(latencies, 50), "p99_ms": percentile_of(latencies, 99)}


def judge(result: dict) -> dict:
    """The figures of one open-loop run, from its raw records."""
    records = records_of(result)
    summary = result["summary"]
    counts = outcome_counts(records)
    refused = [r for r in records if r.status_code in (429, 503)]
    # Refused on arrival (the fast path) vs refused after waiting for a slot past the TTFT target's budget.
    waited = [r for r in records if r.status_code == 429 and "deadline_missed_in_queue" in (r.error or "")]
    rejections = rejection_latencies_ms([r for r in records if r not in waited])
    errors = PredictionErrors()
    for r in records:
        predicted = (r.timings_ms or {}).get("predicted_ttft_ms")
        if predicted is not None and r.ok and r.first_text_s is not None:
            errors.record(predicted / 1000.0, r.first_text_s - r.send_s)
    latency = summary["latency_ms"]
    return {
        "offered": len(records),
        "good_fraction": summary["goodput"]["good_fraction"],
        "goodput_rps": summary["goodput"]["goodput_rps"],
        "outcomes": counts,
        "refused": len(refused),
        # Admitted and then neither completed nor ended with an error the client saw (hung past the client's
        # timeout counts separately: `outcomes.hung`).
        "admitted_lost": counts["lost"],
        "admitted_ttft_p50_ms": (latency["ttft"].get("p50") or {}).get("value"),
        "admitted_ttft_p99_ms": (latency["ttft"].get("p99") or {}).get("value"),
        "tpot_p50_ms": (latency["tpot"].get("p50") or {}).get("value"),
        "refused_after_waiting": len(waited),
        "refusal_p50_ms": percentile_of(rejections, 50) if rejections else None,
        "refusal_p99_ms": percentile_of(rejections, 99) if rejections else None,
        "prediction": errors.summary() if len(errors) else None,
    }


def fmt(value, digits: int = 0, scale: float = 1.0) -> str:
    return "-" if value is None else f"{value * scale:.{digits}f}"


def write_summary(data: dict, out: Path) -> None:
    (out / "summary.json").write_text(json.dumps(data, indent=1))
    meta, rows = data["meta"], data["results"]
    factors = data["factors"]
    lines = ["# Goodput under overload", "",
             f"{meta['cpu']}, {meta['date']}; SmolLM2-135M-Instruct float32, eager, max_num_seqs {MAX_NUM_SEQS}, "
             f"speculation off; {INPUT_TOKENS} prompt + {OUTPUT_TOKENS} output tokens (ignore_eos); Poisson arrivals "
             f"for {data['duration_s']:.0f} s per load; capacity {data['capacity_rps']:.2f} req/s (the highest rate at which "
             f"bare vLLM has >= 90% good requests: {(data.get('capacity') or {}).get('search')} of its closed-loop "
             f"throughput {(data.get('capacity') or {}).get('closed_loop_rps') or 0:.2f} req/s at {MAX_NUM_SEQS} users). Good: TTFT <= {TTFT_SLO_MS:.0f} ms and TPOT <= {TPOT_SLO_MS:.0f} ms. "
             "Command: `.venv/bin/python benchmarks/goodput.py`.", "",
             f"| server | load | offered | good % | goodput req/s | complete / refused (429, 503) / other error / client timeout ({REQUEST_TIMEOUT_S} s) / lost | "
             "admitted TTFT p50 / p99 ms | TPOT p50 ms | refused on arrival: p50 / p99 ms | refused after waiting |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, by_factor in rows.items():
        if "error" in by_factor:
            lines.append(f"| {name} | {by_factor['error'][:120]} ||||||||")
            continue
        for factor in factors:
            r = by_factor.get(f"x{factor:g}")
            if r is None or "error" in r:
                lines.append(f"| {name} | {factor:g}x | {(r or {}).get('error', 'not run')[:120]} |||||||")
                continue
            o = r["outcomes"]
            lines.append(
                f"| {name} | {factor:g}x | {r['offered']} | {fmt(r['good_fraction'], 1, 100)} | {fmt(r['goodput_rps'], 2)} | "
                f"{o['complete']} / {r['refused']} / {o['error'] - (r['refused'] - o['rejected'])} / {o['hung']} / "
                f"{o['lost']} | {fmt(r['admitted_ttft_p50_ms'])} / {fmt(r['admitted_ttft_p99_ms'])} | "
                f"{fmt(r['tpot_p50_ms'])} | {fmt(r['refusal_p50_ms'], 1)} / {fmt(r['refusal_p99_ms'], 1)} | "
                f"{r.get('refused_after_waiting', 0)} |")
    lines += ["", "Targets (issue 16):", ""]

    def good(name: str, factor: float):
        return ((rows.get(name) or {}).get(f"x{factor:g}") or {}).get("good_fraction")

    ours, base = good("serve_app", 2), good("vllm", 2)
    if ours is not None and base is not None:
        ratio = ours / base if base > 0 else float("inf")
        lines.append(f"- 2x capacity: serve_app goodput {ours * 100:.1f}% vs vLLM {base * 100:.1f}% = "
                     f"{ratio:.1f}x (target >= 2x: {'met' if ratio >= 2 else 'not met'})")
    for name in ("serve_app", "serve_app_haproxy"):
        five = (rows.get(name) or {}).get("x5") or {}
        if five.get("refusal_p50_ms") is None:
            continue
        met = five["refusal_p50_ms"] <= 10 and five["refusal_p99_ms"] <= 50
        idle = (rows.get(name) or {}).get("idle_refusal")
        floor = f"; the same refusal on the idle server: p50 {idle['p50_ms']:.1f} ms, p99 {idle['p99_ms']:.1f} ms" if idle else ""
        lines.append(f"- 5x capacity: {name} 429 on arrival at the client p50 {five['refusal_p50_ms']:.1f} ms, p99 "
                     f"{five['refusal_p99_ms']:.1f} ms (target 10 / 50 ms: {'met' if met else 'not met'}){floor}")
    lost = sum(((rows.get("serve_app") or {}).get(f"x{f:g}") or {}).get("admitted_lost", 0) for f in factors)
    lines.append(f"- admitted and lost by serve_app, all loads: {lost}")
    lines += ["", "TTFT predictor (serve_app; predicted at admission vs measured at the client, admitted requests):", "",
              "| load | n | mean error ms (+ = pessimistic) | abs error p50 / p90 / p99 ms | relative error p50 / p90 |",
              "|---|---|---|---|---|"]
    for factor in factors:
        p = ((rows.get("serve_app") or {}).get(f"x{factor:g}") or {}).get("prediction")
        if p:
            lines.append(f"| {factor:g}x | {p['n']} | {fmt(p['mean_error_s'], 0, 1000)} | {fmt(p['abs_error_p50_s'], 0, 1000)} / "
                         f"{fmt(p['abs_error_p90_s'], 0, 1000)} / {fmt(p['abs_error_p99_s'], 0, 1000)} | "
                         f"{fmt(p['rel_error_p50'], 2)} / {fmt(p['rel_error_p90'], 2)} |")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--factors", default="1,2,5")
    parser.add_argument("--duration-s", type=float, default=40.0)
    parser.add_argument("--capacity-rps", type=float, help="skip measuring capacity; use this rate for 1x")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "goodput")
    parser.add_argument("--summarise-only", action="store_true", help="rewrite summary.md from summary.json")
    args = parser.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    if args.summarise_only:  # every row judged again from the raw records kept beside the summary
        data = json.loads((out / "summary.json").read_text())
        for name, rows in data["results"].items():
            for factor in data["factors"]:
                raw = out / name / f"x{factor:g}.json"
                if raw.exists():
                    rows[f"x{factor:g}"] = judge(json.loads(raw.read_text()))
        write_summary(data, out)
        return 0
    from serve_app.config import AppConfig
    from serve_app.platform.models import resolve_model_path

    model_dir = resolve_model_path(AppConfig().model)
    factors = [float(f) for f in args.factors.split(",")]
    previous = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else {}
    data = {"meta": machine(), "factors": factors, "duration_s": args.duration_s,
            "capacity_rps": args.capacity_rps, "results": previous.get("results", {})}
    if args.capacity_rps is not None and previous.get("capacity_rps") == args.capacity_rps:
        data["capacity"] = previous.get("capacity")  # re-running some servers at the measured capacity
    known = servers(model_dir)
    for name in args.servers.split(","):
        if name == "ray_serve_llm" and not RAYLLM_PY.exists():
            data["results"][name] = {"error": "no .venv-rayllm: run benchmarks/install_ray_serve_llm.sh"}
            continue
        rows: dict = {}
        try:
            with running(known[name], out / name):
                if data["capacity_rps"] is None:
                    data["capacity"] = capacity_rps(model_dir, out)
                    data["capacity_rps"] = data["capacity"]["rps"]
                    print("capacity", data["capacity_rps"], "req/s", flush=True)
                else:
                    load(model_dir, concurrency=2, num_requests=4)  # warm-up
                if name.startswith("serve_app"):
                    rows["idle_refusal"] = idle_refusal_ms()
                    print("idle refusal", rows["idle_refusal"], flush=True)
                for factor in factors:
                    try:
                        result = load(model_dir, mode="open", rate_rps=factor * data["capacity_rps"],
                                      duration_s=args.duration_s, seed=1)
                        (out / name / f"x{factor:g}.json").write_text(json.dumps(result))
                        rows[f"x{factor:g}"] = judge(result)
                    except Exception as exc:  # noqa: BLE001 - record and go on with the other loads
                        rows[f"x{factor:g}"] = {"error": f"{type(exc).__name__}: {str(exc)[-300:]}"}
                    print(name, factor, rows[f"x{factor:g}"], flush=True)
        except Exception as exc:  # noqa: BLE001
            rows = {"error": f"{type(exc).__name__}: {str(exc)[-300:]}"}
            print(name, "failed:", exc, flush=True)
        data["results"][name] = rows
        write_summary(data, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
