"""Opt-in OpenTelemetry tracing: one span per stage of `timings`, nested under the request's span, each as long as
its stage, with the request id; written by the relay once a response's timings are known."""

import asyncio
import time

import pytest

pytest.importorskip("opentelemetry.sdk")
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

from serve_app.api.endpoints import COMPLETION  # noqa: E402
from serve_app.api.protocol import Frame, RequestOutcome, WholeResponse  # noqa: E402
from serve_app.config import AppConfig  # noqa: E402
from serve_app.ingress.gate import AdmittedRequest  # noqa: E402
from serve_app.ingress.metrics import IngressMetrics  # noqa: E402
from serve_app.ingress.relay import Relay  # noqa: E402
from serve_app.ingress.stream_lifetime import Once  # noqa: E402
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


def test_tracing_is_off_by_default_and_on_with_an_otlp_endpoint():
    config = AppConfig()
    assert config.tracing.otlp_endpoint is None and build_stage_tracer(config.tracing.otlp_endpoint) is None
    config = AppConfig.model_validate({"tracing": {"otlp_endpoint": "http://127.0.0.1:4318/v1/traces"}})
    assert build_stage_tracer(config.tracing.otlp_endpoint) is not None


def test_intervals_are_pure_and_skip_absent_stages():
    intervals = stage_intervals(10.0, {"ingress_ms": 1000.0, "prefill_ms": 500.0, "ttft_ms": 1500.0})
    assert intervals == [("ingress", 10.0, 11.0), ("prefill", 11.0, 11.5)]


class _Backend:
    def __init__(self, frames):
        self._frames = frames

    async def generate(self, server_request, adapter):
        for frame in self._frames:
            yield frame

    async def close_stream(self, frames):
        await frames.aclose()


def _admitted(backend, arrival_s: float, request_id: str) -> AdmittedRequest:
    return AdmittedRequest(request_id=request_id, route="/v1/completions", endpoint=COMPLETION, body={}, model="m",
                           adapter=None, backend=backend, wire="sse", is_stream=True, arrival_s=arrival_s,
                           deadline_s=arrival_s + 60, release=Once(lambda: None), estimated_prompt_tokens=1)


class _HttpRequest:
    headers: dict = {}


def test_the_relay_traces_a_streamed_response_from_its_final_timings():
    exporter = InMemorySpanExporter()
    relay = Relay(IngressMetrics(), tracer=build_stage_tracer(None, exporter=exporter))
    timings = {k: v for k, v in TIMINGS.items() if k != "gate_wait_ms"}
    timings["ttft_ms"] = sum(timings[s] for s in STAGES_BEFORE_FIRST_TOKEN if s in timings)
    frames = [Frame("data: a\n\n", num_tokens=1, has_output=True),
              Frame("data: [DONE]\n\n", is_final=True, outcome=RequestOutcome(20, 1, timings))]
    arrival_s = time.time()

    async def run():
        response = await relay.respond(_admitted(_Backend(frames), arrival_s, "req-2"), _HttpRequest())
        return [chunk async for chunk in response.body_iterator]

    assert asyncio.run(run())[-1] == "data: [DONE]\n\n"
    _check_spans(exporter, "req-2", arrival_s, timings)


def test_the_relay_traces_a_whole_response():
    exporter = InMemorySpanExporter()
    relay = Relay(IngressMetrics(), tracer=build_stage_tracer(None, exporter=exporter))
    timings = {"ingress_ms": 2.0, "handoff_ms": 0.1, "frontend_ms": 4.0, "queue_ms": 0.0, "prefill_ms": 150.0,
               "decode_ms": 900.0}
    timings["ttft_ms"] = 156.1
    body = {"choices": [], "usage": {"completion_tokens": 3}, "timings": timings}
    whole = WholeResponse(status_code=200, body=body, outcome=RequestOutcome.of_usage(body["usage"], timings))
    arrival_s = time.time()
    response = asyncio.run(relay.respond(_admitted(_Backend([whole]), arrival_s, "req-3"), _HttpRequest()))
    assert response.status_code == 200
    _check_spans(exporter, "req-3", arrival_s, timings)
