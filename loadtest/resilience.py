"""What overload and soak runs are judged on: outcomes, rejection speed, memory growth.

Pure functions over load-test records and memory samples, plus a small sampler thread that reads the
resident memory of a set of processes. Used by benchmarks/overload_soak.py and the short versions in
tests/integration/test_overload_soak.py.
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from loadtest.records import RequestRecord


def outcome(record: RequestRecord) -> str:
    """'complete', 'rejected' (429), 'error' (an explicit error status or error event), 'hung' or 'lost'.

    'hung': no answer within the client's timeout. 'lost': the response ended (or the connection
    dropped) with neither a finish reason nor an error the client could see.
    """
    if record.ok and record.finish_reason:
        return "complete"
    if record.status_code == 429:
        return "rejected"
    if record.error_kind == "timeout":
        return "hung"
    if record.error_kind == "stream_error" or (record.error_kind or "").startswith("http_"):
        return "error"
    return "lost"


def outcome_counts(records: list[RequestRecord]) -> dict[str, int]:
    counts = {"complete": 0, "rejected": 0, "error": 0, "hung": 0, "lost": 0}
    for record in records:
        counts[outcome(record)] += 1
    return counts


def rejection_latencies_ms(records: list[RequestRecord]) -> list[float]:
    """Send-to-answer time of each 429."""
    return [(r.done_s - r.send_s) * 1000.0 for r in records if r.status_code == 429 and r.done_s is not None]


def admitted_ttfts_ms(records: list[RequestRecord]) -> list[float]:
    return [(r.first_text_s - r.send_s) * 1000.0 for r in records if outcome(r) == "complete" and r.first_text_s]


@dataclass
class MemorySeries:
    name: str
    times_s: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)


def memory_growth(series: MemorySeries, warmup_fraction: float = 0.2) -> float | None:
    """Relative growth of resident memory after warm-up: median of the last fifth over the first sample
    after warm-up, minus one. None when there are too few samples."""
    if len(series.rss_mb) < 5:
        return None
    start = series.times_s[0] + warmup_fraction * (series.times_s[-1] - series.times_s[0])
    after = [rss for t, rss in zip(series.times_s, series.rss_mb) if t >= start]
    if len(after) < 3:
        return None
    tail = after[-max(1, len(after) // 5):]
    head = after[: max(1, len(after) // 5)]
    return statistics.median(tail) / statistics.median(head) - 1.0


class MemorySampler:
    """Samples the RSS of named processes every `interval_s` in a background thread."""

    def __init__(self, processes: Callable[[], dict[str, int]], interval_s: float = 2.0):
        self._processes = processes
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.series: dict[str, MemorySeries] = {}

    def _sample(self) -> None:
        import psutil

        now = time.monotonic()
        for name, pid in self._processes().items():
            try:
                rss = psutil.Process(pid).memory_info().rss / 2**20
            except psutil.Error:
                continue
            series = self.series.setdefault(name, MemorySeries(name))
            series.times_s.append(now)
            series.rss_mb.append(rss)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self._interval_s)

    def __enter__(self) -> "MemorySampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def growth(self, warmup_fraction: float = 0.2) -> dict[str, dict[str, float | None]]:
        return {
            name: {"first_mb": s.rss_mb[0], "last_mb": s.rss_mb[-1], "growth": memory_growth(s, warmup_fraction)}
            for name, s in self.series.items()
        }


def process_tree(root_pid: int) -> dict[str, int]:
    """Name -> pid for a process and all its descendants (names made unique with the pid)."""
    import psutil

    try:
        root = psutil.Process(root_pid)
        processes = [root] + root.children(recursive=True)
    except psutil.Error:
        return {}
    named = {}
    for process in processes:
        try:
            named[f"{process.name()}[{process.pid}]"] = process.pid
        except psutil.Error:
            continue
    return named
