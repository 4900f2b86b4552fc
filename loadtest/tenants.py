"""Per-tenant results of a multi-tenant run (pure: records in, numbers and text out).

Over the run's measurement window (loadtest/metrics.py), for each tenant: requests, ok, 429s and other errors;
TTFT and TPOT percentiles (p50, p99 with confidence intervals) of its successful requests; goodput, the share
of its measured requests (refused ones included) that succeeded with TTFT <= slo_ttft_ms and TPOT <=
slo_tpot_ms (a one-token answer has no TPOT and meets that part), and those good requests per second; and its
share of the output tokens generated in the window.
"""

from __future__ import annotations

import math

from loadtest.config import LoadTestConfig
from loadtest.metrics import measurement_window_s, output_tokens, request_metrics
from loadtest.records import RequestRecord
from serve_app.stats import percentile_key, summarize

TENANT_PERCENTILES = (50.0, 99.0)


def is_good_for_tenant(metrics: dict, slo_ttft_ms: float, slo_tpot_ms: float) -> bool:
    ttft = metrics.get("ttft")
    tpot = metrics.get("tpot")
    return ttft is not None and ttft <= slo_ttft_ms and (tpot is None or tpot <= slo_tpot_ms)


def summarize_tenants(records: list[RequestRecord], config: LoadTestConfig) -> dict[str, dict]:
    """{tenant name: summary} for the tenants of `config` (module docstring)."""
    if not records:
        return {t.name: {"num_requests": 0} for t in config.tenants}
    window_start_s, window_end_s = measurement_window_s(records, config)
    window_s = window_end_s - window_start_s
    ordered = sorted(records, key=lambda r: r.send_s)
    measured = [r for i, r in enumerate(ordered)
                if i >= config.warmup_requests and window_start_s <= r.send_s <= window_end_s]
    total_output_tokens = sum(output_tokens(r) or 0 for r in measured if r.ok)
    summaries = {}
    for tenant in config.tenants:
        mine = [r for r in measured if r.tenant == tenant.name]
        ok = [r for r in mine if r.ok]
        metrics = [request_metrics(r) for r in ok]
        num_429 = sum(1 for r in mine if r.status_code == 429)
        num_good = sum(1 for m in metrics if is_good_for_tenant(m, config.slo_ttft_ms, config.slo_tpot_ms))
        tenant_output_tokens = sum(output_tokens(r) or 0 for r in ok)
        summaries[tenant.name] = {
            "concurrency": tenant.concurrency,
            "num_requests": len(mine),
            "num_ok": len(ok),
            "num_429": num_429,
            "num_errors": len(mine) - len(ok) - num_429,
            "ttft_ms": summarize([m["ttft"] for m in metrics if "ttft" in m], TENANT_PERCENTILES, config.confidence),
            "tpot_ms": summarize([m["tpot"] for m in metrics if "tpot" in m], TENANT_PERCENTILES, config.confidence),
            "goodput": {
                "slo_ttft_ms": config.slo_ttft_ms,
                "slo_tpot_ms": config.slo_tpot_ms,
                "num_good": num_good,
                "good_fraction": num_good / len(mine) if mine else None,
                "goodput_rps": num_good / window_s if window_s > 0 else None,
            },
            "output_tokens": tenant_output_tokens,
            "output_token_share": tenant_output_tokens / total_output_tokens if total_output_tokens else None,
        }
    return summaries


def flat_tenant_metrics(summary: dict) -> dict[str, float]:
    """Gate names: tenant_<NAME>_ttft_p99_ms, tenant_<NAME>_good_fraction, tenant_<NAME>_num_429, ..."""
    flat: dict[str, float] = {}
    for name, tenant in (summary.get("tenants") or {}).items():
        prefix = f"tenant_{name}_"
        for key in ("num_requests", "num_ok", "num_429", "num_errors", "output_token_share"):
            if tenant.get(key) is not None:
                flat[prefix + key] = float(tenant[key])
        goodput = tenant.get("goodput") or {}
        for key in ("good_fraction", "goodput_rps"):
            if goodput.get(key) is not None:
                flat[prefix + key] = float(goodput[key])
        for metric in ("ttft", "tpot"):
            dist = tenant.get(f"{metric}_ms") or {}
            for q in TENANT_PERCENTILES:
                value = (dist.get(percentile_key(q)) or {}).get("value") if dist.get("n") else None
                if value is not None and not math.isnan(value):
                    flat[f"{prefix}{metric}_{percentile_key(q)}_ms"] = float(value)
    return flat


def tenant_table(summary: dict) -> list[str]:
    """A Markdown table, one row per tenant; empty when the run had no tenants."""
    tenants = summary.get("tenants") or {}
    if not tenants:
        return []
    slo = next(iter(tenants.values())).get("goodput") or {}
    header = ["tenant", "users", "requests", "ok", "429", "errors", "TTFT p50 ms", "TTFT p99 ms", "TPOT p50 ms",
              "TPOT p99 ms", f"goodput (TTFT<={slo.get('slo_ttft_ms', 0):g}, TPOT<={slo.get('slo_tpot_ms', 0):g})",
              "output share"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for name, tenant in tenants.items():
        if "concurrency" not in tenant:
            continue
        goodput = tenant["goodput"]
        fraction = goodput["good_fraction"]
        share = tenant["output_token_share"]
        row = [name, str(tenant["concurrency"]), str(tenant["num_requests"]), str(tenant["num_ok"]),
               str(tenant["num_429"]), str(tenant["num_errors"]),
               _percentile(tenant["ttft_ms"], 50.0), _percentile(tenant["ttft_ms"], 99.0),
               _percentile(tenant["tpot_ms"], 50.0), _percentile(tenant["tpot_ms"], 99.0),
               "-" if fraction is None else f"{fraction:.0%} ({_number(goodput['goodput_rps'], 2)} req/s)",
               "-" if share is None else f"{share:.0%}"]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def _percentile(dist: dict, q: float) -> str:
    if not dist.get("n"):
        return "-"
    return _number((dist.get(percentile_key(q)) or {}).get("value"), 1)


def _number(value, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"
