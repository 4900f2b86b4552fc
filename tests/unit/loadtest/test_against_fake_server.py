"""The client against a scripted local server: measured values match the script."""

import pytest

from loadtest.config import LoadTestConfig
from loadtest.experiment import run_experiment
from tests.unit.loadtest.fake_openai_server import FakeScript, running_fake_server, server_state

# Medians must land within this of the scripted value. A few ms on a quiet
# machine; the shared 2-core test machine adds scheduler noise on top (a CI
# run read a TTFT p50 of 210.03 ms against 200 scripted, its self-check valid).
# Kept under the scripted 20 ms gap, so a TTFT taken at the second token fails.
TOLERANCE_MS = 15.0


def run_trusted(config, attempts=2):
    """Run; if the client's self-check flags the run invalid (the machine is
    too busy for ms-level timing), retry, then skip rather than assert on
    timestamps the tool itself says are late."""
    for _ in range(attempts):
        result = run_experiment(config, progress=False)
        if result["validity"]["valid"]:
            return result
    pytest.skip(f"client self-check invalid on this busy machine: {result['validity']['reasons']}")


def p50(result, name):
    return result["summary"]["latency_ms"][name]["p50"]["value"]


def test_measured_latencies_match_the_script(fake_url):
    config = LoadTestConfig(base_url=fake_url, concurrency=2, num_requests=6, max_tokens=8, input_tokens=8)
    result = run_trusted(config)
    summary = result["summary"]
    assert summary["num_ok"] == 6 and summary["num_errors"] == 0
    assert 200.0 <= p50(result, "ttft") <= 200.0 + TOLERANCE_MS
    assert p50(result, "tpot") == pytest.approx(20.0, abs=TOLERANCE_MS / 2)
    assert p50(result, "itl") == pytest.approx(20.0, abs=TOLERANCE_MS / 2)
    assert 340.0 <= p50(result, "e2e") <= 340.0 + 2 * TOLERANCE_MS  # 200 + 7 gaps of 20
    assert summary["tokens"]["output_tokens"]["p50"]["value"] == 8
    assert summary["tokens"]["tokens_per_event"]["mean"] == 1.0
    assert summary["tokens"]["num_client_count_mismatch"] == 0
    assert summary["timings_ms"]["queue_ms"]["p50"]["value"] == 1.5
    assert summary["timings_ms"]["prefill_ms"]["n"] == 6
    assert len(result["records"]) == 6


@pytest.mark.parametrize("framing", ["split", "merged"])
def test_split_and_merged_events_with_keepalives(framing):
    script = FakeScript(ttft_s=0.05, gap_s=0.01, num_tokens=6, framing=framing, keepalive_comments=True)
    with running_fake_server(script) as url:
        config = LoadTestConfig(base_url=url, concurrency=2, num_requests=4, max_tokens=6, input_tokens=4)
        result = run_experiment(config, progress=False)
    assert result["summary"]["num_ok"] == 4
    for record in result["records"]:
        assert record["output_tokens_server"] == 6
        assert len(record["event_times_s"]) == 6  # every text event parsed, none invented
        assert record["output_tokens_client"] == 6
        assert record["num_keepalive_comments"] >= 1
    if framing == "merged":
        # Five events arrived in one read: their gaps are zero.
        itl = result["summary"]["latency_ms"]["itl"]
        assert itl["p50"]["value"] == 0.0


def test_stalled_server_shows_in_latency_from_scheduled_arrival():
    # One slot, arrivals every 100 ms, the first request stalls 1 s: later requests
    # are sent late. Send-time latency hides the wait; arrival-time latency does not.
    script = FakeScript(ttft_s=0.02, gap_s=0.005, num_tokens=3, first_request_stall_s=1.0)
    with running_fake_server(script) as url:
        config = LoadTestConfig(
            base_url=url, mode="open", rate_rps=10.0, burstiness=None, num_requests=6, max_inflight=1,
            max_tokens=3, input_tokens=4,
        )
        result = run_experiment(config, progress=False)
    latency = result["summary"]["latency_ms"]
    assert result["summary"]["num_ok"] == 6
    assert p50(result, "ttft") < 100.0
    assert p50(result, "ttft_from_arrival") > p50(result, "ttft") + 300.0
    assert latency["schedule_lag"]["max"] > 500.0
    assert any("schedule lag" in w for w in result["validity"]["warnings"])


