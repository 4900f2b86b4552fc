"""Percentiles with exact confidence intervals (pure, no I/O, standard library only).

The project's one statistics module: serving (the TTFT predictor's error report), compress's evaluation, the load
tester and the benchmarks all import it from here; nothing in it may import beyond the standard library.

Point estimate: linear interpolation between order statistics (numpy's
default, "type 7"), so numbers line up with `vllm bench serve`.

Interval: the distribution-free order-statistic interval. If X_(1..n) are the
sorted samples and B ~ Binomial(n, q) counts samples below the true quantile
x_q, then P(X_(l) <= x_q <= X_(u)) = P(l <= B <= u - 1). We take the widest
l and narrowest u whose tail probabilities are each <= alpha/2, so coverage is
at least the requested confidence for any continuous distribution. When the
samples are too few for a bound (e.g. the upper bound of p99.9 from 100
samples) that side is None: the data cannot bound it, and we say so instead of
extrapolating. Percentiles are never averaged: several runs or client
processes are merged as raw samples first.
"""

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

DEFAULT_PERCENTILES = (50.0, 90.0, 95.0, 99.0, 99.9)

# Above this sample count the binomial CDF uses its normal approximation
# (error far below one order statistic at this size).
_EXACT_BINOMIAL_MAX_N = 200_000


def percentile(sorted_values: Sequence[float], q_percent: float) -> float:
    """Linear-interpolated percentile of already sorted values."""
    n = len(sorted_values)
    if n == 0:
        raise ValueError("percentile of an empty sample")
    position = (n - 1) * q_percent / 100.0
    low = math.floor(position)
    high = min(low + 1, n - 1)
    fraction = position - low
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * fraction


def percentile_of(values: Sequence[float], q_percent: float) -> float | None:
    """Linear-interpolated percentile of unsorted values; None when there are none (the project's one percentile)."""
    return percentile(sorted(values), q_percent) if len(values) else None


def _binomial_cdf(n: int, p: float) -> list[float]:
    """CDF[k] = P(B <= k) for B ~ Binomial(n, p), k = 0..n."""
    if n > _EXACT_BINOMIAL_MAX_N:
        mean = n * p
        sd = math.sqrt(n * p * (1 - p))
        return [0.5 * (1 + math.erf((k + 0.5 - mean) / (sd * math.sqrt(2)))) for k in range(n + 1)]
    log_p, log_q = math.log(p), math.log1p(-p)
    log_n_fact = math.lgamma(n + 1)
    log_pmf = [
        log_n_fact - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * log_p + (n - k) * log_q
        for k in range(n + 1)
    ]
    peak = max(log_pmf)
    weights = [math.exp(v - peak) for v in log_pmf]
    total = math.fsum(weights)
    cdf, running = [], 0.0
    for w in weights:
        running += w
        cdf.append(min(running / total, 1.0))
    return cdf


def order_statistic_ci(n: int, q_percent: float, confidence: float = 0.95) -> tuple[int | None, int | None]:
    """1-based ranks (l, u) with P(X_(l) <= x_q <= X_(u)) >= confidence.

    A side is None when no rank in 1..n reaches the tail probability.
    """
    if n <= 0:
        return None, None
    p = q_percent / 100.0
    if not 0.0 < p < 1.0:
        raise ValueError("q_percent must be strictly between 0 and 100")
    alpha_half = (1.0 - confidence) / 2.0
    cdf = _binomial_cdf(n, p)
    # Lower rank: largest l with P(B <= l - 1) <= alpha/2.
    lower_rank = None
    for k in range(n):
        if cdf[k] <= alpha_half:
            lower_rank = k + 1
        else:
            break
    # Upper rank: smallest u with P(B <= u - 1) >= 1 - alpha/2.
    upper_rank = None
    for k in range(n):
        if cdf[k] >= 1.0 - alpha_half:
            upper_rank = k + 1
            break
    return lower_rank, upper_rank


@dataclass(frozen=True)
class PercentileEstimate:
    """A percentile with its confidence interval (None = unbounded side)."""

    value: float
    ci_low: float | None
    ci_high: float | None

    def to_dict(self) -> dict:
        return {"value": self.value, "ci_low": self.ci_low, "ci_high": self.ci_high}


def estimate_percentile(sorted_values: Sequence[float], q_percent: float, confidence: float = 0.95) -> PercentileEstimate:
    lower_rank, upper_rank = order_statistic_ci(len(sorted_values), q_percent, confidence)
    return PercentileEstimate(
        value=percentile(sorted_values, q_percent),
        ci_low=sorted_values[lower_rank - 1] if lower_rank else None,
        ci_high=sorted_values[upper_rank - 1] if upper_rank else None,
    )


def percentile_key(q_percent: float) -> str:
    """50 -> "p50", 99.9 -> "p99_9"."""
    text = f"{q_percent:g}".replace(".", "_")
    return f"p{text}"


