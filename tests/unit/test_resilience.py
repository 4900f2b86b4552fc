"""How overload and soak runs are judged: outcomes of records, rejection latency, memory growth."""

import importlib.util
import json
from pathlib import Path

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


def test_memory_sampler_keys_processes_by_pid_across_retitles():
    """Ray retitles a worker while it runs a call: one pid, two names, still one series named by the first."""
    import os

    from loadtest.resilience import MemorySampler, series_from_raw

    titles = iter(["ray::ServeReplica:app:Ingress", "ray::ServeReplica:app:Ingress.handle_request_with_rejection"])
    sampler = MemorySampler(lambda: {os.getpid(): next(titles)})
    sampler._sample()
    sampler._sample()
    assert list(sampler.series) == [os.getpid()]
    series = sampler.series[os.getpid()]
    assert series.name == "ray::ServeReplica:app:Ingress" and series.pid == os.getpid() and len(series.rss_mb) == 2
    growth = sampler.growth()
    assert list(growth) == [os.getpid()] and growth[os.getpid()]["name"] == series.name
    # The raw series survive a JSON round trip (pid keys become strings there).
    back = series_from_raw(json.loads(json.dumps(sampler.raw())))
    assert list(back) == [os.getpid()] and back[os.getpid()].rss_mb == series.rss_mb


def _overload_soak_module(monkeypatch):
    benchmarks = Path(__file__).resolve().parents[2] / "benchmarks"
    monkeypatch.syspath_prepend(str(benchmarks))  # it imports harness from beside itself
    spec = importlib.util.spec_from_file_location("overload_soak", benchmarks / "overload_soak.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_overload_soak_tables_come_from_raw_samples_with_one_percentile(monkeypatch):
    from serve_app.stats import percentile_of

    soak = _overload_soak_module(monkeypatch)
    import tables

    capacity = [float(v) for v in range(1, 101)]  # 100 samples: the tail is their max, named so
    admitted = [float(v) * 1.5 for v in range(1, 41)]
    rejections = [float(v % 50) for v in range(300)]  # 300 samples: a p99
    times = [float(t) for t in range(20)]
    result = {
        "measured_at": "2026-01-01 00:00",
        "machine": {"cpus": 2, "load_average_1m_at_end": 1.0, "cpu": "2-core Test CPU", "cpu_flags": [],
                    "commit": "0123456789abcdef"},
        "args": {"overload_factor": 5.0, "overload_s": 60.0, "client_nice": -10},
        "load_tester": {"capacity": {"valid": True, "reasons": []}, "soak": {"valid": True, "reasons": []},
                        "overload": {"valid": False, "reasons": ["loop lag p99 12.0 ms > 10"]}},
        "capacity": {"users": 16, "request_rate_rps": 2.0, "output_tok_s": 50.0},
        "overload": {"offered_rate_rps": 10.0,
                     "outcomes": {"complete": 40, "rejected": 300, "error": 0, "hung": 0, "lost": 0}},
        "soak": {"duration_s": 20.0, "outcomes": {"complete": 9, "rejected": 0, "error": 0, "hung": 0, "lost": 0},
                 "output_tok_s": 30.0},
        "samples": {
            "capacity_ttft_ms": capacity, "admitted_ttft_ms": admitted, "rejection_latency_ms": rejections,
            "memory": {"101": {"name": "VLLM::EngineCore", "times_s": times, "rss_mb": [600.0] * 20},
                       "102": {"name": "python", "times_s": times, "rss_mb": [10.0] * 20}},
        },
    }
    summary = soak.summarise(json.loads(json.dumps(result)))
    over, cap = summary["overload"], summary["capacity"]
    # A tail is a p99 (serve_app.stats, linear interpolation) only over 200+ samples, else the max, named so.
    assert (cap["ttft_tail_ms"], cap["ttft_tail"]) == (100.0, "max of 100")
    assert (over["admitted_ttft_tail_ms"], over["admitted_ttft_tail"]) == (60.0, "max of 40")
    assert over["admitted_ttft_tail_ratio"] == 60.0 / 100.0
    assert (over["rejection_latency_tail_ms"], over["rejection_latency_tail"]) == (percentile_of(rejections, 99), "p99")
    assert set(summary["soak"]["memory"]) == {101, 102} and set(summary["soak"]["memory_over_50mb"]) == {101}
    assert summary["soak"]["max_memory_growth"] == 0.0
    # Summarising again (as --summarise-only does on the written JSON) gives the same tables.
    table = tables.overload_soak(summary)
    assert tables.overload_soak(soak.summarise(json.loads(json.dumps(summary)))) == table
    assert "| VLLM::EngineCore | 600 | 600 | +0.0% |" in table and "python" not in table.split("| process")[1]
    assert "TTFT max of 100 100 ms" in table and "INVALID (loop lag p99 12.0 ms > 10)" in table
