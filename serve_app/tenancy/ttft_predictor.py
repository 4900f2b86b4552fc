"""Predicted time to first token from the work queued ahead, and the rates that turn work into time.

The model (vLLM v1 with chunked prefill): an engine step runs one decode token for every running sequence and
fills the rest of its token budget with prefill chunks. A new request's first token comes out of the step that
finishes its prefill, so

    ttft_s = overhead_s
           + (prefill tokens ahead + prompt tokens) / prefill_tokens_per_s          prefill work
           + num_prefill_steps * decode_step_s(running_decode_seqs)                decode interleaved with it
           + decode tokens ahead * decode_step_s(batch) / batch                    waiting for a free sequence slot

with num_prefill_steps = ceil(prefill tokens / prefill_chunk_tokens) and decode_step_s(batch) = a + b * batch.
The last term is for callers that know the batch is full: output tokens that must be generated before a slot
frees, drained at the batch's decode throughput. Everything is seconds and tokens; no I/O.

`RateEstimator` keeps the rates current from timings the engine reports (exponentially weighted least squares,
i.e. moving averages of the fit's sums, so old samples fade); `PredictionErrors` records predicted against
measured TTFT for the benchmark's error report.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from serve_app.stats import percentile_of

DEFAULT_MAX_RETRY_AFTER_S = 60


@dataclass(frozen=True)
class EngineRates:
    """Measured speed of one model's engines (seconds, tokens)."""

    prefill_tokens_per_s: float
    # Decode step time for a batch of B running sequences: decode_step_base_s + decode_step_per_seq_s * B.
    decode_step_base_s: float
    decode_step_per_seq_s: float
    # Prefill tokens one engine step takes (vLLM's max_num_batched_tokens).
    prefill_chunk_tokens: int = 2048
    # Fixed time per request outside the engine's steps (tokenization, Ray hops, first frame).
    overhead_s: float = 0.0

    def __post_init__(self) -> None:
        if self.prefill_tokens_per_s <= 0 or self.prefill_chunk_tokens < 1:
            raise ValueError("prefill_tokens_per_s must be > 0 and prefill_chunk_tokens >= 1")
        if min(self.decode_step_base_s, self.decode_step_per_seq_s, self.overhead_s) < 0:
            raise ValueError("step times and overhead must be >= 0")

    def decode_step_s(self, batch_size: int) -> float:
        return self.decode_step_base_s + self.decode_step_per_seq_s * max(0, batch_size)


def predict_ttft_s(queued_prefill_tokens_ahead: int, running_decode_seqs: int, prompt_tokens: int,
                   rates: EngineRates, *, queued_decode_tokens_ahead: int = 0) -> float:
    """Predicted seconds from now to the first token of a request of `prompt_tokens` queued behind
    `queued_prefill_tokens_ahead` prompt tokens while `running_decode_seqs` sequences decode (module docstring)."""
    prefill_tokens = max(0, queued_prefill_tokens_ahead) + max(1, prompt_tokens)
    prefill_s = prefill_tokens / rates.prefill_tokens_per_s
    num_steps = math.ceil(prefill_tokens / rates.prefill_chunk_tokens)
    interleaved_s = num_steps * rates.decode_step_s(running_decode_seqs) if running_decode_seqs > 0 else 0.0
    return rates.overhead_s + prefill_s + interleaved_s + _decode_drain_s(
        queued_decode_tokens_ahead, running_decode_seqs, rates)


def slot_wait_budget_s(slo_s: float, prompt_tokens: int, rates: EngineRates, batch_size: int) -> float:
    """How long a request with TTFT target `slo_s` may wait for an engine slot and still meet it: the target less
    its own predicted TTFT once it runs beside `batch_size` others (>= 0). Past it the request can only be late,
    and serving it would spend engine time on an answer that misses its target."""
    return max(0.0, slo_s - predict_ttft_s(0, batch_size, prompt_tokens, rates))


def would_miss_slo(predicted_s: float, slo_s: float | None, margin: float = 1.0) -> bool:
    """True when a request predicted to take `predicted_s` to its first token should be refused now:
    it has a target and the prediction exceeds `margin` x the target (margin < 1 refuses earlier)."""
    return slo_s is not None and predicted_s > slo_s * margin


def retry_after_s(queued_prefill_tokens_ahead: int, rates: EngineRates, *, queued_decode_tokens_ahead: int = 0,
                  running_decode_seqs: int = 0, max_s: int = DEFAULT_MAX_RETRY_AFTER_S) -> int:
    """Whole seconds (1..max_s) until the work queued now has drained: the Retry-After of a refusal."""
    drain_s = queued_prefill_tokens_ahead / rates.prefill_tokens_per_s + _decode_drain_s(
        queued_decode_tokens_ahead, running_decode_seqs, rates)
    return int(min(max_s, max(1, math.ceil(drain_s))))


def _decode_drain_s(decode_tokens: int, running_decode_seqs: int, rates: EngineRates) -> float:
    if decode_tokens <= 0:
        return 0.0
    batch = max(1, running_decode_seqs)
    return decode_tokens * rates.decode_step_s(batch) / batch


