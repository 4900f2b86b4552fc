"""Opt-in OpenTelemetry tracing of a request's stages, with the same boundaries as its `timings`
(serve_app/server/timings.py): one root span per request (`serve_app.request`, arrival at the ingress -> the end
of its last stage) and one child span per stage (`serve_app.ingress`, `serve_app.handoff`, ...), laid end to end
from the arrival in the order the stages happen, so each span's duration is its stage's figure, exactly.

The spans are written once the response's final `timings` are known (the relay calls `record` where it counts
the stage histogram), from the same stamps: tracing adds no clock reading and nothing to the request's path
before its last frame. Exported over OTLP (HTTP/protobuf) when `tracing.otlp_endpoint` is set; off by default,
and then nothing of OpenTelemetry is imported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from serve_app.server.timings import STAGES_BEFORE_FIRST_TOKEN

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

ROOT_SPAN = "serve_app.request"
REQUEST_ID_ATTRIBUTE = "serve_app.request_id"
MODEL_ATTRIBUTE = "gen_ai.request.model"  # OpenTelemetry's GenAI semantic convention


def stage_intervals(arrival_s: float, timings_ms: dict[str, float]) -> list[tuple[str, float, float]]:
    """(stage, start_s, end_s) for each stage present in `timings_ms`: the stages before the first token end to
    end from `arrival_s` (their sum is `ttft_ms`), then `decode_ms` from the first token. Pure."""
    intervals, start_s = [], arrival_s
    for stage in (*STAGES_BEFORE_FIRST_TOKEN, "decode_ms"):
        if stage in timings_ms:
            end_s = start_s + max(0.0, timings_ms[stage]) / 1000.0
            intervals.append((stage.removesuffix("_ms"), start_s, end_s))
            start_s = end_s
    return intervals


def _ns(seconds: float) -> int:
    return int(round(seconds * 1e9))


class StageTracer:
    """Writes a request's stage spans to an OpenTelemetry tracer (`opentelemetry.trace.Tracer`)."""

    def __init__(self, tracer: Any):
        self._tracer = tracer

    def record(self, request_id: str, model: str, arrival_s: float, timings_ms: dict[str, float]) -> None:
        """The root span and one child per stage; `arrival_s` is the ingress's time.time() stamp of the request."""
        from opentelemetry import trace

        intervals = stage_intervals(arrival_s, timings_ms)
        if not intervals:
            return
        attributes = {REQUEST_ID_ATTRIBUTE: request_id, MODEL_ATTRIBUTE: model}
        root = self._tracer.start_span(ROOT_SPAN, start_time=_ns(arrival_s), attributes=attributes)
        context = trace.set_span_in_context(root)
        for stage, start_s, end_s in intervals:
            span = self._tracer.start_span(f"serve_app.{stage}", context=context, start_time=_ns(start_s),
                                           attributes={REQUEST_ID_ATTRIBUTE: request_id})
            span.end(end_time=_ns(end_s))
        root.end(end_time=_ns(intervals[-1][2]))


def build_stage_tracer(otlp_endpoint: str | None, service_name: str = "serve_app",
                       exporter: "SpanExporter | None" = None) -> StageTracer | None:
    """A tracer exporting in batches to `otlp_endpoint` (e.g. http://collector:4318/v1/traces), or to `exporter`
    (tests: an in-memory one, exported at once); None when neither is given (tracing off)."""
    if otlp_endpoint is None and exporter is None:
        return None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint)))
    return StageTracer(provider.get_tracer("serve_app"))
