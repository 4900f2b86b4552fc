"""serve_app's per-stage `timings` (serve_app/server/timings.py), computed from fake clocks: the stages before the
first token sum to `ttft_ms`, which is the first output frame (a whole response: the engine's first token) less
the arrival, and no stage contains another. No vLLM."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from serve_app.server.engine_observer import RequestStats
from serve_app.server.response_stream import StreamReframer
from serve_app.server.timings import STAGES_BEFORE_FIRST_TOKEN, ingress_timings, request_timings

# One request on fake clocks. Wall clock (time.time()): arrival at the ingress, a gate wait inside the ingress,
# the hand-off, the model server's start. Monotonic clock (the engine core's): the model server's start, then
# the engine core's queued, scheduled, first token stamps, the model server's first output frame, the engine
# core's last token. Every interval has its own length.
ARRIVAL_S = 1_000.0
GATE_WAIT_S = 0.5
HANDOFF_S = 1_000.8  # ingress: 0.3 s of checks + the 0.5 s wait
SERVER_START_WALL_S = 1_000.85  # handoff: 50 ms
SERVER_START_MONO_S = 20.0
QUEUED_MONO_S = 20.011  # frontend: 11 ms
SCHEDULED_MONO_S = 20.031  # queue: 20 ms
FIRST_TOKEN_MONO_S = 20.101  # prefill: 70 ms
FIRST_OUTPUT_MONO_S = 20.104  # output: 3 ms
LAST_TOKEN_MONO_S = 20.501  # decode: 400 ms

EXPECTED = {"ingress_ms": 300.0, "gate_wait_ms": 500.0, "handoff_ms": 50.0, "frontend_ms": 11.0, "queue_ms": 20.0,
            "prefill_ms": 70.0, "output_ms": 3.0, "decode_ms": 400.0}
# The first output frame on the wall clock, less the arrival (a whole response: the engine's first token).
EXPECTED_TTFT_MS = (SERVER_START_WALL_S + (FIRST_OUTPUT_MONO_S - SERVER_START_MONO_S) - ARRIVAL_S) * 1000.0
EXPECTED_WHOLE_TTFT_MS = (SERVER_START_WALL_S + (FIRST_TOKEN_MONO_S - SERVER_START_MONO_S) - ARRIVAL_S) * 1000.0


def _engine_output(num_tokens: int, token_ts: float):
    metrics = SimpleNamespace(queued_ts=QUEUED_MONO_S, scheduled_ts=SCHEDULED_MONO_S, first_token_ts=FIRST_TOKEN_MONO_S,
                              last_token_ts=token_ts)
    return SimpleNamespace(outputs=[SimpleNamespace(token_ids=[7] * num_tokens)], metrics=metrics)


def _timings(gate_wait_s: float | None = GATE_WAIT_S, stream: bool = True,
             **ingress_extra: float) -> dict[str, float]:
    """What the model server reports: RequestStats fed the engine's outputs, then request_timings (as
    ModelServer._timings does)."""
    stats = RequestStats(start_s=SERVER_START_MONO_S)
    stats.observe(_engine_output(1, FIRST_TOKEN_MONO_S))
    stats.observe(_engine_output(4, LAST_TOKEN_MONO_S))
    ingress = {**ingress_timings(ARRIVAL_S, HANDOFF_S, gate_wait_s), **ingress_extra}
    output_ms = (FIRST_OUTPUT_MONO_S - stats.first_token_s) * 1000.0 if stream else None
    return request_timings(ingress, HANDOFF_S, SERVER_START_WALL_S, stats.ttft_ms, stats.queue_ms, stats.prefill_ms,
                           output_ms, (stats.last_token_s - stats.first_token_s) * 1000.0)


def _stages_sum(timings: dict[str, float]) -> float:
    return sum(timings[key] for key in STAGES_BEFORE_FIRST_TOKEN if key in timings)


def test_each_stage_is_its_own_interval_and_they_sum_to_the_first_token_less_the_arrival():
    timings = _timings()
    for key, expected in EXPECTED.items():
        assert timings[key] == pytest.approx(expected, abs=1e-6), key  # no stage contains another
    assert timings["ttft_ms"] == pytest.approx(_stages_sum(timings), abs=1e-9)
    assert timings["ttft_ms"] == pytest.approx(EXPECTED_TTFT_MS, abs=1e-6)
    # Ingress time is counted once: the stages after the hand-off sum to the model server's part alone.
    server_ms = sum(timings[key] for key in ("handoff_ms", "frontend_ms", "queue_ms", "prefill_ms", "output_ms"))
    assert server_ms == pytest.approx((SERVER_START_WALL_S - HANDOFF_S + FIRST_OUTPUT_MONO_S - SERVER_START_MONO_S) * 1000)
    assert list(timings)[:8] == [*STAGES_BEFORE_FIRST_TOKEN, "ttft_ms"]  # in the order they happen


def test_a_whole_response_counts_to_the_engines_first_token():
    timings = _timings(stream=False)
    assert "output_ms" not in timings
    assert timings["ttft_ms"] == pytest.approx(_stages_sum(timings)) == pytest.approx(EXPECTED_WHOLE_TTFT_MS)


def test_without_tenancy_there_is_no_gate_wait_and_the_ingress_stage_is_all_of_arrival_to_handoff():
    timings = _timings(gate_wait_s=None)
    assert "gate_wait_ms" not in timings
    assert timings["ingress_ms"] == pytest.approx((HANDOFF_S - ARRIVAL_S) * 1000.0)
    assert timings["ttft_ms"] == pytest.approx(_stages_sum(timings)) == pytest.approx(EXPECTED_TTFT_MS)


def test_the_prediction_travels_along_and_is_not_a_stage():
    timings = _timings(predicted_ttft_ms=1234.5)
    assert timings["predicted_ttft_ms"] == 1234.5
    assert timings["ttft_ms"] == pytest.approx(EXPECTED_TTFT_MS)


def test_the_stages_still_sum_after_the_usage_chunk_rounds_them():
    usage = ('data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[],'
             '"usage":{"prompt_tokens":3,"total_tokens":8,"completion_tokens":5}}\n\n')
    data, _, _ = StreamReframer("sse").reframe(usage, _timings)
    reported = json.loads(data.removeprefix("data: "))["timings"]
    assert reported["ttft_ms"] == pytest.approx(_stages_sum(reported), abs=0.005 * (len(STAGES_BEFORE_FIRST_TOKEN) + 1))


def test_a_gate_wait_never_exceeds_the_ingress_time_that_contains_it():
    assert ingress_timings(10.0, 10.2, gate_wait_s=0.5) == {"ingress_ms": 0.0, "gate_wait_ms": pytest.approx(200.0)}


def test_a_negative_hop_between_skewed_hosts_is_zero_and_ttft_stays_the_sum():
    timings = request_timings({"ingress_ms": 3.0}, handoff_s=50.0, server_start_s=49.99, engine_ttft_ms=40.0,
                              queue_ms=5.0, prefill_ms=25.0, decode_ms=0.0)
    assert timings["handoff_ms"] == 0.0
    assert timings["frontend_ms"] == pytest.approx(10.0)
    assert timings["ttft_ms"] == pytest.approx(3.0 + 0.0 + 10.0 + 5.0 + 25.0)


def test_before_any_token_only_the_stages_so_far_are_reported():
    timings = request_timings({"ingress_ms": 2.0}, handoff_s=50.0, server_start_s=50.001)
    assert timings == {"ingress_ms": 2.0, "handoff_ms": pytest.approx(1.0)}


def test_without_the_engines_phases_the_model_servers_part_is_all_frontend():
    timings = request_timings({"ingress_ms": 2.0}, handoff_s=50.0, server_start_s=50.001, engine_ttft_ms=30.0)
    assert "queue_ms" not in timings and "prefill_ms" not in timings
    assert timings["frontend_ms"] == 30.0 and timings["ttft_ms"] == pytest.approx(33.0)


class _RecordingRates:
    def __init__(self):
        self.prefill: list[tuple[int, float, float]] = []

    def observe_prefill(self, prompt_tokens: int, queue_ms: float, prefill_ms: float) -> None:
        self.prefill.append((prompt_tokens, queue_ms, prefill_ms))

    def observe_decode(self, num_tokens: int, decode_ms: float, batch_size: int) -> None:
        pass


def test_the_ttft_predictor_learns_the_time_from_the_slots_grant_to_the_first_token():
    """A whole response's first token is its arrival + `ttft_ms` (routes.py): the estimator's sample is that less
    the admission's start and the gate wait, which the prediction covers apart (never the wait twice)."""
    from serve_app.config import AppConfig
    from serve_app.ingress.tenant_admission import Admitted, TenantAdmission

    config = AppConfig.model_validate({"model": {"source": "tiny"}, "tenancy": {"enabled": True, "limits_backend": "local"}})
    admission = TenantAdmission(config, "test")
    (model,) = admission._rates
    admission._rates[model] = rates = _RecordingRates()
    admitted_at_s = ARRIVAL_S + 0.25  # 250 ms of checks before admission, then the wait, then 50 ms to the hand-off
    admitted = Admitted(config.tenancy.tenant_for(None, None), 0, lambda: None, lambda: None, GATE_WAIT_S, None,
                        admitted_at_s)
    first_token_at_s = ARRIVAL_S + _timings(stream=False)["ttft_ms"] / 1000.0
    admission.observe(model, admitted, 64, first_token_at_s, 5, 0.4)
    granted_to_first_token_ms = (HANDOFF_S - (admitted_at_s + GATE_WAIT_S)) * 1000.0 + 50.0 + 101.0
    assert rates.prefill == [(64, 0.0, pytest.approx(granted_to_first_token_ms))]
    assert granted_to_first_token_ms == pytest.approx(201.0)