def summarize(
    values: Iterable[float],
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    confidence: float = 0.95,
) -> dict:
    """Count, mean, min, max and percentiles (each with CI) of raw samples."""
    sorted_values = sorted(values)
    n = len(sorted_values)
    if n == 0:
        return {"n": 0}
    result: dict = {
        "n": n,
        "mean": math.fsum(sorted_values) / n,
        "min": sorted_values[0],
        "max": sorted_values[-1],
        "confidence": confidence,
    }
    for q in percentiles:
        result[percentile_key(q)] = estimate_percentile(sorted_values, q, confidence).to_dict()
    return result


def student_t_cdf(t: float, dof: int) -> float:
    """P(T <= t) for Student's t with an integer number of degrees of freedom (closed-form series, exact)."""
    if dof < 1:
        raise ValueError("degrees of freedom must be >= 1")
    theta = math.atan2(abs(t), math.sqrt(dof))
    cos2, sin_theta = math.cos(theta) ** 2, math.sin(theta)
    if dof % 2 == 1:  # P(|T| < |t|) = 2/pi (theta + sin cos (1 + 2/3 cos^2 + 2*4/(3*5) cos^4 + ...))
        term, series = 1.0, 1.0 if dof > 1 else 0.0
        for k in range(1, (dof - 1) // 2):
            term *= cos2 * (2 * k) / (2 * k + 1)
            series += term
        inside = 2 / math.pi * (theta + sin_theta * math.cos(theta) * series)
    else:  # P(|T| < |t|) = sin (1 + 1/2 cos^2 + 1*3/(2*4) cos^4 + ...)
        term, series = 1.0, 1.0
        for k in range(1, dof // 2):
            term *= cos2 * (2 * k - 1) / (2 * k)
            series += term
        inside = sin_theta * series
    return 0.5 + math.copysign(inside / 2, t)


def student_t_quantile(probability: float, dof: int) -> float:
    """The t with P(T <= t) = probability (bisection on `student_t_cdf`, to 1e-9)."""
    if not 0.0 < probability < 1.0:
        raise ValueError("probability must be strictly between 0 and 1")
    low, high = -1e6, 1e6
    for _ in range(200):
        middle = (low + high) / 2
        if student_t_cdf(middle, dof) < probability:
            low = middle
        else:
            high = middle
        if high - low < 1e-9:
            break
    return (low + high) / 2


@dataclass(frozen=True)
class PairedEstimate:
    """A ratio (B / A) or a difference (B - A) over paired repeats, with its t confidence interval.

    `ci_low`/`ci_high` are None with fewer than two pairs (one pair cannot bound its own noise)."""

    value: float
    ci_low: float | None
    ci_high: float | None
    num_pairs: int
    confidence: float

    def to_dict(self) -> dict:
        return {"value": self.value, "ci_low": self.ci_low, "ci_high": self.ci_high, "num_pairs": self.num_pairs,
                "confidence": self.confidence}


def _t_interval(values: Sequence[float], confidence: float) -> tuple[float, float | None, float | None]:
    n = len(values)
    mean = math.fsum(values) / n
    if n < 2:
        return mean, None, None
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = student_t_quantile(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def paired_ratio_ci(baseline: Sequence[float], candidate: Sequence[float], confidence: float = 0.95) -> PairedEstimate:
    """Geometric mean of candidate[i] / baseline[i] over interleaved repeats, with a t interval on the log ratios.

    Pair i is repeat i of A and of B measured next to each other (A, B, A, B, ...), so slow drift of the machine
    cancels within a pair. Values must be positive (latencies, throughputs)."""
    if len(baseline) != len(candidate) or not baseline:
        raise ValueError("need the same, non-zero number of baseline and candidate repeats")
    if min(baseline) <= 0 or min(candidate) <= 0:
        raise ValueError("ratios need positive values")
    logs = [math.log(b / a) for a, b in zip(baseline, candidate)]
    mean, low, high = _t_interval(logs, confidence)
    return PairedEstimate(math.exp(mean), None if low is None else math.exp(low),
                          None if high is None else math.exp(high), len(logs), confidence)


def paired_difference_ci(baseline: Sequence[float], candidate: Sequence[float],
                         confidence: float = 0.95) -> PairedEstimate:
    """Mean of candidate[i] - baseline[i] over interleaved repeats, with a t interval (same units as the values)."""
    if len(baseline) != len(candidate) or not baseline:
        raise ValueError("need the same, non-zero number of baseline and candidate repeats")
    mean, low, high = _t_interval([b - a for a, b in zip(baseline, candidate)], confidence)
    return PairedEstimate(mean, low, high, len(baseline), confidence)


MIN_SAMPLES_FOR_P99 = 200


def tail_label(num_samples: int) -> str:
    """What a tail figure over `num_samples` is: "p99" from 200 samples on, else honestly "max of N"."""
    return "p99" if num_samples >= MIN_SAMPLES_FOR_P99 else f"max of {num_samples}"


def tail_value(values: Sequence[float]) -> float | None:
    """p99 over at least 200 samples, else the maximum (what `tail_label` names); None when there are none."""
    if not values:
        return None
    return percentile_of(values, 99.0) if len(values) >= MIN_SAMPLES_FOR_P99 else max(values)
