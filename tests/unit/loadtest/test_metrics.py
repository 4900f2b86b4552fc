import pytest

from loadtest.config import LoadTestConfig
from loadtest.metrics import request_metrics, summarize_run
from loadtest.records import RequestRecord
from loadtest.report import compare_table, evaluate_gates, flat_metrics


def record(request_id, send_s, first_s, done_s, num_tokens, scheduled_s=None, error_kind=None, status=200):
    n_events = num_tokens
    step = (done_s - first_s) / max(n_events - 1, 1)
    return RequestRecord(
        request_id=request_id, job_id=request_id, turn=0, worker_id=0, scheduled_s=scheduled_s, send_s=send_s,
        first_text_s=None if error_kind else first_s, done_s=done_s, status_code=status, error_kind=error_kind,
        output_tokens_server=None if error_kind else num_tokens,
        event_times_s=[] if error_kind else [first_s + i * step for i in range(n_events)],
        event_num_chars=[] if error_kind else [4] * n_events, prompt_tokens=10,
    )


def test_request_metrics_definitions():
    r = record(0, send_s=1.0, first_s=1.2, done_s=1.5, num_tokens=4, scheduled_s=0.9)
    m = request_metrics(r)
    assert m["ttft"] == pytest.approx(200.0)
    assert m["e2e"] == pytest.approx(500.0)
    assert m["tpot"] == pytest.approx(100.0)  # (500 - 200) / (4 - 1)
    assert m["itl"] == pytest.approx([100.0, 100.0, 100.0])
    assert m["ttft_from_arrival"] == pytest.approx(300.0)
    assert m["schedule_lag"] == pytest.approx(100.0)


def test_window_excludes_warmup_and_cooldown_and_counts_errors_by_status():
    records = [record(i, send_s=float(i), first_s=i + 0.1, done_s=i + 0.5, num_tokens=5) for i in range(10)]
    records.append(record(10, send_s=5.5, first_s=5.6, done_s=5.7, num_tokens=0, error_kind="http_503", status=503))
    config = LoadTestConfig(num_requests=11, warmup_s=2.0, cooldown_s=2.0, slos={"ttft_ms": 150})
    summary = summarize_run(records, config)
    assert summary["window_s"]["start"] == 2.0 and summary["window_s"]["end"] == 7.0
    assert summary["num_measured"] == 7  # starts 2..7 plus the failed one at 5.5
    assert summary["errors_by_kind"] == {"http_503": 1}
    assert summary["errors_by_status_code"] == {"503": 1}
    assert summary["latency_ms"]["ttft"]["n"] == 6
    # Completions inside [2, 7]: requests 2..6 end at 2.5..6.5 -> 5 over 5 s.
    assert summary["request_throughput_rps"] == pytest.approx(1.0)
    assert summary["goodput"]["goodput_rps"] == pytest.approx(1.0)


def test_gate_and_compare():
    records = [record(i, send_s=0.0, first_s=0.1 * (i + 1), done_s=2.0, num_tokens=8) for i in range(20)]
    summary = summarize_run(records, LoadTestConfig(num_requests=20))
    flat = flat_metrics(summary)
    assert flat["ttft_p50_ms"] == pytest.approx(1050.0)
    assert evaluate_gates(summary, ["ttft_p99_ms>500"])
    assert not evaluate_gates(summary, ["ttft_p99_ms>5000", "error_rate>0"])
    assert "not in result" in evaluate_gates(summary, ["bogus_ms>1"])[0]
    result = {"summary": summary, "validity": {"valid": True}}
    table = compare_table([result, result], ["a", "b"])
    assert "(1.000)" in table
