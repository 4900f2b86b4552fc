"""What overload and soak runs are judged on: outcomes, rejection speed, memory growth.

Pure functions over load-test records and memory samples, plus a small sampler thread that reads the
resident memory of a set of processes. Used by benchmarks/overload_soak.py and the short versions in
tests/integration/test_overload_soak.py.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from loadtest.records import RequestRecord
from serve_app.stats import percentile_of


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
    """Resident memory of one process over time. `name` is the first title seen for it: Ray retitles its
    workers (`ray::ServeReplica:app:Ingress`, then `...Ingress.handle_request_with_rejection` while a call
    runs), so the series is keyed by pid and the name is only a label."""

    name: str
    times_s: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    pid: int | None = None


def memory_growth(series: MemorySeries, warmup_fraction: float = 0.2) -> float | None:
    """Relative growth of resident memory after warm-up: median of the last fifth of the samples after warm-up
    over the median of their first fifth, minus one. None when there are too few samples."""
    if len(series.rss_mb) < 5:
        return None
    start = series.times_s[0] + warmup_fraction * (series.times_s[-1] - series.times_s[0])
    after = [rss for t, rss in zip(series.times_s, series.rss_mb) if t >= start]
    if len(after) < 3:
        return None
    tail = after[-max(1, len(after) // 5):]
    head = after[: max(1, len(after) // 5)]
    return percentile_of(tail, 50) / percentile_of(head, 50) - 1.0


class MemorySampler:
    """Samples the RSS of a set of processes every `interval_s` in a background thread.

    `processes` returns pid -> name. Series are keyed by pid (a process that changes its title stays one
    series), each labelled with the first name seen for that pid.
    """

    def __init__(self, processes: Callable[[], dict[int, str]], interval_s: float = 2.0):
        self._processes = processes
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.series: dict[int, MemorySeries] = {}

    def _sample(self) -> None:
        import psutil

        now = time.monotonic()
        for pid, name in self._processes().items():
            try:
                rss = psutil.Process(pid).memory_info().rss / 2**20
            except psutil.Error:
                continue
            series = self.series.setdefault(pid, MemorySeries(name, pid=pid))
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

    def growth(self, warmup_fraction: float = 0.2) -> dict[int, dict]:
        """pid -> {name, first_mb, last_mb, growth}."""
        return {pid: series_growth(s, warmup_fraction) for pid, s in self.series.items()}

    def raw(self) -> dict[int, dict]:
        """pid -> {name, times_s (from the first sample of all), rss_mb}: what `series_from_raw` reads back."""
        t0 = min((s.times_s[0] for s in self.series.values() if s.times_s), default=0.0)
        return {pid: {"name": s.name, "times_s": [t - t0 for t in s.times_s], "rss_mb": list(s.rss_mb)}
                for pid, s in self.series.items()}


def series_growth(series: MemorySeries, warmup_fraction: float = 0.2) -> dict:
    return {"name": series.name, "first_mb": series.rss_mb[0], "last_mb": series.rss_mb[-1],
            "growth": memory_growth(series, warmup_fraction)}


def series_from_raw(raw: dict) -> dict[int, MemorySeries]:
    """The inverse of `MemorySampler.raw` (JSON turns the pid keys into strings)."""
    return {int(pid): MemorySeries(s["name"], list(s["times_s"]), list(s["rss_mb"]), pid=int(pid))
            for pid, s in raw.items()}


def process_tree(root_pid: int) -> dict[int, str]:
    """pid -> name for a process and all its descendants."""
    import psutil

    try:
        root = psutil.Process(root_pid)
        processes = [root] + root.children(recursive=True)
    except psutil.Error:
        return {}
    named = {}
    for process in processes:
        try:
            named[process.pid] = process.name()
        except psutil.Error:
            continue
    return named
