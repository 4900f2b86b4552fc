"""The readable tables of the benchmarks, rendered from their results files (parsed JSON in, Markdown out; only
`side_by_side_targets` reads files itself: the summaries its index lists).

One function per table, keyed by the name the README's `<!-- table:NAME -->` marker uses. A benchmark script
writes its summary.md with these, and benchmarks/readme_tables.py (and the unit test over the README) renders the
same table from the same file, so a README figure cannot drift from its file. Like harness.py, a library beside the
scripts, not a script.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

Table = Callable[[dict], str]
REPO = Path(__file__).resolve().parents[1]


def _cpu(where: dict) -> str:
    """The machine a run names: core count and CPU model, and its flags that matter (or "no avx512")."""
    return f"{where['cpu']} ({', '.join(where['cpu_flags']) or 'no avx512'})"


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


MIN_PAIRS = 3  # a verdict needs at least three interleaved repeat pairs


def verdict(estimate: dict, kind: str, limit: float) -> str:
    """met / NOT met when the whole 95% interval is on one side of the target, else undecided (or 1 repeat)."""
    low, high, value = estimate["ci_low"], estimate["ci_high"], estimate["value"]
    if estimate["num_pairs"] < MIN_PAIRS:
        ok = value >= limit if kind == "at_least" else value <= limit
        return (f"not judged: {estimate['num_pairs']} valid pair(s), {MIN_PAIRS} needed "
                f"({'inside' if ok else 'outside'})")
    if low is None:
        ok = value >= limit if kind == "at_least" else value <= limit
        return ("met" if ok else "NOT met") + " (1 repeat, no CI)"
    if kind == "at_least":
        return "met" if low >= limit else "NOT met" if high < limit else "undecided (CI spans the target)"
    return "met" if high <= limit else "NOT met" if low > limit else "undecided (CI spans the target)"


def _uncommitted(meta: dict) -> str:
    return " (uncommitted changes in serve_app/, loadtest/ or benchmarks/)" if meta.get("uncommitted") else ""


def _other_commits(meta: dict) -> str:
    others = [c[:10] for c in meta.get("commits", []) if c != meta["commit"]]
    return f" (other cells at {', '.join(others)})" if others else ""


SIDE_BY_SIDE_COLUMNS = (("ttft_p50_ms", "TTFT p50"), ("ttft_tail_ms", "TTFT tail"), ("itl_tail_ms", "ITL tail"),
                        ("output_tok_s", "output tok/s"))


def side_by_side(summary: dict, client: str = "loadtest") -> str:
    """Each server against bare `vllm serve` measured by one client: the paired estimate per metric, the tail's
    sample floor ("p99" or "max of N" per repeat), and how many of the repeats were valid."""
    meta = summary["meta"]
    baseline = "bare `vllm serve`" if meta.get("baseline", "vllm") == "vllm" else f"`{meta['baseline']}`"
    lines = [f"{_cpu(meta)}, {meta['date']}, commit "
             f"{meta['commit'][:10]}{_uncommitted(meta)}{_other_commits(meta)}; {client}"
             + "".join(f" at niceness {nice:+d}" for nice in meta.get("client_nice", []) if nice)
             + "".join(f", users staggered over {ramp:g} s (--ramp-up-s)" for ramp in meta.get("ramp_up_s", []) if ramp)
             + f"; interleaved repeats per server: {meta['num_repeats']}; "
             f"ratio or difference to {baseline} [95% CI over the repeat pairs].", "",
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
    lines += ["", f"{baseline[0].upper()}{baseline[1:]} (mean over its valid repeats): "
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


def compression_speed_pair(data: dict) -> str:
    """benchmarks/compression_speed_pair.py: both speeds, the paired ratio with its interval, and where it ran. A
    pair of one checkpoint at two activation dtypes (what the lower precision buys) names the model once."""
    where = data["machine"]
    base, model = (Path(data[key].split("@")[0]).name for key in ("base", "model"))
    dtypes = f"{data['dtypes']['base']} / {data['dtypes']['compressed']}"
    if base == model:
        lead, other = [("model", base), ("activations (base / other)", dtypes)], "other"
    else:
        lead, other = [("base", base), ("compressed", model), ("activations", dtypes)], "compressed"
    columns = lead + [("base tok/s (median)", f"{data['base_tok_s_median']:.1f}"),
                      (f"{other} tok/s (median)", f"{data['compressed_tok_s_median']:.1f}"),
                      ("speed-up [95% CI]", format_ratio(data["speedup"])),
                      ("speed-up >= 1.0x?", verdict(data["speedup"], "at_least", 1.0))]
    names, cells = zip(*columns)
    return (f"{_cpu(where)}, {data['measured_at']}, commit {where['commit'][:10]}; both engines alive "
            f"in one process, {data['num_rounds']} alternated rounds of {data['concurrency']} concurrent requests x "
            f"{data['max_tokens']} output tokens.\n\n"
            f"| {' | '.join(names)} |\n|{'---|' * len(names)}\n| {' | '.join(cells)} |")


def overload_soak(data: dict) -> str:
    """benchmarks/overload_soak.py: capacity, 5x overload, soak; each tail named for its sample count, each phase
    with the load tester's own validity, and the targets."""
    where, cap, over, soak = data["machine"], data["capacity"], data["overload"], data["soak"]
    checked = data["load_tester"]

    def valid(phase: str) -> str:
        verdict = checked[phase]
        return "valid" if verdict["valid"] else "INVALID (" + "; ".join(verdict["reasons"]) + ")"

    def outcomes(counts: dict) -> str:
        return ", ".join(f"{count} {name}" for name, count in counts.items())

    ratio, reject_tail = over["admitted_ttft_tail_ratio"], over["rejection_latency_tail_ms"]
    growth = soak["max_memory_growth"]
    silent = sum(phase["outcomes"][kind] for phase in (over, soak) for kind in ("hung", "lost"))
    lines = [
        f"{_cpu(where)}, {data['measured_at']}, commit {where['commit'][:10]}; load tester at niceness "
        f"{data['args']['client_nice']:+d}; `benchmarks/overload_soak.py`.", "",
        "| phase | load | outcomes | latency | load tester |", "|---|---|---|---|---|",
        f"| capacity | {cap['users']} users closed loop: {cap['request_rate_rps']:.2f} req/s, "
        f"{cap['output_tok_s']:.1f} tok/s | - | TTFT {cap['ttft_tail']} {cap['ttft_tail_ms']:.0f} ms "
        f"| {valid('capacity')} |",
        f"| overload | Poisson {over['offered_rate_rps']:.2f} req/s ({data['args']['overload_factor']:g}x), "
        f"{data['args']['overload_s']:g} s | {outcomes(over['outcomes'])} | admitted TTFT {over['admitted_ttft_tail']} "
        f"{over['admitted_ttft_tail_ms'] or 0:.0f} ms; 429 p50 {over['rejection_latency_p50_ms'] or 0:.1f} ms, "
        f"{over['rejection_latency_tail']} {reject_tail or 0:.1f} ms | {valid('overload')} |",
        f"| soak | {max(1, cap['users'] // 2)} users closed loop, {soak['duration_s']:g} s: {soak['output_tok_s']:.1f} "
        f"tok/s | {outcomes(soak['outcomes'])} | memory growth after warm-up, largest process: "
        f"{growth:+.1%} | {valid('soak')} |" if growth is not None else "| soak | - | - | - | - |",
        "", "| target | measured | verdict |", "|---|---|---|",
        f"| overload: admitted TTFT tail <= 2x capacity's | {ratio:.2f}x ({over['admitted_ttft_tail']} / "
        f"{cap['ttft_tail']}) | {'met' if ratio is not None and ratio <= 2 else 'NOT met'} (one run) |"
        if ratio is not None else "| overload: admitted TTFT tail <= 2x capacity's | n/a | - |",
        f"| overload: 429 {over['rejection_latency_tail']} <= 50 ms | {reject_tail:.1f} ms | "
        f"{'met' if reject_tail <= 50 else 'NOT met'} (one run) |" if reject_tail is not None
        else "| overload: 429 tail <= 50 ms | no 429 | - |",
        f"| soak: memory growth after warm-up < 5% (every process) | {growth:+.1%} | "
        f"{'met' if growth < 0.05 else 'NOT met'} |" if growth is not None else "| soak: memory growth | n/a | - |",
        f"| no request hung or lost (overload + soak) | {silent} | {'met' if silent == 0 else 'NOT met'} |",
        "", "| process (RSS >= 50 MB; first name seen) | first MB | last MB | growth after warm-up |",
        "|---|---|---|---|"]
    for _, m in sorted(soak["memory_over_50mb"].items(), key=lambda item: (item[1]["name"], int(item[0]))):
        change = f"{m['growth']:+.1%}" if m["growth"] is not None else "n/a"
        lines.append(f"| {m['name']} | {m['first_mb']:.0f} | {m['last_mb']:.0f} | {change} |")
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


