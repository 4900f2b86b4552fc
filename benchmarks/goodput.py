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

    .venv/bin/python benchmarks/goodput.py --servers vllm,serve_app,serve_app_haproxy   # 3 repeats, ~45 min, 2 cores
    .venv/bin/python benchmarks/goodput.py --servers serve_app --capacity-rps 0.8 --factors 2 --repeats 1 --out /tmp/g
    .venv/bin/python benchmarks/goodput.py --summarise-only
    bash benchmarks/install_ray_serve_llm.sh                        # once, for the ray_serve_llm row

Interleaved repeats (vllm, serve_app, ..., vllm, serve_app, ...; each server started afresh), so that every ratio
to bare vLLM comes with a 95% interval over the repeats. Writes results/goodput/<server>/r<N>/x<factor>.json.gz
(raw records), summary.json and summary.md; the README's table is rendered from summary.json
(benchmarks/tables.py: goodput).
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadtest.config import LoadTestConfig  # noqa: E402
from loadtest.experiment import records_of, run_experiment  # noqa: E402
from loadtest.resilience import outcome_counts, rejection_latencies_ms  # noqa: E402
from serve_app.stats import paired_ratio_ci, percentile_of, tail_label, tail_value  # noqa: E402
from serve_app.tenancy.ttft_predictor import PredictionErrors  # noqa: E402
from harness import (  # noqa: E402  (benchmarks/, beside this script)
    NAME,
    PORT,
    RAYLLM_PY,
    REPO,
    VENV_PY,
    Server,
    applied_nice,
    machine,
    raise_priority,
    running,
)
from tables import goodput as goodput_table  # noqa: E402

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
    validity = result.get("validity") or {}
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
        "tpot_p50_ms": (latency["tpot"].get("p50") or {}).get("value"),
        "refused_after_waiting": len(waited),
        # Kept whole so that the summary pools them over the repeats (a p99 from 200 refusals on).
        "refusal_on_arrival_ms": [round(v, 2) for v in rejections],
        "admitted_ttft_ms": [round((r.first_text_s - r.send_s) * 1000.0, 1) for r in records
                             if r.ok and r.first_text_s is not None],
        "prediction": errors.summary() if len(errors) else None,
        "load_tester_valid": bool(validity.get("valid", True)),
        "invalid_reasons": validity.get("reasons", []),
    }


def estimate(data: dict) -> dict:
    """Over the repeats: each server's goodput against bare vLLM's in the same repeat (paired ratio, 95% CI over
    the repeats where both runs were valid and vLLM had any good request), and per server and load the pooled
    refusal latencies and admitted TTFTs (a tail is a p99 over 200+ samples, else the max of N)."""
    results, factors = data["results"], data["factors"]
    baseline = results.get("vllm") or []
    out: dict = {}
    for name, repeats in results.items():
        by_load = out[name] = {}
        for factor in factors:
            key = f"x{factor:g}"
            cells = [(i, (row or {}).get(key) or {}) for i, row in enumerate(repeats)]
            ok = [(i, c) for i, c in cells if c and "error" not in c]
            valid = [(i, c) for i, c in ok if c.get("load_tester_valid", True)]
            refusals = [v for _, c in valid for v in c.get("refusal_on_arrival_ms", [])]
            ttfts = [v for _, c in valid for v in c.get("admitted_ttft_ms", [])]
            cell = {
                "good_fraction": [c.get("good_fraction") for _, c in ok],
                "goodput_rps": [c.get("goodput_rps") for _, c in ok],
                "valid": [c.get("load_tester_valid", True) for _, c in ok],
                "admitted_lost": sum(c.get("admitted_lost", 0) for _, c in ok),
                "client_timeouts": sum((c.get("outcomes") or {}).get("hung", 0) for _, c in ok),
                "refused_after_waiting": sum(c.get("refused_after_waiting", 0) for _, c in ok),
                "refusal_n": len(refusals),
                "refusal_p50_ms": percentile_of(refusals, 50) if refusals else None,
                "refusal_tail_ms": tail_value(refusals),
                "refusal_tail": tail_label(len(refusals)),
                "admitted_ttft_n": len(ttfts),
                "admitted_ttft_p50_ms": percentile_of(ttfts, 50) if ttfts else None,
                "admitted_ttft_tail_ms": tail_value(ttfts),
                "admitted_ttft_tail": tail_label(len(ttfts)),
            }
            if name != "vllm" and baseline:
                pairs = [(((baseline[i] or {}).get(key) or {}), c) for i, c in valid if i < len(baseline)]
                pairs = [(b, c) for b, c in pairs if b and "error" not in b and b.get("load_tester_valid", True)
                         and (b.get("good_fraction") or 0) > 0 and (c.get("good_fraction") or 0) > 0]
                if pairs:
                    cell["good_ratio_to_vllm"] = paired_ratio_ci([b["good_fraction"] for b, _ in pairs],
                                                                 [c["good_fraction"] for _, c in pairs]).to_dict()
            by_load[key] = cell
    return out


