"""The ingress's Prometheus metrics mirrored into Ray Serve's metrics API, so that with many ingress replicas a
Prometheus scraping Ray's nodes sees every replica's counts, tagged by application, deployment and replica,
rather than whichever replica happened to answer a load-balanced `/metrics`.

Every `interval_s`, each counter's and histogram's samples (totals; buckets with their `le`; counts; sums) are
added to Ray counters as the delta since the last mirror, and gauges are set. Ray names get an `ingress` infix
and Ray's exporter adds `ray_` and `_total`: `serve_app_requests_total{model,route,status}` becomes
`ray_serve_app_ingress_requests_total{model,route,status,replica,...}`, a histogram's
`serve_app_ttft_seconds_bucket{model,le}` becomes `ray_serve_app_ingress_ttft_seconds_bucket_total{model,le,...}`
(`histogram_quantile` over `sum by (le)` of its rate works as on any histogram). Engine gauges are left out:
each model server replica reports its own (serve_app/server/replica_metrics.py).

`RegistryMirror.mirror()` is synchronous and does no I/O itself; the Ray metric objects are made by the
factories given (Ray's in a replica, fakes in unit tests).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

from prometheus_client import CollectorRegistry

logger = logging.getLogger("ray.serve")
SKIPPED_PREFIXES = ("serve_app_engine_", "serve_app_spec_decode_")
MetricFactory = Callable[[str, str, tuple[str, ...]], Any]


def ray_name(sample_name: str) -> str:
    """`serve_app_x_total` -> `serve_app_ingress_x`; `serve_app_y_bucket` -> `serve_app_ingress_y_bucket`."""
    name = sample_name.removesuffix("_total")
    return "serve_app_ingress_" + name.removeprefix("serve_app_")


class RegistryMirror:
    def __init__(self, registry: CollectorRegistry, make_counter: MetricFactory, make_gauge: MetricFactory):
        self._registry = registry
        self._make_counter, self._make_gauge = make_counter, make_gauge
        self._metrics: dict[str, Any] = {}
        self._reported: dict[tuple[str, tuple], float] = {}

    def _metric(self, kind: str, name: str, description: str, tag_keys: tuple[str, ...]) -> Any:
        metric = self._metrics.get(name)
        if metric is None:
            factory = self._make_counter if kind == "counter" else self._make_gauge
            metric = self._metrics[name] = factory(name, description, tag_keys)
        return metric

    def mirror(self) -> None:
        for family in self._registry.collect():
            if family.name.startswith(SKIPPED_PREFIXES) or family.type not in ("counter", "histogram", "gauge"):
                continue
            for sample in family.samples:
                if sample.name.endswith("_created"):
                    continue
                tag_keys = tuple(sorted(sample.labels))
                tags = {key: str(sample.labels[key]) for key in tag_keys}
                if family.type == "gauge":
                    self._metric("gauge", ray_name(sample.name), family.documentation, tag_keys).set(sample.value,
                                                                                                  tags=tags)
                    continue
                key = (sample.name, tuple(tags.items()))
                delta = sample.value - self._reported.get(key, 0.0)
                if delta > 0:
                    self._metric("counter", ray_name(sample.name), family.documentation, tag_keys).inc(delta,
                                                                                                    tags=tags)
                if delta != 0:
                    self._reported[key] = sample.value  # a reset (delta < 0) starts counting from its new value

    @classmethod
    def start(cls, registry: CollectorRegistry, before: Callable[[], None] | None = None,
              interval_s: float = 5.0) -> asyncio.Task | None:
        """Mirror in the background of a Serve replica, calling `before` first each time (to set gauges that are
        read on demand); None outside a replica (nothing to tag)."""
        from serve_app.platform.ray_env import replica_context

        if replica_context() is None:
            return None
        from ray.serve import metrics

        mirror = cls(registry,
                     lambda name, text, keys: metrics.Counter(name, description=text, tag_keys=keys),
                     lambda name, text, keys: metrics.Gauge(name, description=text, tag_keys=keys))

        async def loop() -> None:
            warned = False
            while True:
                await asyncio.sleep(interval_s)
                try:
                    if before is not None:
                        before()
                    # Off the event loop: a registry of many models' histograms is thousands of samples.
                    await asyncio.to_thread(mirror.mirror)
                except Exception as exc:  # noqa: BLE001 - metrics never take the replica down; say so once
                    if not warned:
                        logger.warning("Mirroring ingress metrics into Ray failed: %s: %s", type(exc).__name__, exc)
                        warned = True

        return asyncio.get_running_loop().create_task(loop())
