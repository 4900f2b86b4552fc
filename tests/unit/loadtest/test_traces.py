"""The trace file format and the seeded generators behind the autoscaling replays."""

from __future__ import annotations

import statistics

import pytest

from loadtest.traces.format import Trace, TraceRequest, dumps, loads, read_trace
from loadtest.traces.generate import (
    TRACES_DIR,
    arrivals_from_rate,
    bursty_trace,
    committed_traces,
    diurnal_trace,
    scale_from_zero_trace,
    step_trace,
)


def test_a_trace_survives_writing_and_reading_with_its_optional_fields():
    trace = Trace("t", 10.0, (TraceRequest(0.5, 100, 20), TraceRequest(1.25, 7, 3, tenant="a", prefix_id="p1")),
                  {"seed": 3})
    back = loads(dumps(trace))
    assert back == trace


@pytest.mark.parametrize(
    "body, message",
    [
        ('{"t_s": 1, "prompt_tokens": 5}', "missing 'output_tokens'"),
        ('{"t_s": 1, "prompt_tokens": 0, "output_tokens": 5}', "token counts"),
        ('{"t_s": 1, "prompt_tokens": 5, "output_tokens": 5, "colour": 1}', "unknown keys"),
        ('{"t_s": 2, "prompt_tokens": 5, "output_tokens": 5}\n{"t_s": 1, "prompt_tokens": 5, "output_tokens": 5}',
         "non-decreasing"),
        ("not json", "line 2"),
    ],
)
def test_a_malformed_trace_is_refused_with_its_line(body, message):
    header = '{"format": "serve_app-trace/1", "name": "x", "duration_s": 10}\n'
    with pytest.raises(ValueError, match=message):
        loads(header + body)


def test_a_file_without_the_header_is_refused():
    with pytest.raises(ValueError, match="header"):
        loads('{"t_s": 1, "prompt_tokens": 5, "output_tokens": 5}\n')


def test_generators_are_pure_functions_of_their_seed():
    assert step_trace(2.0, seed=7) == step_trace(2.0, seed=7)
    assert step_trace(2.0, seed=7).requests != step_trace(2.0, seed=8).requests


def test_the_step_trace_quadruples_its_rate_and_comes_back():
    trace = step_trace(5.0, before_s=60, high_s=120, after_s=120, seed=1)
    rates = trace.rate_per_interval(60.0)
    assert rates[0] == pytest.approx(5.0, rel=0.25)
    assert statistics.mean(rates[1:3]) == pytest.approx(20.0, rel=0.12)
    assert statistics.mean(rates[3:5]) == pytest.approx(5.0, rel=0.2)


def test_the_bursty_trace_has_inter_arrival_cv_about_3_at_its_mean_rate():
    trace = bursty_trace(20.0, cv=3.0, duration_s=2000.0, seed=2)
    gaps = [b.t_s - a.t_s for a, b in zip(trace.requests, trace.requests[1:])]
    cv = statistics.pstdev(gaps) / statistics.mean(gaps)
    assert cv == pytest.approx(3.0, rel=0.15)
    assert len(trace.requests) / trace.duration_s == pytest.approx(20.0, rel=0.15)


def test_poisson_gaps_have_cv_1():
    import random

    times = arrivals_from_rate(lambda t: 50.0, 400.0, random.Random(0))
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert statistics.pstdev(gaps) / statistics.mean(gaps) == pytest.approx(1.0, rel=0.05)


def test_the_diurnal_trace_peaks_mid_period_and_is_quiet_at_both_ends():
    trace = diurnal_trace(2.0, 20.0, period_s=600.0, seed=3)
    rates = trace.rate_per_interval(60.0)
    assert max(rates) == max(rates[4:6])
    assert rates[0] < 0.4 * max(rates) and rates[-1] < 0.4 * max(rates)


def test_scale_from_zero_sends_nothing_while_idle_then_a_burst():
    trace = scale_from_zero_trace(10.0, idle_s=30.0, burst_s=60.0, tail_s=20.0, seed=4)
    times = [r.t_s for r in trace.requests]
    assert min(times) >= 30.0 and max(times) < 90.0
    assert len(times) == pytest.approx(600, rel=0.15)


def test_token_counts_follow_the_shape_and_stay_in_bounds():
    trace = step_trace(10.0, seed=5)
    prompts = [r.prompt_tokens for r in trace.requests]
    outputs = [r.output_tokens for r in trace.requests]
    assert statistics.median(prompts) == pytest.approx(256, rel=0.1)
    assert statistics.median(outputs) == pytest.approx(64, rel=0.1)
    assert max(prompts) <= 1024 and max(outputs) <= 256 and min(outputs) >= 1


def test_the_committed_trace_files_are_what_the_generator_writes():
    for trace in committed_traces():
        assert read_trace(TRACES_DIR / f"{trace.name}.jsonl") == trace, f"regenerate {trace.name}: see README.md"