NOISY_NEIGHBOUR_TARGETS = (
    ("B's TTFT tail beside the flood <= 1.5x alone (tenancy)", "b_tail_ratio_fair", "at_most", 1.5),
    ("flood + B total output tok/s, tenancy >= 0.95x first come first served", "flood_total_tps_fair_vs_fcfs",
     "at_least", 0.95),
    ("A alone output tok/s, tenancy >= 0.97x first come first served", "a_alone_tps_fair_vs_fcfs", "at_least", 0.97))


def _remeasured(remeasured: dict) -> str:
    """Which phases a noisy-neighbour summary re-measured, on what, and each one's warm-up (and A_alone's length)."""
    warmups = remeasured["warmup_s"]  # phase -> seconds
    where = ", ".join(part for part in (", ".join(remeasured.get("servers") or []),
                                        ", ".join(f"repeat {r}" for r in remeasured.get("repeats") or [])) if part)
    return (f"; {', '.join(remeasured['phases'])}{f' ({where})' if where else ''} re-measured on commit "
            f"{remeasured['commit'][:10]}, "
            f"{remeasured['date']}, after "
            + ", ".join(f"a {seconds} s warm-up" + (f" ({phase})" if len(warmups) > 1 else "")
                        for phase, seconds in warmups.items())
            + (f", A_alone for {remeasured['alone_s']} s" if "alone_s" in remeasured else ""))


