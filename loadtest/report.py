"""Console tables, Markdown reports, gates and comparisons (pure text in/out)."""

import math
import operator
import re

from loadtest.tenants import flat_tenant_metrics, tenant_table
from serve_app.stats import DEFAULT_PERCENTILES, percentile_key

_LATENCY_ROWS = (
    ("ttft", "TTFT"),
    ("tpot", "TPOT"),
    ("itl", "inter-token gap"),
    ("e2e", "end-to-end"),
    ("ttft_from_arrival", "TTFT from arrival"),
    ("e2e_from_arrival", "e2e from arrival"),
    ("schedule_lag", "schedule lag"),
)
_OPERATORS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt, "==": operator.eq, "!=": operator.ne}
_GATE_PATTERN = re.compile(r"^\s*([A-Za-z0-9_]+)\s*(<=|>=|==|!=|<|>)\s*([-+0-9.eE]+)\s*$")
# Rows shown by `compare`, with whether a higher value is better.
COMPARE_METRICS = (
    ("ttft_p50_ms", False), ("ttft_p99_ms", False), ("tpot_p50_ms", False), ("tpot_p99_ms", False),
    ("itl_p99_ms", False), ("e2e_p50_ms", False), ("e2e_p99_ms", False),
    ("ttft_from_arrival_p99_ms", False), ("request_throughput_rps", True),
    ("output_throughput_tps", True), ("goodput_rps", True), ("error_rate", False),
)


def flat_metrics(summary: dict) -> dict[str, float]:
    """Flat names for gates and comparisons: ttft_p99_ms, e2e_from_arrival_p50_ms, output_throughput_tps, ..."""
    flat: dict[str, float] = {}
    for key in ("num_requests", "num_measured", "num_ok", "num_errors", "error_rate",
                "request_throughput_rps", "output_throughput_tps", "input_throughput_tps"):
        if summary.get(key) is not None:
            flat[key] = float(summary[key])
    goodput = summary.get("goodput") or {}
    for key in ("goodput_rps", "good_fraction"):
        if goodput.get(key) is not None:
            flat[key] = float(goodput[key])

    def add_distribution(prefix: str, dist: dict, unit: str) -> None:
        if not dist.get("n"):
            return
        flat[f"{prefix}_mean{unit}"] = dist["mean"]
        flat[f"{prefix}_max{unit}"] = dist["max"]
        for key, value in dist.items():
            if key.startswith("p") and isinstance(value, dict):
                flat[f"{prefix}_{key}{unit}"] = value["value"]

    for name, dist in (summary.get("latency_ms") or {}).items():
        add_distribution(name, dist, "_ms")
    for stage, dist in (summary.get("timings_ms") or {}).items():
        add_distribution(f"timings_{stage.removesuffix('_ms')}", dist, "_ms")
    tokens = summary.get("tokens") or {}
    for name in ("output_tokens", "tokens_per_event"):
        add_distribution(name, tokens.get(name) or {}, "")
    if summary.get("tenants"):
        flat.update(flat_tenant_metrics(summary))
    return {k: v for k, v in flat.items() if v is not None and not (isinstance(v, float) and math.isnan(v))}


