"""How overload and soak runs are judged: outcomes of records, rejection latency, memory growth."""

from loadtest.records import RequestRecord
from loadtest.resilience import MemorySeries, memory_growth, outcome, outcome_counts, rejection_latencies_ms


def _record(**kw) -> RequestRecord:
    return RequestRecord(request_id=0, job_id=0, turn=0, worker_id=0, scheduled_s=None, send_s=1.0, **kw)


def test_outcomes_separate_explicit_errors_from_silent_losses():
    assert outcome(_record(finish_reason="length", status_code=200, done_s=2.0)) == "complete"
    assert outcome(_record(status_code=429, error_kind="http_429", done_s=1.01)) == "rejected"
    assert outcome(_record(status_code=503, error_kind="http_503")) == "error"
    assert outcome(_record(status_code=200, error_kind="stream_error")) == "error"
    assert outcome(_record(error_kind="timeout")) == "hung"
    assert outcome(_record(status_code=200, error_kind="incomplete_stream")) == "lost"
    assert outcome(_record(error_kind="connection_error")) == "lost"
    counts = outcome_counts([_record(finish_reason="stop"), _record(error_kind="timeout")])
    assert counts == {"complete": 1, "rejected": 0, "error": 0, "hung": 1, "lost": 0}


def test_rejection_latency_is_send_to_answer():
    records = [_record(status_code=429, error_kind="http_429", done_s=1.012), _record(finish_reason="stop", done_s=9.0)]
    assert [round(v, 3) for v in rejection_latencies_ms(records)] == [12.0]


def test_memory_growth_ignores_warmup_and_sees_a_leak():
    times = [float(t) for t in range(100)]
    warm_then_flat = MemorySeries("p", times, [100.0 + (50.0 if t >= 10 else t * 5) for t in range(100)])
    assert abs(memory_growth(warm_then_flat)) < 0.01
    leaking = MemorySeries("p", times, [100.0 + t for t in range(100)])
    assert memory_growth(leaking) > 0.3
    assert memory_growth(MemorySeries("p", [0.0, 1.0], [1.0, 2.0])) is None
