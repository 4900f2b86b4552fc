"""Prometheus metrics of the ingress (what clients experience), plus engine gauges read on scrape."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from serve_app.api.protocol import EngineStats
from serve_app.tenancy.fair_queue import GateStats
from serve_app.server.timings import STAGES

_LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 20, 60)
_GAP_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2, 5)


class IngressMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # `model` is the model serving the request ("" when refused before routing: bad body, bad key).
        self.requests = Counter("serve_app_requests", "HTTP requests by model, route and status",
                                ["model", "route", "status"], registry=r)
        self.rejected = Counter("serve_app_rejected_requests", "Requests refused before work, by reason", ["reason"], registry=r)
        self.output_tokens = Counter("serve_app_output_tokens", "Generated tokens sent to clients", ["model"], registry=r)
        self.prompt_tokens = Counter("serve_app_prompt_tokens", "Prompt tokens of admitted requests", ["model"], registry=r)
        self.ttft = Histogram("serve_app_ttft_seconds", "Time to first token, from arrival at the ingress", ["model"],
                              buckets=_LATENCY_BUCKETS_S, registry=r)
        self.inter_token = Histogram("serve_app_inter_token_latency_seconds", "Gap between successive streamed frames",
                                     ["model"], buckets=_GAP_BUCKETS_S, registry=r)
        self.e2e = Histogram("serve_app_e2e_latency_seconds", "End-to-end request latency", ["model"],
                             buckets=_LATENCY_BUCKETS_S, registry=r)
        self.stage = Histogram(
            "serve_app_stage_latency_seconds",
            "Per-stage latency (ingress, gate_wait, handoff, frontend, queue, prefill, decode: a response's timings)",
            ["model", "stage"], buckets=_LATENCY_BUCKETS_S, registry=r,
        )
        self.in_flight = Gauge("serve_app_in_flight_requests", "Requests admitted and not finished (this ingress replica)", registry=r)
        self.engine_waiting = Gauge("serve_app_engine_waiting_requests", "Requests queued in the engine", ["model"], registry=r)
        self.engine_running = Gauge("serve_app_engine_running_requests", "Requests running in the engine", ["model"], registry=r)
        self.engine_healthy = Gauge("serve_app_engine_healthy", "1 when the engine answers its health check", ["model"],
                                    registry=r)
        self.tenant_admissions = Counter("serve_app_tenant_admissions", "Tenant admission decisions (admitted, or "
                                         "the refusal's code)", ["tenant", "outcome"], registry=r)
        self.speculation = SpeculationCollector()
        r.register(self.speculation)

    def watch_gates(self, read: Callable[[], dict[str, GateStats]]) -> None:
        """Tenancy's fair gates, read on scrape: `read()` gives each model's gate as it stands."""
        self.registry.register(GateCollector(read))

    def observe_timings(self, model: str, timings_ms: dict[str, float]) -> None:
        """A response's `timings`: its stages (serve_app/server/timings.py), not their total or the prediction."""
        for key in STAGES:
            if key in timings_ms:
                self.stage.labels(model=model, stage=key[:-3]).observe(timings_ms[key] / 1000.0)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class GateCollector:
    """Tenancy's fair gate of each model at this ingress replica (read on scrape): the engine slots it hands out
    (they follow the live replica counts), how many are held, and the requests and tokens waiting for one (the
    queue the model's autoscaling adds to the engines' own)."""

    def __init__(self, read: Callable[[], dict[str, GateStats]]):
        self._read = read

    def collect(self):
        families = [GaugeMetricFamily("serve_app_tenancy_gate_slots", "Engine slots this ingress replica's fair gate "
                                      "hands out (follows the running replicas)", labels=["model"]),
                    GaugeMetricFamily("serve_app_tenancy_gate_in_use", "Gate slots held by admitted requests",
                                      labels=["model"]),
                    GaugeMetricFamily("serve_app_tenancy_gate_waiting", "Requests waiting at the gate for a slot",
                                      labels=["model"]),
                    GaugeMetricFamily("serve_app_tenancy_gate_queued_tokens", "Tokens charged to the waiting requests",
                                      labels=["model"])]
        for model, stats in self._read().items():
            for family, value in zip(families, (stats.capacity, stats.num_in_use, stats.num_waiting,
                                                stats.queued_tokens)):
                family.add_metric([model], value)
        return families


class SpeculationCollector:
    """Speculative decoding per model, from the engine's running totals (read on scrape): verification steps that
    carried drafts, draft tokens, accepted tokens; and the two ratios a reader wants, acceptance rate and tokens
    per step (1 + accepted drafts per verification step) since start."""

    def __init__(self) -> None:
        self.totals: dict[str, tuple[int, int, int]] = {}

    def update(self, model: str, stats: EngineStats) -> None:
        self.totals[model] = (int(stats.spec_drafts), int(stats.spec_draft_tokens), int(stats.spec_accepted_tokens))

    def collect(self):
        families = [CounterMetricFamily("serve_app_spec_decode_drafts", "Engine steps that verified drafts", labels=["model"]),
                    CounterMetricFamily("serve_app_spec_decode_draft_tokens", "Draft tokens proposed", labels=["model"]),
                    CounterMetricFamily("serve_app_spec_decode_accepted_tokens", "Draft tokens accepted", labels=["model"]),
                    GaugeMetricFamily("serve_app_spec_decode_acceptance_rate", "Accepted / proposed draft tokens since start",
                                      labels=["model"]),
                    GaugeMetricFamily("serve_app_spec_decode_tokens_per_step",
                                      "Tokens per verification step (1 + accepted per draft) since start", labels=["model"])]
        for model, (drafts, draft_tokens, accepted) in self.totals.items():
            for family, value in zip(families, (drafts, draft_tokens, accepted)):
                family.add_metric([model], value)
            if draft_tokens:
                families[3].add_metric([model], accepted / draft_tokens)
            if drafts:
                families[4].add_metric([model], 1 + accepted / drafts)
        return families
