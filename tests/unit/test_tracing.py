"""Opt-in OpenTelemetry tracing: one span per stage of `timings`, nested under the request's span, each as long as
its stage, with the request id."""

import pytest

pytest.importorskip("opentelemetry.sdk")
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

from serve_app.server.timings import STAGES_BEFORE_FIRST_TOKEN  # noqa: E402
from serve_app.server.tracing import (REQUEST_ID_ATTRIBUTE, ROOT_SPAN, build_stage_tracer,  # noqa: E402
                                      stage_intervals)

TIMINGS = {"ingress_ms": 1.5, "gate_wait_ms": 40.0, "handoff_ms": 0.2, "frontend_ms": 3.0, "queue_ms": 0.1,
           "prefill_ms": 180.0, "output_ms": 0.7, "decode_ms": 2100.0, "predicted_ttft_ms": 250.0}
TIMINGS["ttft_ms"] = sum(TIMINGS[s] for s in STAGES_BEFORE_FIRST_TOKEN)


def _spans_by_name(exporter):
    return {span.name: span for span in exporter.get_finished_spans()}


def _check_spans(exporter, request_id: str, arrival_s: float, timings: dict):
    spans = _spans_by_name(exporter)
    root = spans.pop(ROOT_SPAN)
    assert root.attributes[REQUEST_ID_ATTRIBUTE] == request_id
    assert root.start_time == pytest.approx(arrival_s * 1e9, abs=1e3)
    stages = [s for s in (*STAGES_BEFORE_FIRST_TOKEN, "decode_ms") if s in timings]
    assert sorted(spans) == sorted(f"serve_app.{s.removesuffix('_ms')}" for s in stages)  # no span for a total
    previous_end = root.start_time
    for stage in stages:
        span = spans[f"serve_app.{stage.removesuffix('_ms')}"]
        assert span.parent.span_id == root.context.span_id and span.context.trace_id == root.context.trace_id
        assert span.attributes[REQUEST_ID_ATTRIBUTE] == request_id
        assert (span.end_time - span.start_time) / 1e6 == pytest.approx(timings[stage], abs=1e-3)
        assert span.start_time == previous_end  # end to end: no stage inside another, no gap
        previous_end = span.end_time
    assert root.end_time == previous_end
    first_token = spans.get("serve_app.output") or spans["serve_app.prefill"]
    assert (first_token.end_time - root.start_time) / 1e6 == pytest.approx(timings["ttft_ms"], abs=1e-3)


def test_stage_spans_nest_under_the_request_and_last_as_long_as_their_timings():
    exporter = InMemorySpanExporter()
    tracer = build_stage_tracer(None, exporter=exporter)
    arrival_s = 1_796_000_000.25
    tracer.record("req-1", "m", arrival_s, TIMINGS)
    _check_spans(exporter, "req-1", arrival_s, TIMINGS)


def test_tracing_is_off_without_an_endpoint():
    assert build_stage_tracer(None) is None


def test_intervals_are_pure_and_skip_absent_stages():
    intervals = stage_intervals(10.0, {"ingress_ms": 1000.0, "prefill_ms": 500.0, "ttft_ms": 1500.0})
    assert intervals == [("ingress", 10.0, 11.0), ("prefill", 11.0, 11.5)]