class _WeightedLinearFit:
    """y = intercept + slope * x by least squares with exponentially fading sample weights."""

    def __init__(self, decay: float):
        self.decay = decay
        self.num_samples = 0
        self._w = self._x = self._y = self._xx = self._xy = 0.0

    def add(self, x: float, y: float) -> None:
        d = self.decay
        self._w = d * self._w + 1.0
        self._x = d * self._x + x
        self._y = d * self._y + y
        self._xx = d * self._xx + x * x
        self._xy = d * self._xy + x * y
        self.num_samples += 1

    def solve(self, prior_slope: float) -> tuple[float, float]:
        """(intercept, slope), both >= 0. With too little spread in x, the slope is the prior's."""
        mean_x, mean_y = self._x / self._w, self._y / self._w
        var_x = self._xx / self._w - mean_x * mean_x
        if var_x > 1e-9 * max(1.0, mean_x * mean_x):
            slope = (self._xy / self._w - mean_x * mean_y) / var_x
        else:
            slope = prior_slope
        slope = max(0.0, slope)
        intercept = max(0.0, mean_y - slope * mean_x)
        if intercept == 0.0 and mean_x > 0:
            slope = max(0.0, mean_y / mean_x)
        return intercept, slope


class RateEstimator:
    """`EngineRates` kept current from observed timings; `prior` until `min_samples` of a kind have come in.

    Prefill: (prompt_tokens, prefill_ms) fits prefill_s = c + prompt_tokens / prefill_tokens_per_s (c is the
    overhead). Decode: (tokens, decode_ms, batch) gives the mean step time decode_ms / tokens at that batch size
    and fits step_s = a + b * batch. `decay` is the weight left to a sample after each newer one (0.98: about
    the last 50 samples count).
    """

    def __init__(self, prior: EngineRates, decay: float = 0.98, min_samples: int = 8):
        if not 0 < decay < 1:
            raise ValueError("decay must be in (0, 1)")
        self.prior = prior
        self.min_samples = min_samples
        self._prefill = _WeightedLinearFit(decay)
        self._decode = _WeightedLinearFit(decay)
        self._decay = decay
        # Moving average of the measured engine queue wait (seconds), for reports.
        self.mean_queue_s: float | None = None

    def observe_prefill(self, prompt_tokens: int, queue_ms: float, prefill_ms: float) -> None:
        if prompt_tokens < 1 or prefill_ms < 0:
            return
        self._prefill.add(float(prompt_tokens), prefill_ms / 1000.0)
        queue_s = max(0.0, queue_ms) / 1000.0
        self.mean_queue_s = queue_s if self.mean_queue_s is None else (
            self._decay * self.mean_queue_s + (1 - self._decay) * queue_s)

    def observe_decode(self, num_tokens: int, decode_ms: float, batch_size: int) -> None:
        if num_tokens < 1 or decode_ms < 0 or batch_size < 1:
            return
        self._decode.add(float(batch_size), decode_ms / 1000.0 / num_tokens)

    def rates(self) -> EngineRates:
        prior = self.prior
        prefill_tokens_per_s, overhead_s = prior.prefill_tokens_per_s, prior.overhead_s
        if self._prefill.num_samples >= self.min_samples:
            overhead_s, seconds_per_token = self._prefill.solve(1.0 / prior.prefill_tokens_per_s)
            if seconds_per_token > 0:
                prefill_tokens_per_s = 1.0 / seconds_per_token
        base_s, per_seq_s = prior.decode_step_base_s, prior.decode_step_per_seq_s
        if self._decode.num_samples >= self.min_samples:
            base_s, per_seq_s = self._decode.solve(prior.decode_step_per_seq_s)
        return EngineRates(prefill_tokens_per_s, base_s, per_seq_s, prior.prefill_chunk_tokens, overhead_s)


class PredictionErrors:
    """Predicted vs measured TTFT of the last `max_samples` requests (for the benchmark and metrics)."""

    def __init__(self, max_samples: int = 10_000):
        self._pairs: deque[tuple[float, float]] = deque(maxlen=max_samples)

    def __len__(self) -> int:
        return len(self._pairs)

    def record(self, predicted_s: float, measured_s: float) -> None:
        self._pairs.append((predicted_s, measured_s))

    def summary(self) -> dict[str, float | int | None]:
        """Signed error = predicted - measured (s; > 0 is pessimistic); relative error = |error| / measured."""
        errors = [p - m for p, m in self._pairs]
        relative = [abs(p - m) / m for p, m in self._pairs if m > 0]
        absolute = [abs(e) for e in errors]
        return {
            "n": len(errors),
            "mean_error_s": sum(errors) / len(errors) if errors else None,
            "abs_error_p50_s": percentile_of(absolute, 50),
            "abs_error_p90_s": percentile_of(absolute, 90),
            "abs_error_p99_s": percentile_of(absolute, 99),
            "rel_error_p50": percentile_of(relative, 50),
            "rel_error_p90": percentile_of(relative, 90),
        }