def noisy_neighbour(data: dict) -> str:
    """benchmarks/noisy_neighbour.py: every repeat's figures, then the targets over the repeats with their 95%
    intervals and verdicts (a tail is a p99 over 200+ requests, else "max of N")."""
    meta, runs, est = data["meta"], data["runs"], data["estimates"]
    lines = [f"{_cpu(meta)}, {meta['date']}, commit "
             f"{meta['commit'][:10]}{_uncommitted(meta)}; "
             f"{meta['workload']}; {meta['repeats']} interleaved repeats (a server started afresh for each)"
             + "".join(_remeasured(record) for record in meta.get("remeasured", []))  # oldest first
             + "".join(f"; repeats {a['first']}-{a['first'] + a['count'] - 1} added on commit {a['commit'][:10]}, "
                       f"{a['date']}" for a in meta.get("added_repeats", []))
             + ".", "",
             "| server | repeat | B alone TTFT p50 / tail ms | B beside A TTFT p50 / tail ms | A alone output tok/s | "
             "A32+B1 total output tok/s | C's share (weight 2) | load tester |", "|---|---|---|---|---|---|---|---|"]

    def ttft(cell: dict) -> str:
        if not cell.get("ttft_n"):
            return "-"
        return f"{cell['ttft_p50_ms']:.0f} / {cell['ttft_tail_ms']:.0f} ({cell['ttft_tail']})"

    for server in sorted(runs):
        for repeat, row in enumerate(runs[server]):
            if row.get("error"):
                lines.append(f"| {server} | {repeat} | error: {row['error'][:120]} ||||||")
                continue
            get = lambda run, who: (row.get(run) or {}).get(who) or {}  # noqa: E731
            share = get("A16_C16", "C").get("output_token_share")
            valid = all((phase.get("total") or {}).get("load_tester_valid") for phase in row.values()
                        if isinstance(phase, dict))
            lines.append(
                f"| {server} | {repeat} | {ttft(get('B_alone', 'B'))} | {ttft(get('A32_B1', 'B'))} | "
                f"{get('A_alone', 'total').get('output_tokens_per_s') or 0:.1f} | "
                f"{get('A32_B1', 'total').get('output_tokens_per_s') or 0:.1f} | "
                f"{'-' if share is None else f'{share:.3f}'} | {'valid' if valid else 'INVALID'} |")
    lines += ["", "| target | measured [95% CI over the repeats] | verdict |", "|---|---|---|"]
    labels = est.get("b_tail_labels") or {}
    for title, key, kind, limit in NOISY_NEIGHBOUR_TARGETS:
        estimate = est.get(key)
        if key == "b_tail_ratio_fair":  # the tails compared: a p99 from 200 requests, else the max of N
            title += (f" (tails: {' / '.join(labels.get('B_alone_fair', [])) or '-'} alone, "
                      f"{' / '.join(labels.get('A32_B1_fair', [])) or '-'} beside)")
        lines.append(f"| {title} | {format_ratio(estimate)} | "
                     f"{verdict(estimate, kind, limit) if estimate else 'no valid repeat'} |")
    shares = est["c_share_weight_2"]
    if shares["values"]:
        inside = all(0.600 <= v <= 0.733 for v in shares["values"])
        lines.append(f"| C's share of output tokens at weights 2:1 within 10% of 0.667 (0.600-0.733) | mean "
                     f"{shares['mean']:.3f} ({', '.join(f'{v:.3f}' for v in shares['values'])}) | "
                     f"{'met in every repeat' if inside else 'NOT met in every repeat'} |")
    lines += ["", f"For comparison (no target): B's TTFT p50 beside the flood / alone with tenancy "
              f"{format_ratio(est.get('b_p50_ratio_fair'))}; B's tail ratio first come first served "
              f"{format_ratio(est.get('b_tail_ratio_fcfs'))} (tails: "
              f"{' / '.join(labels.get('A32_B1_fcfs', [])) or '-'} beside; its requests still waiting when the "
              "phase ended are not counted, so this understates its tail)."]
    return "\n".join(lines)


def goodput(data: dict) -> str:
    """benchmarks/goodput.py: per server and load, the good share in each repeat, goodput against bare vLLM's in the
    same repeat (paired, 95% CI), admitted TTFT and refusal latency pooled over the valid repeats; then the targets."""
    meta, est = data["meta"], data["estimates"]
    capacity = data.get("capacity") or {}
    lines = [f"{_cpu(meta)}, {meta['date']}, commit "
             f"{meta['commit'][:10]}{_uncommitted(meta)}; "
             f"{data['repeats']} interleaved repeats (each server started afresh); Poisson arrivals for "
             f"{data['duration_s']:.0f} s per load; 1x = {data['capacity_rps']:.2f} req/s (the highest rate at which "
             f"bare vLLM had >= 90% good requests in a 30 s probe at these fractions: "
             f"{', '.join(f'{k} -> {v:.0%}' for k, v in (capacity.get('search') or {}).items())} of its closed-loop "
             f"{capacity.get('closed_loop_rps') or 0:.2f} req/s); good: TTFT <= 2 s and TPOT <= 200 ms"
             + (f"; load tester at niceness {meta['client_nice']:+d}" if meta.get("client_nice") else "") + ".", "",
             "| server | load | good % per repeat | goodput req/s (mean) | good / vLLM's [95% CI] | admitted TTFT "
             "p50 / tail ms | refused on arrival p50 / tail ms | client timeouts / lost | load tester |",
             "|---|---|---|---|---|---|---|---|---|"]

    def ms(value) -> str:
        return "-" if value is None else f"{value:,.0f}" if value >= 100 else f"{value:.1f}"

    for server, by_load in est.items():
        for factor in data["factors"]:
            c = by_load.get(f"x{factor:g}") or {}
            goods = [g for g in c.get("good_fraction", []) if g is not None]
            rates = [g for g in c.get("goodput_rps", []) if g is not None]
            if not goods:
                lines.append(f"| {server} | {factor:g}x | not run or error |||||||")
                continue
            valid = c.get("valid", [])
            lines.append(
                f"| {server} | {factor:g}x | {', '.join(f'{g * 100:.1f}' for g in goods)} | "
                f"{sum(rates) / len(rates):.2f} | "
                f"{format_ratio(c.get('good_ratio_to_vllm')) if server != 'vllm' else '-'} | "
                f"{ms(c.get('admitted_ttft_p50_ms'))} / {ms(c.get('admitted_ttft_tail_ms'))} "
                f"({c.get('admitted_ttft_tail')}) | "
                + (f"{ms(c['refusal_p50_ms'])} / {ms(c['refusal_tail_ms'])} ({c['refusal_tail']}) | "
                   if c.get("refusal_n") else "- | ")
                + f"{c.get('client_timeouts', 0)} / {c.get('admitted_lost', 0)} | "
                f"{sum(valid)} of {len(valid)} valid |")
    lines += ["", "| target | measured | verdict |", "|---|---|---|"]
    two = (est.get("serve_app") or {}).get("x2", {}).get("good_ratio_to_vllm")
    lines.append(f"| 2x capacity: serve_app's good requests >= 2x bare vLLM's | {format_ratio(two)} | "
                 f"{verdict(two, 'at_least', 2.0) if two else 'no valid pair'} |")
    for server in ("serve_app", "serve_app_haproxy"):
        c = (est.get(server) or {}).get("x5") or {}
        if not c.get("refusal_n"):
            continue
        met = c["refusal_p50_ms"] <= 10 and c["refusal_tail_ms"] <= 50
        lines.append(f"| 5x capacity: {server} 429 on arrival at the client p50 <= 10 ms, p99 <= 50 ms (pooled "
                     f"over the valid repeats, {c['refusal_tail']}) | {c['refusal_p50_ms']:.1f} / "
                     f"{c['refusal_tail_ms']:.1f} ms | {'met' if met else 'NOT met'} |")
    lost = sum(c.get("admitted_lost", 0) for server, by_load in est.items() if server.startswith("serve_app")
               for c in by_load.values())
    lines.append(f"| nothing admitted lost by serve_app (every load and repeat) | {lost} lost | "
                 f"{'met' if lost == 0 else 'NOT met'} |")
    return "\n".join(lines)