def _fmt(value, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _with_ci(estimate: dict | None) -> str:
    if not estimate:
        return "-"
    low = _fmt(estimate["ci_low"]) if estimate["ci_low"] is not None else "?"
    high = _fmt(estimate["ci_high"]) if estimate["ci_high"] is not None else "?"
    return f"{_fmt(estimate['value'])} [{low}, {high}]"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def latency_table(summary: dict, open_loop: bool) -> list[str]:
    header = ["metric (ms)", "n", "mean"] + [f"{percentile_key(q)} [95% CI]" for q in DEFAULT_PERCENTILES]
    rows = []
    for name, label in _LATENCY_ROWS:
        if not open_loop and name in ("ttft_from_arrival", "e2e_from_arrival", "schedule_lag"):
            continue
        dist = summary["latency_ms"].get(name) or {}
        if not dist.get("n"):
            continue
        rows.append([label, str(dist["n"]), _fmt(dist["mean"])] + [_with_ci(dist.get(percentile_key(q))) for q in DEFAULT_PERCENTILES])
    for stage, dist in (summary.get("timings_ms") or {}).items():
        if dist.get("n"):
            rows.append([f"server {stage}", str(dist["n"]), _fmt(dist["mean"])] + [_with_ci(dist.get(percentile_key(q))) for q in DEFAULT_PERCENTILES])
    return _table(header, rows)


def headline_lines(result: dict) -> list[str]:
    summary, config, validity = result["summary"], result["config"], result["validity"]
    tenants = config.get("tenants") or []
    tenant_users = ", ".join(f"{t['name']} x{t['concurrency']}" for t in tenants)
    users = f"{config['concurrency']} users" + (f" (tenants {tenant_users})" if tenants else "")
    load = (
        f"closed loop, {users}"
        if config["mode"] == "closed"
        else f"open loop, {config['rate_rps']} req/s, burstiness {config['burstiness'] or 'constant'}"
    )
    goodput = summary.get("goodput") or {}
    lines = [
        f"target {config['base_url']} ({config['endpoint']}), model {result['model']}; {load}; workers {config['workers']}",
        f"requests {summary['num_requests']} (measured {summary['num_measured']}, ok {summary['num_ok']}, "
        f"errors {summary['num_errors']}), window {_fmt(summary['window_s']['length'], 2)} s",
        f"throughput {_fmt(summary['request_throughput_rps'], 2)} req/s, {_fmt(summary['output_throughput_tps'])} output tok/s, "
        f"{_fmt(summary['input_throughput_tps'])} input tok/s",
    ]
    if goodput.get("slos_ms"):
        lines.append(
            f"goodput {_fmt(goodput['goodput_rps'], 2)} req/s ({_fmt((goodput['good_fraction'] or 0) * 100)}% of requests "
            f"meet {goodput['slos_ms']})"
        )
    if summary.get("errors_by_kind"):
        lines.append(f"errors by kind {summary['errors_by_kind']}, by status code {summary['errors_by_status_code']}")
    tokens = summary.get("tokens") or {}
    per_event = tokens.get("tokens_per_event") or {}
    if per_event.get("n"):
        lines.append(
            f"tokens per text event: mean {_fmt(per_event['mean'], 2)}; output tokens counted by server usage, "
            f"checked by {tokens.get('client_count_method')}"
        )
    speculation = summary.get("speculation")
    if speculation and speculation.get("drafts"):
        lines.append(
            f"speculative decoding (server /metrics, warm-up included): acceptance rate "
            f"{_fmt((speculation['acceptance_rate'] or 0) * 100)}%, {_fmt(speculation['tokens_per_step'], 2)} tokens "
            f"per verification step, {int(speculation['drafts'])} steps with drafts"
        )
    lag = validity["loop_lag_ms"]
    cpu = ", ".join(f"{f:.0%}" for f in validity["client_cpu_fraction_per_worker"])
    lines.append(
        f"client self-check: loop lag p99 {_fmt((lag.get('p99') or {}).get('value'), 2)} ms, CPU per worker {cpu} -> "
        + ("VALID" if validity["valid"] else "INVALID")
    )
    lines += [f"INVALID: {reason}" for reason in validity["reasons"]]
    lines += [f"warning: {warning}" for warning in validity["warnings"]]
    return lines


def _tenant_section(summary: dict) -> list[str]:
    table = tenant_table(summary)
    return ["", "Per tenant:", ""] + table if table else []


def console_report(result: dict) -> str:
    return "\n".join(headline_lines(result) + [""] + latency_table(result["summary"], result["config"]["mode"] == "open")
                     + _tenant_section(result["summary"]))


def markdown_report(result: dict, plot_files: list[str] | None = None) -> str:
    lines = ["# Load-test report", ""]
    lines += [f"- {line}" for line in headline_lines(result)]
    lines += ["", "## Latency (ms), percentiles with 95% order-statistic confidence intervals", ""]
    lines += latency_table(result["summary"], result["config"]["mode"] == "open")
    lines += ["", "`?` marks a bound the sample is too small to give.", ""]
    table = tenant_table(result["summary"])
    if table:
        lines += ["## Per tenant", ""] + table + [""]
    if plot_files:
        lines += ["## Plots", ""] + [f"![{name}]({name})" for name in plot_files] + [""]
    lines += ["## Configuration", "", "```json"]
    import json

    lines += [json.dumps(result["config"], indent=2), "```", ""]
    return "\n".join(lines)


def parse_gate(expression: str) -> tuple[str, str, float]:
    match = _GATE_PATTERN.match(expression)
    if not match:
        raise ValueError(f"bad gate {expression!r}; write e.g. 'ttft_p99_ms>500'")
    return match.group(1), match.group(2), float(match.group(3))


def evaluate_gates(summary: dict, expressions: list[str]) -> list[str]:
    """Messages for the gates that trip (the condition is a failure condition)."""
    flat = flat_metrics(summary)
    failures = []
    for expression in expressions:
        name, op, threshold = parse_gate(expression)
        if name not in flat:
            failures.append(f"{expression}: metric {name!r} not in result (known: {', '.join(sorted(flat))})")
        elif _OPERATORS[op](flat[name], threshold):
            failures.append(f"{expression}: {name} = {flat[name]:.3f}")
    return failures


def compare_table(results: list[dict], labels: list[str]) -> str:
    """Each metric for each result, with the ratio to the first (the baseline)."""
    flats = [flat_metrics(r["summary"]) for r in results]
    header = ["metric", labels[0]] + [f"{label} (x baseline)" for label in labels[1:]]
    rows = []
    for name, higher_is_better in COMPARE_METRICS:
        base = flats[0].get(name)
        row = [name + (" (higher better)" if higher_is_better else ""), _fmt(base, 2)]
        for flat in flats[1:]:
            value = flat.get(name)
            ratio = f"{value / base:.3f}" if value is not None and base else "-"
            row.append(f"{_fmt(value, 2)} ({ratio})")
        rows.append(row)
    validity = ["valid" if r["validity"]["valid"] else "INVALID" for r in results]
    rows.append(["client self-check"] + validity)
    return "\n".join(_table(header, rows))
