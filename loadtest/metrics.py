"""Metric definitions and the run summary (pure: records in, numbers out).

Per successful request (times from the request's own clock readings):

- ttft_ms: from send (just before the HTTP request is handed to the client
  library) to the first read carrying generated text (role-only and
  usage-only chunks do not count).
- e2e_ms: from send to the end of the stream.
- tpot_ms: (e2e_ms - ttft_ms) / (output_tokens - 1), for output_tokens >= 2.
  output_tokens is the server's usage.completion_tokens when present, else
  the client-side count.
- itl_ms: every gap between consecutive text-bearing events of a request,
  pooled over requests. tokens_per_event (output_tokens / text events) says
  how many tokens one gap covers.
- ttft_from_arrival_ms, e2e_from_arrival_ms: the same, measured from the
  scheduled arrival time in open-loop runs. A request that waits for an
  in-flight slot or a late event loop is charged for the wait, so they are
  free of coordinated omission. In closed loop they equal the send-time ones.
- schedule_lag_ms: send minus scheduled arrival (open loop).

Run-level: the measurement window is [warmup_s, end] where end is the last
scheduled/sent start minus cooldown_s when cooldown_s > 0, else the last
completion. Latency statistics use requests that start inside the window
(after warmup_requests); throughput counts completions and text events whose
timestamps fall inside it, divided by its length. Each text event is credited
with its request's tokens_per_event.
"""

from loadtest.config import LoadTestConfig
from loadtest.records import RequestRecord
from serve_app.stats import DEFAULT_PERCENTILES, percentile_key, summarize

LATENCY_METRICS = (
    "ttft",
    "tpot",
    "itl",
    "e2e",
    "ttft_from_arrival",
    "e2e_from_arrival",
    "schedule_lag",
)
# Client and server token counts may differ by re-tokenization at piece borders.
TOKEN_COUNT_TOLERANCE = (2, 0.05)


def output_tokens(record: RequestRecord) -> int | None:
    if record.output_tokens_server is not None:
        return record.output_tokens_server
    return record.output_tokens_client


def request_metrics(record: RequestRecord) -> dict:
    """Derived latencies of one successful request (keys as in LATENCY_METRICS, in ms)."""
    metrics: dict = {}
    if not record.ok or record.done_s is None:
        return metrics
    arrival_s = record.scheduled_s if record.scheduled_s is not None else record.send_s
    metrics["e2e"] = (record.done_s - record.send_s) * 1000.0
    metrics["e2e_from_arrival"] = (record.done_s - arrival_s) * 1000.0
    metrics["schedule_lag"] = (record.send_s - arrival_s) * 1000.0
    if record.first_text_s is not None:
        metrics["ttft"] = (record.first_text_s - record.send_s) * 1000.0
        metrics["ttft_from_arrival"] = (record.first_text_s - arrival_s) * 1000.0
        num_tokens = output_tokens(record)
        if num_tokens is not None and num_tokens >= 2:
            metrics["tpot"] = (metrics["e2e"] - metrics["ttft"]) / (num_tokens - 1)
    times = record.event_times_s
    metrics["itl"] = [(b - a) * 1000.0 for a, b in zip(times, times[1:])]
    return metrics


def tokens_per_event(record: RequestRecord) -> float | None:
    num_tokens = output_tokens(record)
    if not record.event_times_s or num_tokens is None:
        return None
    return num_tokens / len(record.event_times_s)


def token_counts_agree(server: int, client: int) -> bool:
    absolute, relative = TOKEN_COUNT_TOLERANCE
    return abs(server - client) <= max(absolute, relative * server)


def measurement_window_s(records: list[RequestRecord], config: LoadTestConfig) -> tuple[float, float]:
    starts = sorted((r.scheduled_s if r.scheduled_s is not None else r.send_s) for r in records)
    start_s = config.warmup_s
    if config.warmup_requests and len(starts) > config.warmup_requests:
        start_s = max(start_s, starts[config.warmup_requests])
    if config.cooldown_s > 0:
        end_s = starts[-1] - config.cooldown_s
    else:
        end_s = max(r.done_s for r in records if r.done_s is not None)
    return start_s, end_s


def measured_records(records: list[RequestRecord], config: LoadTestConfig) -> list[RequestRecord]:
    """The requests whose latencies the summary reports: after the first `warmup_requests` by start, and starting
    inside the measurement window (in start order)."""
    window_start_s, window_end_s = measurement_window_s(records, config)
    ordered = sorted(records, key=lambda r: (r.scheduled_s if r.scheduled_s is not None else r.send_s))
    return [
        r
        for i, r in enumerate(ordered)
        if i >= config.warmup_requests
        and window_start_s <= (r.scheduled_s if r.scheduled_s is not None else r.send_s) <= window_end_s
    ]


def is_good(metrics: dict, slos: dict[str, float]) -> bool:
    """True when every SLO (metric name with _ms -> limit in ms) is met."""
    for name, limit_ms in slos.items():
        value = metrics.get(name.removesuffix("_ms"))
        if value is None or value > limit_ms:
            return False
    return True