def speculation_load(data: dict) -> str:
    """benchmarks/speculation_load.py: mean output tokens/s per server and the paired ratios with their 95%
    intervals and verdicts (auto >= 0.97x off everywhere; copy-heavy at 1 user >= 2x bare vLLM)."""
    meta = data["meta"]
    lines = [f"{_cpu(meta)}, {meta['date']}, commit "
             f"{meta['commit'][:10]}{_uncommitted(meta)}; default model, "
             f"float32, greedy, up to 96 output tokens; {meta['repeats']} interleaved repeats (a server started "
             f"afresh for each{'; order ' + meta['order'] if meta.get('order') else ''}); output tokens/s (mean over "
             "valid repeats), ratios [95% CI over the repeat pairs]; "
             "acceptance and tokens per verification step of `auto` from /metrics.", "",
             "| prompt set | users | vllm serve | serve_app off | serve_app auto | auto / off | auto / vllm | "
             "auto / auto ungoverned | acceptance | tokens/step | verdict |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]

    def num(value, digits=1) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    for row in data["estimates"]:
        mean = row["mean_tok_s"]
        checks = []
        if row["auto_vs_serve_app_off"]:
            checks.append("auto >= 0.97x off: " + verdict(row["auto_vs_serve_app_off"], "at_least", 0.97))
        if row["prompt_set"] == "copy" and row["users"] == 1 and row["auto_vs_vllm"]:
            checks.append("auto >= 2x vLLM: " + verdict(row["auto_vs_vllm"], "at_least", 2.0))
        lines.append(f"| {row['prompt_set']} | {row['users']} | {num(mean.get('vllm'))} | "
                     f"{num(mean.get('serve_app_off'))} | {num(mean.get('serve_app_auto'))} | "
                     f"{format_ratio(row['auto_vs_serve_app_off'])} | {format_ratio(row['auto_vs_vllm'])} | "
                     f"{format_ratio(row.get('auto_vs_serve_app_auto_ungoverned'))} | "
                     f"{num(row['acceptance_rate'], 2)} | {num(row['tokens_per_step'], 2)} | "
                     f"{'; '.join(checks) or '-'} |")
    return "\n".join(lines)


def speculation_load_profiled(data: dict) -> str:
    """`speculation_load`, then (runs with --profile-engine) where each server's engine spent its time, per prompt
    set and load."""
    sections = []
    for prompt_set in dict.fromkeys(row["prompt_set"] for row in data["estimates"]):
        profiled = [{"server": name, "run": key, "engine_profile": cell["engine_profile"]}
                    for name, repeats in data["runs"].items() for cells in repeats for key, cell in cells.items()
                    if key.startswith(f"{prompt_set}_c") and isinstance(cell, dict) and cell.get("engine_profile")]
        if profiles := engine_profiles({"runs": profiled}):
            sections.append(f"{prompt_set}:\n\n{profiles}")
    if not sections:
        return speculation_load(data)
    delay_s, duration_s = data["meta"]["profile_engine"].split(",")
    return (f"{speculation_load(data)}\n\nWhere the engine's time goes: share of py-spy's samples of the process that "
            f"runs the model, over {duration_s} s from {delay_s} s into each cell (less where the cell ended sooner: "
            "fewer samples per run), inside each stage, mean over the repeats.\n\n" + "\n\n".join(sections))


PREFIX_ROUTERS = (("prefix_affinity", "prefix affinity (serve_app)"),
                  ("power_of_two", "power of two choices (Ray's default)"))
MIN_P99_SAMPLES = 200  # a p99 over fewer requests is reported as the max of N


def _ttft_tail(row: dict) -> str:
    n = row.get("ttft_n")
    if n is None:
        return f"p99 {row['ttft_p99_ms']:,.0f} (n not recorded)"
    return f"p99 {row['ttft_p99_ms']:,.0f}" if n >= MIN_P99_SAMPLES else f"max of {n}: {row['ttft_max_ms']:,.0f}"


def prefix_routing(data: dict) -> str:
    """benchmarks/prefix_routing.py: every run of each router, each on the machine and commit it names, then the
    paired ratios (prefix affinity / default) over the repeats where both runs are usable, with their interval and,
    from three pairs, a verdict on the target (TTFT p50 <= 0.5x); no ratio from a run the load tester marked invalid
    or one with errors. Mean TTFT and TTFT p50 per conversation turn (first, second, ...) show where the overall p50
    comes from: it mixes first turns (the system prompt at best cached) with later ones (their own turns cached)."""
    runs, meta = data["runs"], data["meta"]
    order = f"; order {meta['order']}" if meta.get("order") else ""
    repeats = f"{meta['repeats']} interleaved repeat(s){order}" if meta.get("repeats") else "one run per router"
    lines = [f"{meta['workload']}; two replicas of the default model (float32, speculation off); {repeats}.", ""]
    for router, name in PREFIX_ROUTERS:
        places = dict.fromkeys(f"{_cpu(w)}, {w['date']}, commit {w['commit'][:10]}{_uncommitted(w)}"
                               for r in runs.get(router, []) if (w := r.get("machine")))
        if places:
            lines.append(f"- {name}: {'; '.join(places)}")
    lines += ["", "| router | run | TTFT p50 ms | TTFT p50 by turn ms | TTFT mean ms | TTFT tail ms | TPOT p50 ms | "
                  "output tok/s | errors | prefix-cache hit rate per replica | load tester |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for router, name in PREFIX_ROUTERS:
        for i, row in enumerate(runs.get(router) or [{"error": "not run"}]):
            if "error" in row:
                lines.append(f"| {name} | {i + 1} | failed: {row['error']} |||||||||")
                continue
            hits = ", ".join("n/a" if c.get("hit_rate") is None else f"{c['hit_rate']:.0%}"
                             for c in row["replicas"].values())
            checked = ("not recorded" if "valid" not in row else "valid" if row["valid"]
                       else "INVALID (" + "; ".join(reason.split(":")[0] for reason in row["invalid_reasons"]) + ")")
            by_turn = " / ".join("-" if v is None else f"{v:,.0f}" for v in row.get("ttft_p50_by_turn_ms") or []) or "-"
            mean = "-" if row.get("ttft_mean_ms") is None else f"{row['ttft_mean_ms']:,.0f}"
            lines.append(f"| {name} | {i + 1} | {row['ttft_p50_ms']:,.0f} | {by_turn} | {mean} | {_ttft_tail(row)} | "
                         f"{row['tpot_p50_ms']:.0f} | {row['output_tok_s']:.1f} | {row['error_rate']:.0%} | {hits} | "
                         f"{checked} |")
    estimate = data.get("estimates") or {}
    if estimate.get("num_pairs"):
        lines += ["", f"Prefix affinity / default over {estimate['num_pairs']} pair(s) of usable runs: TTFT p50 "
                      f"{format_ratio(estimate['ttft_p50'])} (target <= 0.5x: "
                      f"{verdict(estimate['ttft_p50'], 'at_most', 0.5)}), output tokens/s "
                      f"{format_ratio(estimate['output_tok_s'])}."]
        if estimate.get("ttft_mean"):
            lines[-1] += f" TTFT mean {format_ratio(estimate['ttft_mean'])}."
        if estimate.get("ttft_p50_by_turn"):
            lines[-1] += (" TTFT p50 by turn (first, second, ...): "
                          + ", ".join(format_ratio(turn) for turn in estimate["ttft_p50_by_turn"]) + ".")
    else:
        lines += ["", "No repeat has two usable runs (valid by the load tester's self-check, no errors): no ratio is "
                      "drawn from these rows."]
    return "\n".join(lines)


TOKEN_JITTER_ORDER = ("vllm", "vllm_worker_in_core", "serve_app_direct_ingress", "serve_app_haproxy",
                      "serve_app", "serve_app_control_loop_0_5")


def token_jitter(data: dict) -> str:
    """The 1-user inter-token gaps per server (benchmarks/token_jitter.py), pooled over the valid repeats."""
    measured = data["meta"]["measured"]
    uncommitted = " (uncommitted changes in benchmarks/)" if measured.get("uncommitted") else ""
    lines = [f"{measured['cpu']} ({', '.join(measured['cpu_flags']) or 'no AVX-512'}), {measured['date']}, commit "
             f"{measured['commit'][:10]}{uncommitted}; loadtest, 1 user, 128-token prompts, 64 output tokens; gaps "
             "between a stream's successive tokens at the client, pooled over the valid repeats.", "",
             "| server | gaps | p50 | p90 | p99 | p99.9 | max | gaps > 1.25x p50 | > 1.5x p50 | stall ms per 1,000 gaps | "
             "p99 per repeat |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    servers = data["servers"]
    for name in sorted(servers, key=lambda n: (TOKEN_JITTER_ORDER + (n,)).index(n)):
        pooled, repeats = servers[name]["pooled"], servers[name]["repeats"]
        per_repeat = ", ".join("INVALID" if not r["valid"] else "-" if r["p99_ms"] is None else f"{r['p99_ms']:.1f}"
                               for _, r in sorted(repeats.items()))
        if pooled is None:
            lines.append(f"| {name} | 0 | - | - | - | - | - | - | - | - | {per_repeat} |")
            continue
        lines.append(
            f"| {name} | {pooled['num_gaps']} | {pooled['p50_ms']:.1f} ms | {pooled['p90_ms']:.1f} ms | "
            f"{pooled['p99_ms']:.1f} ms | {pooled['p99_9_ms']:.1f} ms | {pooled['max_ms']:.1f} ms | "
            f"{100 * pooled['share_over_1_25x_median']:.1f}% | {100 * pooled['share_over_1_5x_median']:.1f}% | "
            f"{pooled['stall_ms_per_1000_gaps']:.0f} | {per_repeat} |")
    cpu = data.get("cpu")
    if cpu:
        cpu_servers = sorted(cpu["servers"], key=lambda n: (TOKEN_JITTER_ORDER + (n,)).index(n))
        roles = sorted({role for s in cpu["servers"].values() for role in s["cpu_ms_per_token"]},
                       key=lambda role: (role.startswith("other"), role))
        measured = cpu["measured"]
        lines += ["", f"CPU milliseconds per output token by process, 1 user (commit {measured['commit'][:10]}, "
                  f"{measured['date']}; every process on the machine but the clients; repeats: "
                  f"{', '.join(str(cpu['servers'][n]['num_repeats']) for n in cpu_servers)}):", "",
                  "| process | " + " | ".join(cpu_servers) + " |", "|---" * (len(cpu_servers) + 1) + "|"]
        for role in roles:
            cells = [cpu["servers"][n]["cpu_ms_per_token"].get(role) for n in cpu_servers]
            lines.append(f"| {role} | " + " | ".join("-" if c is None else f"{c:.2f}" for c in cells) + " |")
        engine_roles = ("vLLM engine core", "vLLM worker")
        totals = [sum(v for r, v in cpu["servers"][n]["cpu_ms_per_token"].items()
                      if r not in engine_roles and not r.startswith("other")) for n in cpu_servers]
        lines.append("| **the serving layer (all but the engine and other)** | "
                     + " | ".join(f"**{t:.2f}**" for t in totals) + " |")
    return "\n".join(lines)


def wave_stalls(data: dict) -> str:
    """The many-user runs of side by sides (benchmarks/wave_stalls.py), one row per server and client: per repeat
    the prefill-wave stalls against the p99's rank, and the p99 (in bold where it landed on a stall)."""
    meta = data["meta"]
    lines = [f"{meta['users']} users, closed loop; a stall is a gap over {meta['stall_over_median']:g}x the run's "
             "median gap. Runs from " + "; ".join(f"`{folder}` ({m['cpu']}, {m['date']}, commit {m['commit'][:10]})"
                                                  for folder, m in meta["measured"].items()) + ".", "",
             "| side by side | server | client | gaps per run | p99 rank | stalls per repeat | shortest stall | "
             "ITL p99 per repeat (**on a stall**) |", "|---|---|---|---|---|---|---|---|"]
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for row in data["runs"]:
        groups.setdefault((row["folder"], row["server"], row["client"]), []).append(row)
    for (folder, server, client), rows in groups.items():
        rows = sorted(rows, key=lambda r: r["repeat"])
        p99s = ", ".join((f"**{r['p99_ms'] / 1000:.2f} s**" if r["p99_on_a_stall"] else f"{r['p99_ms'] / 1000:.2f} s")
                         + (" (INVALID)" if r["valid"] is False else "") for r in rows)
        stalls = [r["shortest_stall_ms"] for r in rows if r["shortest_stall_ms"] is not None]
        num_gaps = sorted({r["num_gaps"] for r in rows})
        lines.append(f"| {folder.removeprefix('results/side_by_side/')} | {server} | {client} | "
                     + "-".join(str(n) for n in num_gaps[::max(1, len(num_gaps) - 1)])
                     + f" | {rows[0]['p99_rank']} | {', '.join(str(r['num_stalls']) for r in rows)} | "
                     + (f"{min(stalls) / 1000:.2f} s" if stalls else "-") + f" | {p99s} |")
    return "\n".join(lines)


def engine_profiles(summary: dict) -> str:
    """side_by_side.py --profile-engine: per server and load, the share of the engine's py-spy samples inside each
    stage (harness.ENGINE_STAGES), mean over the repeats that have a profile ("" when no run has one)."""
    cells: dict[tuple[str, int], list[dict]] = {}
    for run in summary["runs"]:
        if run.get("engine_profile"):
            cells.setdefault((run["server"], int(run["run"].rsplit("_c", 1)[1])), []).append(run["engine_profile"])
    if not cells:
        return ""
    stages = list(next(iter(cells.values()))[0]["shares"])
    lines = ["| server | users | runs | samples per run | " + " | ".join(stages) + " |",
             "|---|---|---|---|" + "---|" * len(stages)]
    for (server, users), profiles in sorted(cells.items()):
        shares = [sum(p["shares"][stage] for p in profiles) / len(profiles) for stage in stages]
        lines.append(f"| {server} | {users} | {len(profiles)} | {min(p['samples'] for p in profiles)} | "
                     + " | ".join(f"{100 * share:.1f}%" for share in shares) + " |")
    return "\n".join(lines)


def engine_profile_table(summary: dict, window: str) -> str:
    """The README's form of `engine_profiles`: the machine and commit, then the table (`window`: what
    `--profile-engine DELAY_S,DURATION_S` the runs were sampled with, in words)."""
    meta = summary["meta"]
    return (f"{_cpu(meta)}, {meta['date']}, commit "
            f"{meta['commit'][:10]}{_other_commits(meta)}; share of py-spy's samples of the process that runs the "
            f"model (vLLM's worker, or the engine core holding it), {window} into each run, inside each "
            "stage.\n\n" + engine_profiles(summary))


def _machine(meta: dict) -> str:
    """A run's CPU in a few words: its model name and the widest of its matrix instruction sets."""
    flags = set(meta.get("cpu_flags", []))
    widest = ("AMX" if "amx_bf16" in flags else "avx512_bf16, no AMX" if "avx512_bf16" in flags
              else "avx512" if "avx512f" in flags else "no avx512")
    return f"{meta['cpu'].replace('(R)', '').replace(' Processor', '')} ({widest})"


def side_by_side_targets(index: dict, repo: Path = REPO) -> str:
    """Every target verdict of the side by sides `index["summaries"]` names (paths from the repository root), each run
    named with its machine, date and commit, then one row per verdict: the README's targets at a glance."""
    runs, rows = [], []
    for path in index["summaries"]:
        meta = (summary := json.loads((repo / path).read_text()))["meta"]
        name = Path(path).parent.name
        runs.append(f"- [{name}]({Path(path).parent}/summary.md): {_machine(meta)}, {meta['date']}, commit "
                    f"{meta['commit'][:10]}{_uncommitted(meta)}{_other_commits(meta)}, {meta['num_repeats']} "
                    "interleaved repeats")
        rows += [f"| {name} | {t['target']} | {t['server']} | {t['client']} | {t['measured']} | {t['verdict']} |"
                 for t in summary.get("targets", [])]
    return "\n".join(runs + ["", "| run | target | server | client | measured [95% CI] | verdict |",
                              "|---|---|---|---|---|---|"] + rows)


TABLES: dict[str, tuple[str, Table]] = {
    "compression": ("results/compression/compression.json", compression),
    "compression_speed_no_avx512": ("results/compression/speed_pair_w8a8_fp32_no_avx512.json", compression_speed_pair),
    "compression_speed_amx_bf16": ("results/compression/speed_pair_w8a8_bf16_amx.json", compression_speed_pair),
    "dtype_speed_amx": ("results/dtype/float32_vs_bfloat16_amx.json", compression_speed_pair),
    "autoscale_replay": ("results/autoscale_replay/autoscale_replay.json", autoscale_replay),
    "overload_soak": ("results/overload_soak.json", overload_soak),
    "noisy_neighbour": ("results/noisy_neighbour/summary.json", noisy_neighbour),
    # The same benchmark on a 2-core Intel Xeon with AVX-512 (today's code, 2026-12-06; --out there).
    "noisy_neighbour_xeon": ("results/noisy_neighbour_xeon/summary.json", noisy_neighbour),
    "noisy_neighbour_amx": ("results/noisy_neighbour_amx/summary.json", noisy_neighbour),
    "goodput": ("results/goodput/summary.json", goodput),
    "goodput_amx": ("results/goodput_amx/summary.json", goodput),
    "prefix_routing": ("results/prefix_routing/summary.json", prefix_routing),
    # The same with each system prompt shared by two conversations (16 prompts of ~2000 tokens; --out there).
    "prefix_routing_shared_prompts": ("results/prefix_routing/shared_prompts/summary.json", prefix_routing),
    "speculation_load": ("results/speculation/load/summary.json", speculation_load),
    "speculation_load_amx": ("results/speculation/load_amx/summary.json", speculation_load),
    "speculation_load_amx_d28894a": ("results/speculation/load_amx_d28894a/summary.json", speculation_load),
    "speculation_translate_and_chat_amx": ("results/speculation/diagnostics_amx/translate_and_chat/summary.json",
                                           speculation_load_profiled),
    "speculation_chat_c8_amx": ("results/speculation/chat_c8_amx/summary.json", speculation_load_profiled),
    "speculation_chat_c1_then_c8_amx": ("results/speculation/diagnostics_amx/chat_c1_then_c8/summary.json",
                                        speculation_load_profiled),
    "speculation_copy_and_chat_amx": ("results/speculation/diagnostics_amx/copy_and_chat/summary.json",
                                      speculation_load_profiled),
    # The same benchmark at 8 users on a 2-core Intel Xeon with AVX-512, after the plain-sampler patch (--out there).
    "speculation_load_xeon_c8": ("results/speculation/load_xeon_c8/summary.json", speculation_load),
    "token_jitter": ("results/token_jitter/jitter.json", token_jitter),
    "token_jitter_control_loop": ("results/token_jitter/control_loop/jitter.json", token_jitter),
    # name -> (results file relative to the repository, renderer)
    "side_by_side": ("results/side_by_side/summary.json", lambda data: side_by_side(data, "loadtest")),
    "side_by_side_vllm_bench": ("results/side_by_side/summary.json", lambda data: side_by_side(data, "vllm_bench")),
    # The same side by side on a 2-core EPYC without AVX-512, today's defaults, 1 and 32 users.
    "side_by_side_no_avx512": ("results/side_by_side/no_avx512/summary.json",
                               lambda data: side_by_side(data, "loadtest")),
    "side_by_side_no_avx512_vllm_bench": ("results/side_by_side/no_avx512/summary.json",
                                          lambda data: side_by_side(data, "vllm_bench")),
    "token_jitter_no_avx512": ("results/side_by_side/no_avx512/jitter.json", token_jitter),
    # Ray's worker niceness, 0 (then the default: `serve_app`, `serve_app_default`) against Ray's 15, clients at 0.
    "side_by_side_worker_niceness": ("results/side_by_side/no_avx512_worker_niceness/summary.json",
                                     lambda data: side_by_side(data, "loadtest")),
    "token_jitter_worker_niceness": ("results/side_by_side/no_avx512_worker_niceness/jitter.json", token_jitter),
    # The same at 1 user with the load tester at niceness -10 (`serve_app`: workers at 0).
    "token_jitter_worker_niceness_client_nice": ("results/side_by_side/worker_niceness_client_nice/jitter.json",
                                                 token_jitter),
    # 32 users, the load tester at niceness -10: workers at 0 against Ray's 15 (today's `serve_app`).
    "side_by_side_worker_niceness_client_nice_c32": ("results/side_by_side/worker_niceness_client_nice_c32/summary.json",
                                                     lambda data: side_by_side(data, "loadtest")),
    # The 32-user runs' prefill-wave stalls against the p99's rank (benchmarks/wave_stalls.py).
    "wave_stalls_c32": ("results/side_by_side/wave_stalls_c32/wave_stalls.json", wave_stalls),
    # 32 users staggered over 16 s (side_by_side.py --ramp-up-s 16), and its gaps counted as wave_stalls does.
    "side_by_side_staggered_c32": ("results/side_by_side/staggered_c32/summary.json",
                                   lambda data: side_by_side(data, "loadtest")),
    "wave_stalls_staggered_c32": ("results/side_by_side/staggered_c32/wave_stalls.json", wave_stalls),
    # 8 and 128 users on the 2-core EPYC without AVX-512, clients at niceness -10 (2026-12-06).
    "side_by_side_no_avx512_c8": ("results/side_by_side/no_avx512_c8/summary.json",
                                  lambda data: side_by_side(data, "loadtest")),
    "side_by_side_no_avx512_c8_vllm_bench": ("results/side_by_side/no_avx512_c8/summary.json",
                                             lambda data: side_by_side(data, "vllm_bench")),
    "side_by_side_no_avx512_c128": ("results/side_by_side/no_avx512_c128/summary.json",
                                    lambda data: side_by_side(data, "loadtest")),
    # 32 users staggered, serve_app against vLLM with its worker in the engine core as the baseline.
    "side_by_side_staggered_c32_worker_in_core": ("results/side_by_side/staggered_c32_worker_in_core/summary.json",
                                                  lambda data: side_by_side(data, "loadtest")),
    # 1 user on today's code (the draft governor's run): every server against bare vLLM.
    "side_by_side_c1_today": ("results/side_by_side/draft_governor_c1/summary.json",
                              lambda data: side_by_side(data, "loadtest")),
    "side_by_side_c1_today_vllm_bench": ("results/side_by_side/draft_governor_c1/summary.json",
                                         lambda data: side_by_side(data, "vllm_bench")),
    # The draft governor at 32 users staggered: the default against the default without it.
    "side_by_side_draft_governor_c32": ("results/side_by_side/draft_governor_c32_staggered/summary.json",
                                        lambda data: side_by_side(data, "loadtest")),
    # 32 users staggered on today's code: serve_app and the default against bare vLLM.
    "side_by_side_c32_staggered_today": ("results/side_by_side/c32_staggered_today/summary.json",
                                         lambda data: side_by_side(data, "loadtest")),
    # 1 user on today's code on the 2-core Intel Xeon: serve_app and the default against bare vLLM.
    "side_by_side_c1_xeon": ("results/side_by_side/c1_xeon/summary.json", lambda data: side_by_side(data, "loadtest")),
    # 32 users staggered on the Xeon: serve_app, the default and serve_app with Ray's HAProxy against bare vLLM.
    "side_by_side_c32_staggered_xeon": ("results/side_by_side/c32_staggered_xeon/summary.json",
                                        lambda data: side_by_side(data, "loadtest")),
    # 1 and 8 users on the Xeon: serve_app through Ray's proxy and through its HAProxy against bare vLLM.
    "side_by_side_c1_c8_haproxy_xeon": ("results/side_by_side/c1_c8_haproxy_xeon/summary.json",
                                        lambda data: side_by_side(data, "loadtest")),
    # 8 users on the Xeon after the plain-sampler patch: serve_app (speculation off) and the default against bare vLLM.
    "side_by_side_c8_xeon": ("results/side_by_side/c8_xeon/summary.json", lambda data: side_by_side(data, "loadtest")),
    # 128 users on the Xeon: serve_app (speculation off) and the default against bare vLLM.
    "side_by_side_c128_xeon": ("results/side_by_side/c128_xeon/summary.json",
                               lambda data: side_by_side(data, "loadtest")),
    # 128 users on the Xeon: bare vLLM with the default's speculative config against bare vLLM.
    "speculation_cost_c128_xeon": ("results/speculation/cost_c128_xeon/summary.json",
                                   lambda data: side_by_side(data, "loadtest")),
    # Where the engine's time goes at 128 users: bare vLLM with the default's speculative config, and the default.
    "engine_profile_c128_xeon": ("results/speculation/engine_profile_c128_xeon/summary.json",
                                 lambda data: engine_profile_table(data, "60 s from 60 s")),  # --profile-engine 60,60
    # Where the engine's time goes at 8 users: serve_app with speculation off, and the default.
    "engine_profile_c8": ("results/speculation/engine_profile_c8_xeon/summary.json",
                          lambda data: engine_profile_table(data, "50 s from 10 s")),  # --profile-engine 10,50
    # The same runs' ratios: the default against serve_app with speculation off.
    "speculation_cost_c8_amx": ("results/speculation/engine_profile_c8_xeon/summary.json",
                                lambda data: side_by_side(data, "loadtest")),
    # 1 user on the Xeon with AMX: serve_app, the default and Ray Serve LLM (optimized mode) against bare vLLM.
    "side_by_side_c1_amx": ("results/side_by_side/c1_amx/summary.json", lambda data: side_by_side(data, "loadtest")),
    "side_by_side_c1_amx_vllm_bench": ("results/side_by_side/c1_amx/summary.json",
                                       lambda data: side_by_side(data, "vllm_bench")),
    # 8 users on the Xeon with AMX: serve_app (speculation off) and the default against bare vLLM.
    "side_by_side_c8_amx": ("results/side_by_side/c8_amx/summary.json", lambda data: side_by_side(data, "loadtest")),
    # 32 users (all at once: vllm bench serve has no staggered start) on the Xeon with AMX: the default.
    "side_by_side_c32_amx": ("results/side_by_side/c32_amx/summary.json", lambda data: side_by_side(data, "loadtest")),
    "side_by_side_c32_amx_vllm_bench": ("results/side_by_side/c32_amx/summary.json",
                                        lambda data: side_by_side(data, "vllm_bench")),
    # 128 users on the Xeon with AMX: speculation off and the default, both clients.
    "side_by_side_c128_amx": ("results/side_by_side/c128_amx/summary.json",
                              lambda data: side_by_side(data, "loadtest")),
    "side_by_side_c128_amx_vllm_bench": ("results/side_by_side/c128_amx/summary.json",
                                         lambda data: side_by_side(data, "vllm_bench")),
    # Every side by side target of the latest run of each load, one table (README: targets at a glance).
    "side_by_side_targets": ("results/side_by_side/targets_at_a_glance.json", side_by_side_targets),
    # The n-gram draft governor at 1 user: the default, the default without it, serve_app speculation off, bare vLLM.
    "token_jitter_draft_governor": ("results/side_by_side/draft_governor_c1/jitter.json", token_jitter),
    # The same runs, every ratio to the default without its governor (--summarise-only on the same runs/).
    "side_by_side_draft_governor_vs_ungoverned_vllm_bench": (
        "results/side_by_side/draft_governor_c1_vs_ungoverned/summary.json",
        lambda data: side_by_side(data, "vllm_bench")),
    # Speculation auto's cost, bare vLLM with the same speculative config beside it (side_by_side.py --out there).
    "speculation_default_cost": ("results/speculation/default_cost/summary.json",
                                 lambda data: side_by_side(data, "vllm_bench")),
}
