"""Seeded, pure generators of the replay traces, and the command that writes the committed ones.

    .venv/bin/python -m loadtest.traces.generate            # rewrites loadtest/traces/*.jsonl
    .venv/bin/python -m loadtest.traces.generate --out DIR --scale-rate 2

Arrivals come from a rate function lambda(t) (requests/s) by time rescaling: unit-mean gaps (exponential for
Poisson, Gamma(k, 1/k) for burstier or smoother arrivals, CV = 1/sqrt(k)) are accumulated and mapped through
the inverse of Lambda(t) = integral of lambda, so a piecewise or smooth rate is followed exactly (a stretch at
rate 0 gets no arrivals). Token counts are log-normal around a median, clipped, the same for every trace kind.
"""

from __future__ import annotations

import argparse
import bisect
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from loadtest.traces.format import Trace, TraceRequest, write_trace

TRACES_DIR = Path(__file__).parent
REGENERATE_COMMAND = ".venv/bin/python -m loadtest.traces.generate"
_GRID_S = 0.05


@dataclass(frozen=True)
class TokenShape:
    """Log-normal token counts: median, sigma of the log, clipped to [min, max]."""

    prompt_median: int = 256
    output_median: int = 64
    sigma: float = 0.5
    prompt_max: int = 1024
    output_max: int = 256


def arrivals_from_rate(
    rate_rps: Callable[[float], float], duration_s: float, rng: random.Random, gamma_shape: float = 1.0
) -> list[float]:
    """Arrival times in [0, duration_s) following `rate_rps`; Gamma(k, 1/k) unit gaps (k = 1: Poisson)."""
    if gamma_shape <= 0:
        raise ValueError("gamma_shape must be positive")
    num_points = int(math.ceil(duration_s / _GRID_S)) + 1
    grid_s = [min(i * _GRID_S, duration_s) for i in range(num_points)]
    cumulative = [0.0]
    for a, b in zip(grid_s, grid_s[1:]):
        # The rate at each grid cell's middle: a step in the rate stays a step (no arrivals before it).
        cumulative.append(cumulative[-1] + max(0.0, rate_rps((a + b) / 2)) * (b - a))
    total = cumulative[-1]
    arrivals: list[float] = []
    # Start at a random phase of the first gap so a trace does not always open with an arrival at 0.
    u = rng.gammavariate(gamma_shape, 1.0 / gamma_shape) * rng.random()
    while u < total:
        i = bisect.bisect_left(cumulative, u)
        lo, hi = cumulative[i - 1], cumulative[i]
        frac = 0.0 if hi == lo else (u - lo) / (hi - lo)
        arrivals.append(grid_s[i - 1] + frac * (grid_s[i] - grid_s[i - 1]))
        u += rng.gammavariate(gamma_shape, 1.0 / gamma_shape)
    return arrivals


def _tokens(rng: random.Random, median: int, sigma: float, upper: int) -> int:
    return max(1, min(upper, int(round(median * math.exp(rng.gauss(0.0, sigma))))))


def _build(name: str, duration_s: float, times: list[float], rng: random.Random, shape: TokenShape,
           meta: dict) -> Trace:
    requests = tuple(
        TraceRequest(
            t_s=round(t, 4),
            prompt_tokens=_tokens(rng, shape.prompt_median, shape.sigma, shape.prompt_max),
            output_tokens=_tokens(rng, shape.output_median, shape.sigma, shape.output_max),
        )
        for t in times
    )
    return Trace(name, duration_s, requests, {**meta, "command": REGENERATE_COMMAND})


def step_trace(base_rps: float, *, factor: float = 4.0, before_s: float = 45.0, high_s: float = 210.0,
               after_s: float = 165.0, seed: int = 0, shape: TokenShape = TokenShape()) -> Trace:
    """Poisson arrivals at `base_rps`, then `factor` x for `high_s`, then back to `base_rps`."""
    duration_s = before_s + high_s + after_s
    rate = lambda t: base_rps * (factor if before_s <= t < before_s + high_s else 1.0)  # noqa: E731
    rng = random.Random(seed)
    meta = {"description": f"{factor:g}x step up and back: {base_rps:g} req/s for {before_s:g} s, "
                           f"{base_rps * factor:g} req/s for {high_s:g} s, {base_rps:g} req/s for {after_s:g} s",
            "generator": "step_trace", "params": {"base_rps": base_rps, "factor": factor, "before_s": before_s,
                                                  "high_s": high_s, "after_s": after_s}, "seed": seed}
    return _build("step_4x", duration_s, arrivals_from_rate(rate, duration_s, rng), rng, shape, meta)


