"""The readable tables of the benchmarks, rendered from their results files (pure: parsed JSON in, Markdown out).

One function per table, keyed by the name the README's `<!-- table:NAME -->` marker uses. A benchmark script
writes its summary.md with these, and benchmarks/readme_tables.py (and the unit test over the README) renders the
same table from the same file, so a README figure cannot drift from its file. Like harness.py, a library beside the
scripts, not a script.
"""

from __future__ import annotations

from collections.abc import Callable

Table = Callable[[dict], str]


def _interval(estimate: dict, fmt: str) -> str:
    if estimate.get("ci_low") is None:
        return f" [{estimate['num_pairs']} repeat, no CI]"
    return f" [{fmt.format(estimate['ci_low'])}, {fmt.format(estimate['ci_high'])}]"


def format_ratio(estimate: dict | None) -> str:
    """1.02x [0.97, 1.07]: geometric-mean ratio over the paired repeats and its 95% interval."""
    if not estimate:
        return "n/a"
    return f"{estimate['value']:.2f}x" + _interval(estimate, "{:.2f}")


def format_difference_ms(estimate: dict | None) -> str:
    """+3.1 ms [-1.0, +7.2]: mean paired difference and its 95% interval."""
    if not estimate:
        return "n/a"
    return f"{estimate['value']:+.1f} ms" + _interval(estimate, "{:+.1f}")


def _other_commits(meta: dict) -> str:
    others = [c[:10] for c in meta.get("commits", []) if c != meta["commit"]]
    return f" (other cells at {', '.join(others)})" if others else ""


SIDE_BY_SIDE_COLUMNS = (("ttft_p50_ms", "TTFT p50"), ("ttft_tail_ms", "TTFT tail"), ("itl_tail_ms", "ITL tail"),
                        ("output_tok_s", "output tok/s"))


def side_by_side(summary: dict, client: str = "loadtest") -> str:
    """Each server against bare `vllm serve` measured by one client: the paired estimate per metric, the tail's
    sample floor ("p99" or "max of N" per repeat), and how many of the repeats were valid."""
    meta = summary["meta"]
    lines = [f"{meta['cpu']} ({', '.join(meta['cpu_flags']) or 'no avx512'}), {meta['date']}, commit "
             f"{meta['commit'][:10]}{_other_commits(meta)}; {client}; interleaved repeats per server: "
             f"{meta['num_repeats']}; "
             "ratio or difference to bare `vllm serve` [95% CI over the repeat pairs].", "",
             "| server | users | " + " | ".join(title for _, title in SIDE_BY_SIDE_COLUMNS) + " | tail over | valid pairs |",
             "|---|---|" + "---|" * (len(SIDE_BY_SIDE_COLUMNS) + 2)]
    for row in summary["comparisons"]:
        if row["client"] != client:
            continue
        if not row["num_valid_pairs"]:  # never a headline: say why there is no figure
            cells = ["no valid pair (client self-check INVALID, error or not run)"] + ["-"] * (len(SIDE_BY_SIDE_COLUMNS) - 1)
            tail = "-"
        else:
            cells = [format_difference_ms(row["estimates"].get("ttft_p50_ms"))]
            cells += [format_ratio(row["estimates"].get(metric)) for metric, _ in SIDE_BY_SIDE_COLUMNS[1:]]
            tail = row["tail_label"]
        lines.append(f"| {row['server']} | {row['users']} | " + " | ".join(cells)
                     + f" | {tail} | {row['num_valid_pairs']} of {row['num_repeats']} |")
    baselines = [b for b in summary["baselines"] if b["client"] == client]
    lines += ["", "Bare `vllm serve` (mean over its valid repeats): "
              + ("; ".join(f"{b['users']} user{'s' if b['users'] > 1 else ''}: TTFT p50 {b['ttft_p50_ms']:.1f} ms, "
                           f"{b['output_tok_s']:.1f} tok/s" for b in baselines) or "no valid run") + "."]
    targets = [t for t in summary.get("targets", []) if t["client"] == client]
    if targets:
        lines += ["", "| target | server | measured | verdict |", "|---|---|---|---|"]
        lines += [f"| {t['target']} | {t['server']} | {t['measured']} | {t['verdict']} |" for t in targets]
    return "\n".join(lines)


def compression(data: dict) -> str:
    """Every checkpoint `serve-app evaluate` measured: size, perplexity, answers, tokens/s at 1 and 16 users."""
    lines = ["| checkpoint | method | activations | size MB | perplexity (vs base) | answers right | tok/s @1 "
             "| tok/s @16 (vs fp32 base) |", "|---|---|---|---|---|---|---|---|"]
    for row in data["rows"]:
        lines.append(f"| {row['name']} | {row['method']} | {row['dtype']} | {row['size_mb']:.1f} | "
                     f"{row['perplexity']:,} ({row['ppl_change_pct']:+.1f}%) | {row['num_correct']} | "
                     f"{row['tok_s_c1']:.1f} | {row['tok_s_c16']:.1f} ({row['speedup_c16']:.2f}x) |")
    return "\n".join(lines)


def autoscale_replay(data: dict) -> str:
    """Each replay run (benchmarks/autoscale_replay.py --report): targets held, refusals, GPU-seconds against the
    offline lower bound, and the commit each run was measured on."""
    names = {"latency_target": "serve_app latency_target", "ongoing_requests": "Ray Serve's ongoing_requests"}
    lines = ["| trace | policy (admission, ingress) | within TTFT, admitted after the cold start | p99 TTFT | "
             "refused (429) | failed | max replicas | node GPU-s | serving GPU-s | lower bound | nodes / bound | "
             "serving / bound | commit |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in sorted(data["runs"].values(), key=lambda r: (r["spec"]["trace"], r["spec"]["policy"])):
        spec, f = row["spec"], row["figures"]
        within = f["share_within_ttft_after_cold_start"]
        serving = f.get("serving_gpu_seconds")
        serving_ratio = f.get("serving_gpu_seconds_vs_bound")
        lines.append(
            f"| {spec['trace']} | {names.get(spec['policy'], spec['policy'])} ({spec['admission']}, "
            f"{spec.get('ingress_placement', 'with_model')}) | {'-' if within is None else f'{100 * within:.1f}%'} | "
            f"{f['ttft_p99_ms'] / 1000:.2f} s | {f['num_refused_429']} of {f['num_requests']} | {f['num_failed']} | "
            f"{f['max_replicas_seen']} | {f['node_gpu_seconds']:,.0f} | "
            f"{'-' if serving is None else f'{serving:,.0f}'} | {f['lower_bound_gpu_seconds']:,.0f} | "
            f"{f['node_gpu_seconds_vs_bound']:.2f}x | {'-' if serving_ratio is None else f'{serving_ratio:.2f}x'} | "
            f"{(f.get('machine') or {}).get('commit', '?')[:7]} |")
    return "\n".join(lines)


TABLES: dict[str, tuple[str, Table]] = {
    "compression": ("results/compression/compression.json", compression),
    "autoscale_replay": ("results/autoscale_replay/autoscale_replay.json", autoscale_replay),
    # name -> (results file relative to the repository, renderer)
    "side_by_side": ("results/side_by_side/summary.json", lambda data: side_by_side(data, "loadtest")),
    "side_by_side_vllm_bench": ("results/side_by_side/summary.json", lambda data: side_by_side(data, "vllm_bench")),
    # Speculation auto's cost, bare vLLM with the same speculative config beside it (side_by_side.py --out there).
    "speculation_default_cost": ("results/speculation/default_cost/summary.json",
                                 lambda data: side_by_side(data, "vllm_bench")),
}
