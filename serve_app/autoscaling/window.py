"""Windowed p99 TTFT / TPOT inside each model replica, in bounded memory (what `record_autoscaling_stats` returns)."""

from __future__ import annotations

import math
import threading
from collections import deque

# ----------------------------------------------------------------------------------------------------------
# Windowed percentiles inside a replica
# ----------------------------------------------------------------------------------------------------------


class WindowedPercentile:
    """Percentiles of values seen in the last `window_s` seconds, in bounded memory.

    Values land in log-spaced buckets (each `growth` times wider than the last, so a percentile is within
    about (growth - 1) / 2 of the true value) kept per time slice; a slice older than the window is dropped
    whole. Memory is at most `num_slices` x the number of distinct buckets, whatever the sample rate.
    """

    def __init__(self, window_s: float, num_slices: int = 10, min_value: float = 0.01, growth: float = 1.05):
        if window_s <= 0 or num_slices < 1:
            raise ValueError("window_s must be > 0 and num_slices >= 1")
        self.window_s = window_s
        self._slice_s = window_s / num_slices
        self._num_slices = num_slices
        self._min_value = min_value
        self._log_growth = math.log(growth)
        self._growth = growth
        # (slice index, {bucket index: count}); oldest first.
        self._slices: deque[tuple[int, dict[int, int]]] = deque()

    def record(self, value: float, now_s: float) -> None:
        slice_index = int(now_s // self._slice_s)
        if not self._slices or slice_index > self._slices[-1][0]:
            self._slices.append((slice_index, {}))
            self._evict(slice_index)
        counts = self._slices[-1][1]
        bucket = self._bucket(value)
        counts[bucket] = counts.get(bucket, 0) + 1

    def count(self, now_s: float) -> int:
        self._evict(int(now_s // self._slice_s))
        return sum(sum(counts.values()) for _, counts in self._slices)

    def percentile(self, q: float, now_s: float) -> float | None:
        """The q-quantile (0 < q <= 1) of the window, or None when it is empty."""
        self._evict(int(now_s // self._slice_s))
        merged: dict[int, int] = {}
        for _, counts in self._slices:
            for bucket, n in counts.items():
                merged[bucket] = merged.get(bucket, 0) + n
        total = sum(merged.values())
        if total == 0:
            return None
        rank = max(1, math.ceil(q * total))
        seen = 0
        for bucket in sorted(merged):
            seen += merged[bucket]
            if seen >= rank:
                return self._value(bucket)
        return self._value(max(merged))

    def _evict(self, now_slice: int) -> None:
        while self._slices and self._slices[0][0] <= now_slice - self._num_slices:
            self._slices.popleft()

    def _bucket(self, value: float) -> int:
        if value <= self._min_value:
            return 0
        return 1 + int(math.log(value / self._min_value) / self._log_growth)

    def _value(self, bucket: int) -> float:
        if bucket == 0:
            return self._min_value
        # Geometric middle of the bucket [min * g^(b-1), min * g^b).
        return self._min_value * self._growth ** (bucket - 0.5)


class ReplicaLatencyStats:
    """What one model replica reports for autoscaling: windowed p99 TTFT / TPOT and its engine load.

    TTFT is one sample per request; TPOT may be one per request (its mean time per output token) or one per
    gap. Thread-safe: requests record on the replica's event loop while Serve may call `snapshot` elsewhere.
    """

    def __init__(self, window_s: float = 30.0, num_slices: int = 10):
        self._ttft_ms = WindowedPercentile(window_s, num_slices)
        self._tpot_ms = WindowedPercentile(window_s, num_slices)
        self._num_running = 0.0
        self._num_waiting = 0.0
        self._lock = threading.Lock()

    def record_ttft_ms(self, value: float, now_s: float) -> None:
        with self._lock:
            self._ttft_ms.record(value, now_s)

    def record_tpot_ms(self, value: float, now_s: float) -> None:
        with self._lock:
            self._tpot_ms.record(value, now_s)

    def set_load(self, num_running: float, num_waiting: float) -> None:
        with self._lock:
            self._num_running = float(num_running)
            self._num_waiting = float(num_waiting)

    def snapshot(self, now_s: float) -> dict[str, float]:
        """Plain floats for `record_autoscaling_stats`; a p99 is 0.0 when its window holds no samples."""
        with self._lock:
            num_ttft = self._ttft_ms.count(now_s)
            num_tpot = self._tpot_ms.count(now_s)
            return {
                "ttft_p99_ms": float(self._ttft_ms.percentile(0.99, now_s) or 0.0),
                "tpot_p99_ms": float(self._tpot_ms.percentile(0.99, now_s) or 0.0),
                "num_samples": float(num_ttft),
                "num_ttft_samples": float(num_ttft),
                "num_tpot_samples": float(num_tpot),
                "num_running": self._num_running,
                "num_waiting": self._num_waiting,
                # The replica's own queue; callers add load queued or refused elsewhere to `num_waiting` only.
                "num_local_waiting": self._num_waiting,
            }
