"""Trace replay (loadtest/replay.py): the send plan, open-loop timing against a scripted server, the records'
TTFT / TPOT / refusals and the per-second series."""

from __future__ import annotations

import asyncio

import pytest

from loadtest.records import RequestRecord
from loadtest.replay import per_second_series, plan_replay, replay, summarize, tpot_ms, ttft_ms
from loadtest.traces.format import Trace, TraceRequest
from tests.unit.loadtest.fake_openai_server import FakeScript, running_fake_server, server_state


def _trace(*times: float, **fields) -> Trace:
    return Trace("t", max(times) + 1, tuple(TraceRequest(t, 40, 5, **fields) for t in times))


def test_the_plan_keeps_the_trace_times_scaled_and_its_token_counts():
    trace = Trace("t", 10, (TraceRequest(0.0, 30, 7), TraceRequest(4.0, 90, 3)))
    plans = plan_replay(trace, time_scale=0.5, seed=1)
    assert [p.send_at_s for p in plans] == [0.0, 2.0]
    assert [p.max_tokens for p in plans] == [7, 3]
    # Without a tokenizer one word stands for one token.
    assert [len(p.prompt.split()) for p in plans] == [30, 90]
    assert plan_replay(trace, seed=1) == plan_replay(trace, seed=1)


def test_requests_of_one_prefix_id_share_their_opening_text_and_others_do_not():
    trace = Trace("t", 10, (TraceRequest(0, 200, 1, prefix_id="a"), TraceRequest(1, 200, 1, prefix_id="a"),
                            TraceRequest(2, 200, 1, prefix_id="b")))
    a1, a2, b = (p.prompt.split() for p in plan_replay(trace, prefix_tokens=64))
    assert a1[:64] == a2[:64] and a1[64:] != a2[64:]
    assert b[:64] != a1[:64]
    assert len(a1) == 200


def test_arrivals_stay_open_loop_while_the_server_is_slow():
    # Each answer takes over 1 s; arrivals 0.1 s apart must still go out 0.1 s apart.
    script = FakeScript(ttft_s=1.0, gap_s=0.02, num_tokens=5)
    trace = _trace(*(0.1 * i for i in range(10)))
    with running_fake_server(script) as url:
        records = asyncio.run(replay(plan_replay(trace), base_url=url, model="fake-model"))
        bodies = server_state(url)["bodies"]
    assert all(r.ok for r in records)
    # (Bounds leave room for a loaded 2-core machine; a closed loop would send the last one after ~10 s.)
    for record in records:
        assert record.send_s - record.scheduled_s < 0.2
    assert records[-1].send_s < 1.2
    assert all(1000 <= ttft_ms(r) < 2000 for r in records)
    assert all(15 <= tpot_ms(r) < 150 for r in records)
    assert {b["max_tokens"] for b in bodies} == {5} and all(b["ignore_eos"] and b["stream"] for b in bodies)


def test_refusals_are_recorded_with_their_retry_after_and_tenant():
    script = FakeScript(ttft_s=0.05, per_tenant={"x-tenant-id=B": {"status": 429}})
    trace = Trace("t", 2, (TraceRequest(0.0, 10, 3, tenant="A"), TraceRequest(0.1, 10, 3, tenant="B")))
    with running_fake_server(script) as url:
        records = asyncio.run(replay(plan_replay(trace), base_url=url, model="fake-model"))
    ok, refused = records
    assert ok.ok and ok.tenant == "A"
    assert refused.status_code == 429 and refused.retry_after_s == 1.0 and refused.tenant == "B"
    summary = summarize(records, ttft_target_ms=1000, tpot_target_ms=100)
    assert summary["num_refused_429"] == 1 and summary["num_failed"] == 0
    assert summary["retry_after_s_max"] == 1.0
    assert summary["share_within_ttft"] == 1.0  # of admitted requests


def _record(i: int, send_s: float, first_s: float | None, done_s: float, status: int = 200) -> RequestRecord:
    record = RequestRecord(i, i, 0, 0, scheduled_s=send_s, send_s=send_s, first_text_s=first_s, done_s=done_s,
                           status_code=status, output_tokens_server=3 if first_s else None)
    if first_s is not None:
        record.event_times_s = [first_s, first_s + 0.1, first_s + 0.2]
    if status != 200:
        record.error_kind = f"http_{status}"
    return record


def test_the_per_second_series_counts_by_send_second_and_tracks_in_flight():
    records = [_record(0, 0.2, 0.5, 0.7), _record(1, 0.8, 1.9, 2.1), _record(2, 1.5, None, 1.51, status=429),
               _record(3, 2.2, None, 2.3, status=503)]
    rows = per_second_series(records, duration_s=3)
    assert [r.num_sent for r in rows] == [2, 1, 1, 0]
    assert [r.num_refused for r in rows] == [0, 1, 0, 0]
    assert [r.num_failed for r in rows] == [0, 0, 1, 0]
    # In flight at each second's end: request 1 (0.8 -> 2.1) at t=1 and t=2, nothing at t=3.
    assert [r.num_in_flight for r in rows] == [1, 1, 0, 0]
    assert rows[0].ttft_p99_ms == pytest.approx(1100 - 0.01 * (1100 - 300), rel=1e-6)
    assert rows[2].ttft_p99_ms is None


def test_tpot_is_the_mean_gap_after_the_first_token():
    record = _record(0, 0.0, 1.0, 1.3)
    assert tpot_ms(record) == pytest.approx(100.0)
    assert ttft_ms(record) == pytest.approx(1000.0)
