"""`serve-app-loadtest`: run, sweep, compare and check load tests.

Exit status: 0 fine; 1 a --fail-if gate tripped; 2 bad usage; 3 gates were
given but the client self-check marked the result invalid (unless
--allow-invalid).
"""

import argparse
import json
import os
import sys
from pathlib import Path

from loadtest.config import LoadTestConfig
from loadtest.experiment import load_result, records_of, run_experiment, save_result
from loadtest.report import compare_table, console_report, evaluate_gates, markdown_report, parse_gate
from loadtest.tenant_spec import TenantLoad, parse_tenants
from loadtest.workload import PromptFactory

EXIT_GATE_FAILED = 1
EXIT_INVALID = 3


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


def _tenants(text: str) -> list[TenantLoad]:
    try:
        return parse_tenants(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _gate(text: str) -> str:
    try:
        parse_gate(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return text


def _add_load_arguments(parser: argparse.ArgumentParser) -> None:
    target = parser.add_argument_group("target")
    target.add_argument("--base-url", default="http://127.0.0.1:8000", help="server root, with or without /v1")
    target.add_argument("--endpoint", choices=["completions", "chat"], default="completions")
    target.add_argument("--model", help="model name; default: first id from GET /v1/models")
    target.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY"), help="default: $OPENAI_API_KEY")
    target.add_argument("--header", type=_key_value, action="append", default=[], metavar="KEY=VALUE")
    target.add_argument("--request-timeout-s", type=float, default=300.0)

    load = parser.add_argument_group("load model")
    load.add_argument("--concurrency", type=int, default=1, help="closed loop: concurrent users")
    load.add_argument("--rate-rps", type=float, help="open loop: mean arrival rate (requests/s)")
    load.add_argument("--arrival", choices=["poisson", "constant", "gamma"], default="poisson")
    load.add_argument("--burstiness", type=float, default=1.0, help="gamma shape k (<1 burstier, >1 smoother)")
    load.add_argument("--max-inflight", type=int, help="open loop: cap on in-flight requests (late sends are charged)")
    load.add_argument("--num-requests", type=int, help="stop after this many requests (conversations with --turns)")
    load.add_argument("--duration-s", type=float, help="stop starting requests after this many seconds")
    load.add_argument("--ramp-up-s", type=float, default=0.0)
    load.add_argument("--warmup-s", type=float, default=0.0, help="requests starting earlier are not measured")
    load.add_argument("--warmup-requests", type=int, default=0, help="the first N requests are not measured")
    load.add_argument("--cooldown-s", type=float, default=0.0, help="requests starting in the last S seconds are not measured")
    load.add_argument("--seed", type=int, default=0)
    load.add_argument("--workers", type=int, default=1, help="client processes; raw samples are merged")
    load.add_argument("--tenants", type=_tenants, default=[], metavar="SPEC",
                      help="several tenants at once, each a closed loop of its own users, e.g. "
                           "'A:key=sk-a:concurrency=32,B:key=sk-b:concurrency=1' or "
                           "'A:header=x-tenant-id:value=A:concurrency=8,B:header=x-tenant-id' "
                           "(fields: concurrency, key, key_env, header, value, priority, requests; "
                           "see loadtest/tenant_spec.py)")

    work = parser.add_argument_group("workload")
    work.add_argument("--input-tokens", type=int, default=128)
    work.add_argument("--input-tokens-range", type=float, default=0.0, help="uniform +- fraction")
    work.add_argument("--max-tokens", type=int, default=64)
    work.add_argument("--output-tokens-range", type=float, default=0.0, help="uniform +- fraction")
    work.add_argument("--ignore-eos", action="store_true", help="send ignore_eos=true for fixed output length")
    work.add_argument("--temperature", type=float)
    work.add_argument("--prompts-file", help="JSONL: {prompt} | {messages} | {turns}, optional max_tokens")
    work.add_argument("--prompt-set", choices=["copy", "translate", "chat", "shared-prefix"],
                      help="built-in chat prompts (loadtest/prompt_sets.py, loadtest/shared_prefix.py); "
                           "needs --endpoint chat")
    work.add_argument("--system-prompts", type=int, default=8,
                      help="shared-prefix: distinct system prompts the conversations share")
    work.add_argument("--system-prompt-tokens", type=int, default=1000,
                      help="shared-prefix: length of each system prompt (about 4 characters per token)")
    work.add_argument("--tokenizer", help="local Hugging Face tokenizer dir for exact prompt lengths")
    work.add_argument("--turns", type=int, default=1, help="chat turns per conversation (endpoint chat)")
    work.add_argument("--extra-body", type=json.loads, default={}, help="JSON object merged into each request body")

    stats = parser.add_argument_group("statistics and output")
    stats.add_argument("--slo", type=_key_value, action="append", default=[], metavar="METRIC_ms=LIMIT",
                       help="goodput SLO, e.g. ttft_ms=500 tpot_ms=50 e2e_ms=5000")
    stats.add_argument("--slo-ttft-ms", type=float, default=2000.0, help="per-tenant goodput: TTFT limit")
    stats.add_argument("--slo-tpot-ms", type=float, default=200.0, help="per-tenant goodput: TPOT limit")
    stats.add_argument("--confidence", type=float, default=0.95)
    stats.add_argument("--max-loop-lag-p99-ms", type=float, default=10.0)
    stats.add_argument("--max-client-cpu-fraction", type=float, default=0.85)
    stats.add_argument("--save-text", action="store_true", help="keep generated text in the JSON records")
    stats.add_argument("--out", type=Path, default=Path("results/loadtest"), help="output directory")
    stats.add_argument("--no-plots", action="store_true")
    stats.add_argument("--no-progress", action="store_true")
    stats.add_argument("--fail-if", type=_gate, action="append", default=[], metavar="EXPR",
                       help="exit 1 when true, e.g. 'ttft_p99_ms>500' (repeatable)")
    stats.add_argument("--allow-invalid", action="store_true", help="do not exit 3 on an invalid self-check")


def config_from_args(args: argparse.Namespace, **overrides) -> LoadTestConfig:
    values = dict(
        base_url=args.base_url, endpoint=args.endpoint, model=args.model, api_key=args.api_key,
        headers=dict(args.header), request_timeout_s=args.request_timeout_s,
        mode="open" if args.rate_rps is not None else "closed",
        concurrency=args.concurrency, rate_rps=args.rate_rps,
        burstiness=None if args.arrival == "constant" else (1.0 if args.arrival == "poisson" else args.burstiness),
        max_inflight=args.max_inflight, num_requests=args.num_requests, duration_s=args.duration_s,
        ramp_up_s=args.ramp_up_s, warmup_s=args.warmup_s, warmup_requests=args.warmup_requests,
        cooldown_s=args.cooldown_s, seed=args.seed, workers=args.workers,
        input_tokens=args.input_tokens, input_tokens_range=args.input_tokens_range, max_tokens=args.max_tokens,
        output_tokens_range=args.output_tokens_range, ignore_eos=args.ignore_eos, temperature=args.temperature,
        prompts_file=args.prompts_file, prompt_set=args.prompt_set, system_prompts=args.system_prompts,
        system_prompt_tokens=args.system_prompt_tokens, tokenizer=args.tokenizer, turns=args.turns,
        extra_body=args.extra_body,
        tenants=args.tenants, slo_ttft_ms=args.slo_ttft_ms, slo_tpot_ms=args.slo_tpot_ms,
        slos={k: float(v) for k, v in args.slo}, confidence=args.confidence,
        max_loop_lag_p99_ms=args.max_loop_lag_p99_ms, max_client_cpu_fraction=args.max_client_cpu_fraction,
        save_text=args.save_text,
    )
    values.update(overrides)
    return LoadTestConfig(**values)


def _write_outputs(result: dict, out: Path, stem: str, plots: bool) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    save_result(result, out / f"{stem}.json")
    plot_files = []
    if plots:
        from loadtest.plots import plot_latency_cdfs

        name = f"{stem}_latency_cdf.png"
        plot_latency_cdfs([(stem, records_of(result), result["config"]["mode"] == "open")], out / name)
        plot_files.append(name)
    (out / f"{stem}.md").write_text(markdown_report(result, plot_files))
    return plot_files


def _gate_exit(results: list[dict], gates: list[str], allow_invalid: bool) -> int:
    if not gates:
        return 0
    status = 0
    for result in results:
        for failure in evaluate_gates(result["summary"], gates):
            print(f"GATE FAILED: {failure}", file=sys.stderr)
            status = EXIT_GATE_FAILED
    if status == 0 and not allow_invalid and not all(r["validity"]["valid"] for r in results):
        print("GATE: the client self-check marked the result invalid", file=sys.stderr)
        status = EXIT_INVALID
    return status


def cmd_run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    result = run_experiment(config, progress=not args.no_progress)
    _write_outputs(result, args.out, "result", plots=not args.no_plots)
    print(console_report(result))
    print(f"\nwrote {args.out}/result.json, result.md" + ("" if args.no_plots else ", result_latency_cdf.png"))
    return _gate_exit([result], args.fail_if, args.allow_invalid)


def cmd_sweep(args: argparse.Namespace) -> int:
    if (args.concurrencies is None) == (args.rates is None):
        print("sweep needs exactly one of --concurrencies and --rates", file=sys.stderr)
        return 2
    points = [float(x) for x in (args.concurrencies or args.rates).split(",")]
    factory = PromptFactory(args.tokenizer)
    results, summary_rows = [], []
    for point in points:
        if args.concurrencies:
            config = config_from_args(args, mode="closed", concurrency=int(point), rate_rps=None)
            stem = f"concurrency_{int(point)}"
        else:
            config = config_from_args(args, mode="open", rate_rps=point)
            stem = f"rate_{point:g}"
        print(f"== {stem}", file=sys.stderr)
        result = run_experiment(config, progress=not args.no_progress, factory=factory)
        _write_outputs(result, args.out, stem, plots=not args.no_plots)
        print(console_report(result) + "\n")
        results.append(result)
        summary_rows.append(stem)
    x_label = "concurrency (users)" if args.concurrencies else "arrival rate (req/s)"
    lines = ["# Sweep", "", compare_table(results, summary_rows), ""]
    if not args.no_plots:
        from loadtest.plots import plot_latency_cdfs, plot_sweep

        plot_sweep(points, [r["summary"] for r in results], x_label, args.out / "sweep.png")
        plot_latency_cdfs(
            [(stem, records_of(r), r["config"]["mode"] == "open") for stem, r in zip(summary_rows, results)],
            args.out / "sweep_latency_cdf.png",
        )
        lines += ["![sweep](sweep.png)", "", "![latency CDFs](sweep_latency_cdf.png)", ""]
    (args.out / "sweep.md").write_text("\n".join(lines))
    (args.out / "sweep.json").write_text(json.dumps(
        {"x_label": x_label, "points": points, "files": [f"{s}.json" for s in summary_rows],
         "summaries": [r["summary"] for r in results], "validity": [r["validity"] for r in results]}, indent=1))
    print(f"wrote {args.out}/sweep.md, sweep.json and one result per point")
    return _gate_exit(results, args.fail_if, args.allow_invalid)


def cmd_compare(args: argparse.Namespace) -> int:
    results = [load_result(path) for path in args.results]
    labels = args.labels.split(",") if args.labels else [Path(p).stem if Path(p).stem != "result" else Path(p).parent.name for p in args.results]
    if len(labels) != len(results):
        print("--labels needs one label per result", file=sys.stderr)
        return 2
    table = compare_table(results, labels)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("# Comparison (ratios to the first result)\n\n" + table + "\n")
    if args.plot:
        from loadtest.plots import plot_latency_cdfs

        plot_latency_cdfs([(l, records_of(r), r["config"]["mode"] == "open") for l, r in zip(labels, results)], args.plot)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    result = load_result(args.result)
    print(console_report(result))
    return _gate_exit([result], args.fail_if, args.allow_invalid)


def cmd_replay(args: argparse.Namespace) -> int:
    import asyncio
    from dataclasses import asdict

    from loadtest.replay import per_second_series, plan_replay, replay, summarize
    from loadtest.traces.format import read_trace

    trace = read_trace(args.trace)
    plans = plan_replay(trace, time_scale=args.time_scale, seed=args.seed, factory=PromptFactory(args.tokenizer))
    model = args.model
    if model is None:
        from loadtest.config import LoadTestConfig as _Config
        from loadtest.runner import resolve_model

        model = asyncio.run(resolve_model(_Config(base_url=args.base_url, headers=dict(args.header))))
    print(f"replaying {trace.name}: {len(plans)} requests over {trace.duration_s * args.time_scale:g} s", file=sys.stderr)
    records = asyncio.run(replay(plans, base_url=args.base_url, model=model, headers=dict(args.header),
                                 tenant_header=args.tenant_header, timeout_s=args.request_timeout_s))
    summary = summarize(records, ttft_target_ms=args.ttft_target_ms, tpot_target_ms=args.tpot_target_ms)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "replay.json").write_text(json.dumps({
        "trace": trace.name, "trace_file": str(args.trace), "time_scale": args.time_scale, "summary": summary,
        "series": [asdict(row) for row in per_second_series(records, trace.duration_s * args.time_scale)],
        "records": [r.to_dict(keep_text=False) for r in records]}, indent=1))
    print(json.dumps(summary, indent=1))
    print(f"wrote {args.out}/replay.json")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="serve-app-loadtest", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="one load test")
    _add_load_arguments(run)
    run.set_defaults(handler=cmd_run)
    sweep = commands.add_parser("sweep", help="one run per concurrency or rate")
    _add_load_arguments(sweep)
    sweep.add_argument("--concurrencies", help="comma-separated, closed loop")
    sweep.add_argument("--rates", help="comma-separated req/s, open loop")
    sweep.set_defaults(handler=cmd_sweep)
    compare = commands.add_parser("compare", help="metrics of result files as ratios to the first")
    compare.add_argument("results", nargs="+", type=Path)
    compare.add_argument("--labels", help="comma-separated labels")
    compare.add_argument("--out", type=Path, help="write the table as Markdown")
    compare.add_argument("--plot", type=Path, help="write overlaid latency CDFs (PNG)")
    compare.set_defaults(handler=cmd_compare)
    replay = commands.add_parser("replay", help="open-loop replay of an arrival trace (loadtest/traces/)")
    replay.add_argument("--trace", type=Path, required=True, help="a serve_app-trace/1 JSONL file")
    replay.add_argument("--base-url", default="http://127.0.0.1:8000")
    replay.add_argument("--model", help="default: first id from GET /v1/models")
    replay.add_argument("--header", type=_key_value, action="append", default=[], metavar="KEY=VALUE")
    replay.add_argument("--tenant-header", default="x-tenant-id", help="header that carries a request's tenant")
    replay.add_argument("--time-scale", type=float, default=1.0, help="multiply every arrival time (0.5: twice as fast)")
    replay.add_argument("--seed", type=int, default=0)
    replay.add_argument("--tokenizer", help="local Hugging Face tokenizer dir for exact prompt lengths")
    replay.add_argument("--request-timeout-s", type=float, default=300.0)
    replay.add_argument("--ttft-target-ms", type=float, default=1000.0)
    replay.add_argument("--tpot-target-ms", type=float, default=200.0)
    replay.add_argument("--out", type=Path, default=Path("results/replay"))
    replay.set_defaults(handler=cmd_replay)
    check = commands.add_parser("check", help="apply --fail-if gates to a saved result")
    check.add_argument("result", type=Path)
    check.add_argument("--fail-if", type=_gate, action="append", default=[], metavar="EXPR")
    check.add_argument("--allow-invalid", action="store_true")
    check.set_defaults(handler=cmd_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