def test_errors_are_counted_by_status_code():
    script = FakeScript(ttft_s=0.01, gap_s=0.001, num_tokens=2, fail_every_n=3)
    with running_fake_server(script) as url:
        config = LoadTestConfig(base_url=url, concurrency=1, num_requests=6, max_tokens=2, input_tokens=4)
        result = run_experiment(config, progress=False)
    summary = result["summary"]
    assert summary["num_errors"] == 2 and summary["num_ok"] == 4
    assert summary["errors_by_status_code"] == {"503": 2}
    assert summary["errors_by_kind"] == {"http_503": 2}


def test_a_closed_loop_runs_its_whole_quota_however_long_past_the_drain_budget():
    # Twelve requests of ~0.1 s each, one user: ~1.2 s in all, four times the 0.3 s drain budget. The budget counts
    # from the last request sent, so none is cancelled (it once counted from the start: the run stopped at 0.3 s).
    script = FakeScript(ttft_s=0.05, gap_s=0.01, num_tokens=4)
    with running_fake_server(script) as url:
        config = LoadTestConfig(base_url=url, concurrency=1, num_requests=12, max_tokens=4, input_tokens=4,
                                drain_timeout_s=0.3, request_timeout_s=5.0)
        result = run_experiment(config, progress=False)
    assert result["summary"]["num_ok"] == 12 and result["summary"]["num_errors"] == 0


def test_an_open_loop_sends_its_last_arrival_however_long_the_gap_before_it():
    # Arrivals 0.625 s apart, a 0.2 s drain budget: the budget counts from when the drain begins (after the last
    # arrival is scheduled), so the last job is sent and answered, not cancelled before it ever left.
    script = FakeScript(ttft_s=0.05, gap_s=0.01, num_tokens=2)
    with running_fake_server(script) as url:
        config = LoadTestConfig(base_url=url, mode="open", rate_rps=1.6, burstiness=None, num_requests=4,
                                max_tokens=2, input_tokens=4, drain_timeout_s=0.2, request_timeout_s=5.0)
        result = run_experiment(config, progress=False)
    assert result["summary"]["num_ok"] == 4 and result["summary"]["num_errors"] == 0


def test_a_request_outliving_the_drain_budget_is_cancelled_and_counted():
    script = FakeScript(ttft_s=0.01, gap_s=0.001, num_tokens=2, first_request_stall_s=3.0)
    with running_fake_server(script) as url:
        config = LoadTestConfig(base_url=url, concurrency=1, num_requests=3, max_tokens=2, input_tokens=4,
                                drain_timeout_s=0.5, request_timeout_s=30.0)
        result = run_experiment(config, progress=False)
    summary = result["summary"]
    assert summary["num_errors"] == 1 and summary["errors_by_kind"] == {"cancelled_at_end": 1}


def test_chat_multi_turn_body_and_ignore_eos(fake_url):
    config = LoadTestConfig(
        base_url=fake_url, endpoint="chat", turns=2, concurrency=1, num_requests=1, max_tokens=8,
        input_tokens=4, ignore_eos=True, extra_body={"top_k": 1}, model="fake-model",
    )
    before = server_state(fake_url)["num_requests_seen"]
    result = run_experiment(config, progress=False)
    bodies = server_state(fake_url)["bodies"][before:]
    assert result["summary"]["num_ok"] == 2
    first, second = bodies
    assert first["ignore_eos"] is True and first["top_k"] == 1
    assert first["stream"] is True and first["stream_options"] == {"include_usage": True}
    assert [m["role"] for m in second["messages"]] == ["user", "assistant", "user"]
    assert second["messages"][1]["content"].startswith(" tok0")
    assert [r["turn"] for r in result["records"]] == [0, 1]


def test_two_client_processes_merge_raw_records(fake_url):
    config = LoadTestConfig(base_url=fake_url, concurrency=4, num_requests=8, max_tokens=8, input_tokens=4, workers=2)
    result = run_experiment(config, progress=False)
    assert result["summary"]["num_ok"] == 8
    assert {r["worker_id"] for r in result["records"]} == {0, 1}
    assert len(result["validity"]["client_cpu_fraction_per_worker"]) == 2
    assert p50(result, "ttft") >= 200.0
    if result["validity"]["valid"]:
        assert p50(result, "ttft") <= 200.0 + 2 * TOLERANCE_MS
