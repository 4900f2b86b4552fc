"""Engine metrics of one model server replica, through Ray Serve's metrics API.

Each replica reports its own engine (running and waiting requests, health, prefix-cache and speculation totals);
Ray tags every series with the application, deployment and replica, and exports them on each node's metrics port
(`ray start --metrics-export-port`, `serve-app serve --ray-metrics-port`) with a `ray_` prefix, e.g.
`ray_serve_app_replica_engine_running_requests{deployment="ModelServer",replica="...",model="..."}`. So a
Prometheus that scrapes Ray's nodes sees every replica, however many there are, rather than whichever one an
ingress asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Callable

from serve_app.api.protocol import EngineStats
from serve_app.platform.ray_env import replica_context

logger = logging.getLogger("ray.serve")

_GAUGES = {
    "num_running": ("serve_app_replica_engine_running_requests", "Requests running in this replica's engine"),
    "num_waiting": ("serve_app_replica_engine_waiting_requests", "Requests queued in this replica's engine"),
    "is_healthy": ("serve_app_replica_engine_healthy", "1 while this replica's engine is healthy"),
}
_COUNTERS = {
    "prefix_cache_queries": ("serve_app_replica_prefix_cache_queries", "Prompt tokens looked up in the prefix cache"),
    "prefix_cache_hits": ("serve_app_replica_prefix_cache_hits", "Prompt tokens found in the prefix cache"),
    "spec_draft_tokens": ("serve_app_replica_spec_decode_draft_tokens", "Draft tokens proposed"),
    "spec_accepted_tokens": ("serve_app_replica_spec_decode_accepted_tokens", "Draft tokens accepted"),
}


class ReplicaEngineMetrics:
    """Gauges set and counters advanced from `engine_stats()` totals, every `interval_s` while the replica runs."""

    def __init__(self, model: str):
        from ray.serve import metrics

        self._gauges = {key: metrics.Gauge(name, description=text, tag_keys=("model",))
                        for key, (name, text) in _GAUGES.items()}
        self._counters = {key: metrics.Counter(name, description=text, tag_keys=("model",))
                          for key, (name, text) in _COUNTERS.items()}
        for metric in (*self._gauges.values(), *self._counters.values()):
            metric.set_default_tags({"model": model})
        self._reported = {key: 0.0 for key in _COUNTERS}

    def update(self, stats: EngineStats) -> None:
        for key, gauge in self._gauges.items():
            gauge.set(float(getattr(stats, key)))
        for key, counter in self._counters.items():
            total = float(getattr(stats, key))
            if total > self._reported[key]:
                counter.inc(total - self._reported[key])
                self._reported[key] = total

    @classmethod
    def start(cls, model: str, read_stats: Callable[[], EngineStats], interval_s: float) -> asyncio.Task | None:
        """Report in the background (None outside a Serve replica, where there is nothing to tag)."""
        if replica_context() is None:
            return None
        reporter = cls(model)

        async def loop() -> None:
            while True:
                with contextlib.suppress(Exception):
                    reporter.update(read_stats())
                await asyncio.sleep(interval_s)

        return asyncio.get_running_loop().create_task(loop())
