"""Replay an arrival trace (loadtest/traces/) open loop against an OpenAI-compatible server.

Every trace request is sent at its own time, whatever happens to the ones before it (open loop: a slow server
does not slow the arrivals), as a streamed completion with a prompt of about `prompt_tokens` tokens,
`max_tokens` = `output_tokens` and `ignore_eos`. Each record keeps its scheduled and actual send time, TTFT,
TPOT, status and a refusal's Retry-After; `per_second_series` folds the records into one row per second.

The plan (prompts, times) is built before the first send from the seed (pure: `plan_replay`), so the sending
loop does no work beyond HTTP.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from dataclasses import dataclass

import aiohttp

from loadtest.client import build_body, stream_request
from loadtest.records import RequestRecord
from loadtest.traces.format import Trace
from loadtest.workload import PromptFactory


@dataclass(frozen=True)
class PlannedRequest:
    index: int
    send_at_s: float
    prompt: str
    expected_prompt_tokens: int
    max_tokens: int
    tenant: str | None = None


def plan_replay(trace: Trace, *, time_scale: float = 1.0, seed: int = 0, prefix_tokens: int = 128,
                factory: PromptFactory | None = None) -> list[PlannedRequest]:
    """The sends of a replay, in order: time `t_s * time_scale`, a prompt of about `prompt_tokens` tokens.

    Requests with the same `prefix_id` start with the same text (its first min(prefix_tokens, prompt_tokens)
    tokens come from a generator seeded by the id), so a prefix cache can hit them.
    """
    if time_scale <= 0:
        raise ValueError("time_scale must be positive")
    factory = factory or PromptFactory()
    rng = random.Random(seed)
    plans = []
    for index, request in enumerate(trace.requests):
        n = request.prompt_tokens
        if request.prefix_id is not None:
            shared = min(prefix_tokens, n)
            prefix_rng = random.Random(int(hashlib.sha256(request.prefix_id.encode()).hexdigest()[:16], 16))
            parts = [factory.make(shared, prefix_rng)] + ([factory.make(n - shared, rng)] if n > shared else [])
            prompt = " ".join(parts)
        else:
            prompt = factory.make(n, rng)
        plans.append(PlannedRequest(index, request.t_s * time_scale, prompt, n, request.output_tokens,
                                    request.tenant))
    return plans


def ttft_ms(record: RequestRecord) -> float | None:
    """Send -> first token, for a request that produced one."""
    if record.first_text_s is None:
        return None
    return (record.first_text_s - record.send_s) * 1000.0


def tpot_ms(record: RequestRecord) -> float | None:
    """Mean time per output token after the first (first -> last token event / (tokens - 1))."""
    if record.first_text_s is None or not record.event_times_s:
        return None
    num_tokens = record.output_tokens_server or len(record.event_times_s)
    if num_tokens < 2:
        return None
    return (record.event_times_s[-1] - record.first_text_s) * 1000.0 / (num_tokens - 1)


@dataclass(frozen=True)
class SecondRow:
    """One second of a replay: what was sent then and how those requests fared, and what was in flight."""

    t_s: int
    num_sent: int
    num_ok: int
    num_refused: int  # 429s
    num_failed: int  # any other error
    num_in_flight: int  # sent and not done at the end of the second
    ttft_p99_ms: float | None  # over requests sent in this second that produced a token


def per_second_series(records: list[RequestRecord], duration_s: float) -> list[SecondRow]:
    """Rows for seconds 0 .. max(duration_s, the last completion), by send time (pure)."""
    from serve_app.stats import percentile_of

    end_s = max([duration_s] + [r.done_s or r.send_s for r in records])
    rows = []
    by_second: dict[int, list[RequestRecord]] = {}
    for record in records:
        by_second.setdefault(int(record.send_s), []).append(record)
    for second in range(int(end_s) + 1):
        sent = by_second.get(second, [])
        ttfts = [v for v in (ttft_ms(r) for r in sent) if v is not None]
        in_flight = sum(1 for r in records if r.send_s < second + 1 and (r.done_s is None or r.done_s > second + 1))
        rows.append(SecondRow(
            t_s=second,
            num_sent=len(sent),
            num_ok=sum(1 for r in sent if r.ok),
            num_refused=sum(1 for r in sent if r.status_code == 429),
            num_failed=sum(1 for r in sent if not r.ok and r.status_code != 429),
            num_in_flight=in_flight,
            ttft_p99_ms=percentile_of(ttfts, 99),
        ))
    return rows


def summarize(records: list[RequestRecord], *, ttft_target_ms: float, tpot_target_ms: float) -> dict:
    """Counts, p50/p99 TTFT and TPOT, and the share of admitted requests within each target (pure)."""
    from serve_app.stats import percentile_of

    admitted = [r for r in records if r.status_code != 429]
    ttfts = [v for v in (ttft_ms(r) for r in admitted) if v is not None]
    tpots = [v for v in (tpot_ms(r) for r in admitted) if v is not None]
    refused = [r for r in records if r.status_code == 429]
    retry_after = [r.retry_after_s for r in refused if r.retry_after_s is not None]
    num_admitted = len(admitted)
    within_ttft = sum(1 for r in admitted if r.ok and (ttft_ms(r) or float("inf")) <= ttft_target_ms)
    within_tpot = sum(1 for r in admitted if r.ok and (tpot_ms(r) if tpot_ms(r) is not None else 0.0) <= tpot_target_ms)
    return {
        "num_requests": len(records),
        "num_ok": sum(1 for r in records if r.ok),
        "num_refused_429": len(refused),
        "num_failed": sum(1 for r in records if not r.ok and r.status_code != 429),
        "failure_kinds": sorted({r.error_kind for r in records if not r.ok and r.status_code != 429}),
        "ttft_p50_ms": percentile_of(ttfts, 50),
        "ttft_p99_ms": percentile_of(ttfts, 99),
        "tpot_p50_ms": percentile_of(tpots, 50),
        "tpot_p99_ms": percentile_of(tpots, 99),
        "share_within_ttft": within_ttft / num_admitted if num_admitted else None,
        "share_within_tpot": within_tpot / num_admitted if num_admitted else None,
        "retry_after_s_max": max(retry_after, default=None),
        "retry_after_s_p50": percentile_of(retry_after, 50),
        # How fast a refusal comes back (a 429 should cost the client almost nothing).
        "refusal_ms_p99": percentile_of([((r.done_s or r.send_s) - r.send_s) * 1000.0 for r in refused], 99),
        "send_lag_p99_ms": percentile_of([(r.send_s - (r.scheduled_s or 0.0)) * 1000.0 for r in records], 99),
    }


async def replay(
    plans: list[PlannedRequest],
    *,
    base_url: str,
    model: str,
    headers: dict[str, str] | None = None,
    tenant_header: str = "x-tenant-id",
    timeout_s: float = 300.0,
    extra_body: dict | None = None,
) -> list[RequestRecord]:
    """Send every planned request at its time (from now) and wait for all; records in plan order."""
    api_base = base_url.rstrip("/")
    url = (api_base if api_base.endswith("/v1") else api_base + "/v1") + "/completions"
    start = time.monotonic()
    clock = lambda: time.monotonic() - start  # noqa: E731
    records: list[RequestRecord] = []
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        tasks = []
        for plan in plans:
            delay_s = plan.send_at_s - clock()
            if delay_s > 0:
                await asyncio.sleep(delay_s)
            record = RequestRecord(request_id=plan.index, job_id=plan.index, turn=0, worker_id=0,
                                   scheduled_s=plan.send_at_s, send_s=clock(), max_tokens=plan.max_tokens,
                                   expected_input_tokens=plan.expected_prompt_tokens, tenant=plan.tenant)
            request_headers = dict(headers or {})
            if plan.tenant is not None:
                request_headers[tenant_header] = plan.tenant
            body = build_body(endpoint="completions", model=model, messages=None, prompt=plan.prompt,
                              max_tokens=plan.max_tokens, ignore_eos=True, temperature=0.0,
                              extra_body=extra_body or {})
            records.append(record)
            tasks.append(asyncio.create_task(
                stream_request(session, url, body, record, clock, request_headers, timeout_s)))
        await asyncio.gather(*tasks)
    return records