def write_summary(data: dict, out: Path) -> None:
    data["estimates"] = estimate(data)
    (out / "summary.json").write_text(json.dumps(data, indent=1))
    lines = ["# Goodput under overload", "", goodput_table(data), "", "Per repeat:", "",
             f"| server | repeat | load | offered | good % | goodput req/s | complete / refused (429, 503) / other "
             f"error / client timeout ({REQUEST_TIMEOUT_S} s) / lost | admitted TTFT p50 ms | TPOT p50 ms | "
             "refused after waiting | load tester |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, repeats in data["results"].items():
        for repeat, row in enumerate(repeats, start=1):
            if "error" in (row or {}):
                lines.append(f"| {name} | {repeat} | {row['error'][:120]} |||||||||")
                continue
            for factor in data["factors"]:
                r = (row or {}).get(f"x{factor:g}")
                if r is None or "error" in r:
                    lines.append(f"| {name} | {repeat} | {factor:g}x | {(r or {}).get('error', 'not run')[:120]} "
                                 "||||||||")
                    continue
                o = r["outcomes"]
                lines.append(
                    f"| {name} | {repeat} | {factor:g}x | {r['offered']} | {fmt(r['good_fraction'], 1, 100)} | "
                    f"{fmt(r['goodput_rps'], 2)} | {o['complete']} / {r['refused']} / "
                    f"{o['error'] - (r['refused'] - o['rejected'])} / {o['hung']} / {o['lost']} | "
                    f"{fmt(r['admitted_ttft_p50_ms'])} | {fmt(r['tpot_p50_ms'])} | {r.get('refused_after_waiting', 0)} | "
                    f"{'valid' if r.get('load_tester_valid', True) else 'INVALID: ' + '; '.join(r['invalid_reasons'])[:80]} |")
    lines += ["", "TTFT predictor (serve_app; predicted at admission vs measured at the client, admitted requests):", "",
              "| repeat | load | n | mean error ms (+ = pessimistic) | abs error p50 / p90 / p99 ms | "
              "relative error p50 / p90 |",
              "|---|---|---|---|---|---|"]
    for repeat, row in enumerate(data["results"].get("serve_app") or [], start=1):
        for factor in data["factors"]:
            p = ((row or {}).get(f"x{factor:g}") or {}).get("prediction")
            if p:
                lines.append(f"| {repeat} | {factor:g}x | {p['n']} | {fmt(p['mean_error_s'], 0, 1000)} | "
                             f"{fmt(p['abs_error_p50_s'], 0, 1000)} / {fmt(p['abs_error_p90_s'], 0, 1000)} / "
                             f"{fmt(p['abs_error_p99_s'], 0, 1000)} | {fmt(p['rel_error_p50'], 2)} / "
                             f"{fmt(p['rel_error_p90'], 2)} |")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def fmt(value, digits: int = 0, scale: float = 1.0) -> str:
    return "-" if value is None else f"{value * scale:.{digits}f}"


def raw_path(out: Path, name: str, repeat: int, factor: float) -> Path:
    return out / name / f"r{repeat}" / f"x{factor:g}.json.gz"


def measure(name: str, server: Server, model_dir: str, data: dict, factors: list[float], duration_s: float,
            out: Path, repeat: int) -> dict:
    """One server, started afresh: capacity (the first server of the first repeat, unless given), the idle refusal
    floor (serve_app), then each load; raw records to `raw_path`, their figures returned."""
    rows: dict = {}
    with running(server, out / name / f"r{repeat}"):
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
                result = load(model_dir, mode="open", rate_rps=factor * data["capacity_rps"], duration_s=duration_s,
                              seed=1)
                with gzip.open(raw_path(out, name, repeat, factor), "wt") as f:
                    json.dump(result, f)
                rows[f"x{factor:g}"] = judge(result)
            except Exception as exc:  # noqa: BLE001 - record and go on with the other loads
                rows[f"x{factor:g}"] = {"error": f"{type(exc).__name__}: {str(exc)[-300:]}"}
            shown = {k: v for k, v in rows[f"x{factor:g}"].items() if not isinstance(v, list)}
            print(name, f"r{repeat}", factor, shown, flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--factors", default="1,2,5")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved: every server once per repeat, started "
                                                               "afresh")
    parser.add_argument("--duration-s", type=float, default=40.0)
    parser.add_argument("--capacity-rps", type=float, help="skip measuring capacity; use this rate for 1x")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "goodput")
    parser.add_argument("--client-nice", type=int, default=-10,
                        help="niceness increment of this process, whose load tester measures in-process (negative: "
                             "runs before the servers, which are started at the niceness it had)")
    parser.add_argument("--summarise-only", action="store_true",
                        help="judge every run again from its raw records and rewrite summary.{json,md}")
    args = parser.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    if args.summarise_only:
        data = json.loads((out / "summary.json").read_text())
        for name, repeats in data["results"].items():
            for repeat, row in enumerate(repeats, start=1):
                for factor in data["factors"]:
                    raw = raw_path(out, name, repeat, factor)
                    if raw.exists() and row is not None and "error" not in row:
                        with gzip.open(raw, "rt") as f:
                            row[f"x{factor:g}"] = judge(json.load(f))
        write_summary(data, out)
        return 0
    from serve_app.config import AppConfig
    from serve_app.platform.models import resolve_model_path

    model_dir = resolve_model_path(AppConfig().model)
    factors = [float(f) for f in args.factors.split(",")]
    names = args.servers.split(",")
    raise_priority(args.client_nice)  # the load tester is this process: on two cores the engine starves its loop
    data = {"meta": {**machine(), "client_nice": applied_nice(args.client_nice)}, "factors": factors,
            "duration_s": args.duration_s, "repeats": args.repeats,
            "order": "interleaved: " + ", ".join(f"r{r}:{n}" for r in range(1, args.repeats + 1) for n in names),
            "capacity_rps": args.capacity_rps, "results": {name: [] for name in names}}
    known = servers(model_dir)
    for repeat in range(1, args.repeats + 1):
        for name in names:
            if name == "ray_serve_llm" and not RAYLLM_PY.exists():
                rows = {"error": "no .venv-rayllm: run benchmarks/install_ray_serve_llm.sh"}
            else:
                try:
                    rows = measure(name, known[name], model_dir, data, factors, args.duration_s, out, repeat)
                except Exception as exc:  # noqa: BLE001 - record and go on with the other servers
                    rows = {"error": f"{type(exc).__name__}: {str(exc)[-300:]}"}
                    print(name, "failed:", exc, flush=True)
            data["results"][name].append(rows)
            write_summary(data, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