def summarize_run(records: list[RequestRecord], config: LoadTestConfig) -> dict:
    """The summary written to the result JSON (see the module docstring)."""
    percentiles = DEFAULT_PERCENTILES
    if not records:
        return {"num_requests": 0}
    window_start_s, window_end_s = measurement_window_s(records, config)
    window_s = window_end_s - window_start_s
    measured = measured_records(records, config)
    per_request = {id(r): request_metrics(r) for r in records}

    samples: dict[str, list[float]] = {name: [] for name in LATENCY_METRICS}
    timings: dict[str, list[float]] = {}
    output_token_counts, events_per_token, errors_by_kind, errors_by_status = [], [], {}, {}
    num_usage_missing = num_count_mismatch = num_good = 0
    for record in measured:
        if not record.ok:
            errors_by_kind[record.error_kind] = errors_by_kind.get(record.error_kind, 0) + 1
            status = str(record.status_code) if record.status_code is not None else "no_response"
            errors_by_status[status] = errors_by_status.get(status, 0) + 1
            continue
        metrics = per_request[id(record)]
        for name in LATENCY_METRICS:
            value = metrics.get(name)
            if isinstance(value, list):
                samples[name].extend(value)
            elif value is not None:
                samples[name].append(value)
        if record.output_tokens_server is None:
            num_usage_missing += 1
        elif record.output_tokens_client is not None and not token_counts_agree(
            record.output_tokens_server, record.output_tokens_client
        ):
            num_count_mismatch += 1
        num_tokens = output_tokens(record)
        if num_tokens is not None:
            output_token_counts.append(float(num_tokens))
        per_event = tokens_per_event(record)
        if per_event is not None:
            events_per_token.append(per_event)
        for stage, value_ms in (record.timings_ms or {}).items():
            timings.setdefault(stage, []).append(value_ms)

    def in_window(t: float | None) -> bool:
        return t is not None and window_start_s <= t <= window_end_s

    completions = [r for r in records if r.ok and in_window(r.done_s)]
    num_good_in_window = sum(1 for r in completions if is_good(per_request[id(r)], config.slos))
    output_tokens_in_window = 0.0
    input_tokens_in_window = 0
    for record in records:
        if not record.ok:
            continue
        per_event = tokens_per_event(record) or 0.0
        output_tokens_in_window += per_event * sum(1 for t in record.event_times_s if in_window(t))
        if in_window(record.done_s) and record.prompt_tokens is not None:
            input_tokens_in_window += record.prompt_tokens
    num_good = sum(1 for r in measured if r.ok and is_good(per_request[id(r)], config.slos))
    num_ok = sum(1 for r in measured if r.ok)
    num_errors = len(measured) - num_ok

    def rate(count: float) -> float | None:
        return count / window_s if window_s > 0 else None

    summary = {
        "num_requests": len(records),
        "num_measured": len(measured),
        "num_ok": num_ok,
        "num_errors": num_errors,
        "error_rate": num_errors / len(measured) if measured else None,
        "errors_by_kind": errors_by_kind,
        "errors_by_status_code": errors_by_status,
        "window_s": {"start": window_start_s, "end": window_end_s, "length": window_s},
        "request_throughput_rps": rate(len(completions)),
        "output_throughput_tps": rate(output_tokens_in_window),
        "input_throughput_tps": rate(input_tokens_in_window),
        "goodput": {
            "slos_ms": dict(config.slos),
            "num_good": num_good,
            "good_fraction": num_good / len(measured) if measured else None,
            "goodput_rps": rate(num_good_in_window),
        },
        "latency_ms": {name: summarize(values, percentiles, config.confidence) for name, values in samples.items()},
        "tokens": {
            "output_tokens": summarize(output_token_counts, percentiles, config.confidence),
            "tokens_per_event": summarize(events_per_token, percentiles, config.confidence),
            "num_usage_missing": num_usage_missing,
            "num_client_count_mismatch": num_count_mismatch,
        },
        "timings_ms": {stage: summarize(values, percentiles, config.confidence) for stage, values in sorted(timings.items())},
    }
    return summary


def assess_validity(loop_lag_ms: list[float], cpu_fractions: list[float], summary: dict, config: LoadTestConfig) -> dict:
    """Is the client a bottleneck? Invalid when its loop lags or its core saturates."""
    lag = summarize(loop_lag_ms, (50.0, 99.0), config.confidence)
    reasons, warnings = [], []
    lag_p99 = lag.get(percentile_key(99.0), {}).get("value") if lag.get("n") else None
    if lag_p99 is not None and lag_p99 > config.max_loop_lag_p99_ms:
        reasons.append(
            f"client event-loop lag p99 {lag_p99:.1f} ms > {config.max_loop_lag_p99_ms} ms: "
            "timestamps are late by that much; add --workers or lower the load"
        )
    for worker_id, fraction in enumerate(cpu_fractions):
        if fraction > config.max_client_cpu_fraction:
            reasons.append(
                f"client process {worker_id} used {fraction:.0%} of a core "
                f"(> {config.max_client_cpu_fraction:.0%}): the client may be the bottleneck; add --workers"
            )
    lag_dist = (summary.get("latency_ms") or {}).get("schedule_lag") or {}
    if config.mode == "open" and lag_dist.get("n"):
        sched_p99 = lag_dist[percentile_key(99.0)]["value"]
        if sched_p99 > config.max_loop_lag_p99_ms:
            warnings.append(
                f"schedule lag p99 {sched_p99:.1f} ms: requests went out late (in-flight cap or busy client); "
                "the *_from_arrival metrics include this wait"
            )
    tokens = summary.get("tokens") or {}
    if tokens.get("num_usage_missing"):
        warnings.append(
            f"{tokens['num_usage_missing']} requests had no usage chunk; output tokens are client-side counts"
        )
    if tokens.get("num_client_count_mismatch"):
        warnings.append(
            f"{tokens['num_client_count_mismatch']} requests: server and client output-token counts disagree"
        )
    return {
        "valid": not reasons,
        "reasons": reasons,
        "warnings": warnings,
        "loop_lag_ms": lag,
        "client_cpu_fraction_per_worker": cpu_fractions,
    }
