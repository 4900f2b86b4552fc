"""One load-test run end to end: workload -> load -> merged records -> result dict."""

import asyncio
import json
import platform
import sys
import time
from pathlib import Path

from loadtest.config import LoadTestConfig
from loadtest.metrics import assess_validity, summarize_run
from loadtest.progress import ProgressPrinter
from loadtest.records import RequestRecord
from loadtest.runner import resolve_model, run_load
from loadtest.server_metrics import scrape_speculation, speculation_delta
from loadtest.tenants import summarize_tenants
from loadtest.workload import PromptFactory, build_jobs

RESULT_SCHEMA = "serve_app.loadtest.result/1"


def _num_jobs(config: LoadTestConfig) -> int:
    if config.num_requests is not None:
        return min(config.num_requests, max(config.prompt_pool_size, 1) * 1000)
    return config.prompt_pool_size


def fill_client_token_counts(records: list[RequestRecord], factory: PromptFactory) -> str:
    """Client-side output-token count per request; returns the method used."""
    for record in records:
        if not record.ok:
            continue
        if factory.tokenizer is not None and record.output_text is not None:
            record.output_tokens_client = factory.count_tokens(record.output_text)
        else:
            record.output_tokens_client = len(record.event_times_s)
    return "tokenizer" if factory.tokenizer is not None else "text_events"


def run_experiment(config: LoadTestConfig, *, progress: bool = True, factory: PromptFactory | None = None) -> dict:
    """Run the load described by `config` and return the full result."""
    factory = factory or PromptFactory(config.tokenizer)
    model = asyncio.run(resolve_model(config))
    jobs = build_jobs(config, factory, _num_jobs(config))
    printer = ProgressPrinter(config.num_requests, config.duration_s, enabled=progress)
    auth = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
    speculation_before = scrape_speculation(config.base_url, config.headers | auth)
    started_unix = time.time()
    worker_results = run_load(config, model, jobs, printer)
    speculation = speculation_delta(speculation_before, scrape_speculation(config.base_url, config.headers | auth))
    records = [r for result in worker_results for r in result.records]
    records.sort(key=lambda r: (r.send_s, r.request_id))
    count_method = fill_client_token_counts(records, factory)
    summary = summarize_run(records, config)
    summary.setdefault("tokens", {})["client_count_method"] = count_method
    summary["speculation"] = speculation
    if config.tenants:
        summary["tenants"] = summarize_tenants(records, config)
    loop_lag = [lag for result in worker_results for lag in result.loop_lag_ms]
    cpu_fractions = [result.cpu_s / result.wall_s if result.wall_s > 0 else 0.0 for result in worker_results]
    validity = assess_validity(loop_lag, cpu_fractions, summary, config)
    return {
        "schema": RESULT_SCHEMA,
        "config": config.model_dump(mode="json"),
        "model": model,
        "environment": {
            "started_unix": started_unix,
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "prompt_length_method": factory.method,
        },
        "validity": validity,
        "summary": summary,
        "records": [r.to_dict(keep_text=config.save_text) for r in records],
    }


def save_result(result: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))


def load_result(path: Path) -> dict:
    result = json.loads(Path(path).read_text())
    if result.get("schema") != RESULT_SCHEMA:
        raise ValueError(f"{path}: not a loadtest result (schema {result.get('schema')!r})")
    return result


def records_of(result: dict) -> list[RequestRecord]:
    return [RequestRecord.from_dict(r) for r in result["records"]]