def bursty_trace(mean_rps: float, *, cv: float = 3.0, duration_s: float = 240.0, seed: int = 0,
                 shape: TokenShape = TokenShape()) -> Trace:
    """Gamma inter-arrival gaps with coefficient of variation `cv` (shape k = 1 / cv^2) at a constant mean rate."""
    rng = random.Random(seed)
    k = 1.0 / (cv * cv)
    meta = {"description": f"bursty: gamma inter-arrivals, mean {mean_rps:g} req/s, CV {cv:g} (shape {k:.3f})",
            "generator": "bursty_trace", "params": {"mean_rps": mean_rps, "cv": cv}, "seed": seed}
    times = arrivals_from_rate(lambda t: mean_rps, duration_s, rng, gamma_shape=k)
    return _build("bursty_cv3", duration_s, times, rng, shape, meta)


def diurnal_trace(low_rps: float, high_rps: float, *, period_s: float = 300.0, seed: int = 0,
                  shape: TokenShape = TokenShape()) -> Trace:
    """One compressed day: the rate rises from `low_rps` to `high_rps` and back as (1 - cos) / 2, Poisson."""
    rng = random.Random(seed)
    rate = lambda t: low_rps + (high_rps - low_rps) * (1 - math.cos(2 * math.pi * t / period_s)) / 2  # noqa: E731
    meta = {"description": f"diurnal ramp: {low_rps:g} -> {high_rps:g} -> {low_rps:g} req/s over {period_s:g} s",
            "generator": "diurnal_trace", "params": {"low_rps": low_rps, "high_rps": high_rps,
                                                     "period_s": period_s}, "seed": seed}
    return _build("diurnal", period_s, arrivals_from_rate(rate, period_s, rng), rng, shape, meta)


def scale_from_zero_trace(burst_rps: float, *, idle_s: float = 20.0, burst_s: float = 100.0,
                          tail_s: float = 40.0, seed: int = 0, shape: TokenShape = TokenShape()) -> Trace:
    """No request for `idle_s` (the deployment can sit at zero replicas), then Poisson at `burst_rps`, then idle."""
    rng = random.Random(seed)
    duration_s = idle_s + burst_s + tail_s
    rate = lambda t: burst_rps if idle_s <= t < idle_s + burst_s else 0.0  # noqa: E731
    meta = {"description": f"scale from zero: idle {idle_s:g} s, {burst_rps:g} req/s for {burst_s:g} s, "
                           f"idle {tail_s:g} s",
            "generator": "scale_from_zero_trace", "params": {"burst_rps": burst_rps, "idle_s": idle_s,
                                                             "burst_s": burst_s, "tail_s": tail_s}, "seed": seed}
    return _build("scale_from_zero", duration_s, arrivals_from_rate(rate, duration_s, rng), rng, shape, meta)


def short_step_trace(base_rps: float, *, seed: int = 0) -> Trace:
    """The test suite's 90-second replay: 20 s at base, 40 s at 4x, 30 s at base, short outputs."""
    trace = step_trace(base_rps, before_s=20.0, high_s=40.0, after_s=30.0, seed=seed,
                       shape=TokenShape(prompt_median=64, output_median=32, prompt_max=256, output_max=64))
    return Trace("step_short", trace.duration_s, trace.requests, {**trace.meta, "generator": "short_step_trace"})


def committed_traces(scale_rate: float = 1.0) -> list[Trace]:
    """The traces under loadtest/traces/ (rates tuned to the `gpu-scaled` replay profile; see README.md)."""
    r = scale_rate
    return [
        step_trace(1.5 * r, seed=1),
        bursty_trace(3.0 * r, seed=2),
        diurnal_trace(1.0 * r, 5.0 * r, seed=3),
        scale_from_zero_trace(3.0 * r, seed=4),
        short_step_trace(1.0 * r, seed=5),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=TRACES_DIR)
    parser.add_argument("--scale-rate", type=float, default=1.0, help="multiply every rate")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for trace in committed_traces(args.scale_rate):
        write_trace(trace, args.out / f"{trace.name}.jsonl")
        print(f"{trace.name}: {len(trace.requests)} requests over {trace.duration_s:g} s -> {args.out}/{trace.name}.jsonl")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
